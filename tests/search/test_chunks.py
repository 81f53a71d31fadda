"""Code chunks fit the local model's window, measured with its own tokenizer, and keep exact line ranges."""

from __future__ import annotations

from pathlib import Path

from bot.search.chunks import chunk_text
from bot.search.embeddings import CHARS_PER_TOKEN, LocalEmbeddings, embedder_for
from bot.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
REAL_FILES = ("bot/search/index.py", "bot/runs/engine.py", "README.md")


def test_every_chunk_of_real_files_fits_the_local_models_window_and_keeps_its_lines() -> None:
    embedder = LocalEmbeddings()
    model = embedder._load()
    for path in REAL_FILES:
        lines = (ROOT / path).read_text().splitlines()
        found = list(chunk_text(path, "\n".join(lines), embedder))
        assert len(found) > 1
        for chunk in found:
            tokens = len(model.tokenizer(chunk.text)["input_ids"])  # with [CLS] and [SEP], as the model reads it
            assert tokens <= model.max_seq_length == 256, (chunk.id, tokens)
            assert chunk.text == "\n".join([path, *lines[chunk.start - 1 : chunk.end]])
        covered = [n for chunk in found for n in range(chunk.start, chunk.end + 1)]
        assert covered == sorted(set(covered))  # no line twice
        blank = {n for n, line in enumerate(lines, 1) if not line.strip()}
        assert set(range(1, len(lines) + 1)) - set(covered) <= blank  # only chunks of blank lines are left out


def test_a_line_longer_than_the_window_is_a_chunk_alone() -> None:
    long_line = "values = [" + ", ".join(str(n) for n in range(400)) + "]"
    text = "\n".join(["import os", long_line, "print(os.sep)"])

    found = list(chunk_text("data.py", text, LocalEmbeddings()))

    assert [(c.start, c.end) for c in found] == [(1, 1), (2, 2), (3, 3)]


def test_an_openai_compatible_models_window_is_configurable_and_chunks_fit_its_estimate() -> None:
    settings = Settings.from_env(
        {"OPENAI_API_KEY": "sk-test", "NOFX_EMBEDDINGS_MODEL": "openai:small", "NOFX_EMBEDDINGS_WINDOW": "100"},
        env_file=Path("/nonexistent"),
    )
    embedder = embedder_for(settings)
    text = (ROOT / "bot/search/index.py").read_text()

    found = list(chunk_text("bot/search/index.py", text, embedder))

    assert embedder.window == 100
    assert all(len(chunk.text) // CHARS_PER_TOKEN <= 100 or chunk.start == chunk.end for chunk in found)
    assert len(found) > len(text.splitlines()) / 40  # cut smaller than 40 lines to fit
