"""Paying for model calls: a price table, per-call usage, the run's budget, and the cache that keeps a retry free.

Every step records what its calls cost; a run stops at `policy.max_cost_usd`; a retried step that sends
the same request gets the stored answer instead of paying for it again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from bot.llm.providers import LLMError, Message, ToolSpec
from bot.logs import fields

log = logging.getLogger(__name__)

# Bumped when the cache key material or the stored entry changes shape.
CACHE_FORMAT = 1


@dataclass(frozen=True)
class Price:
    """USD per million input and output tokens."""

    input_per_mtok: float
    output_per_mtok: float

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1_000_000


# List prices, matched by the longest prefix so dated snapshots (`claude-sonnet-4-5-20250929`) find their family.
PRICES: Mapping[str, Price] = {
    "claude-opus-4-5": Price(5.0, 25.0),
    "claude-opus-4-1": Price(15.0, 75.0),
    "claude-opus-4": Price(15.0, 75.0),
    "claude-sonnet-4-6": Price(3.0, 15.0),
    "claude-sonnet-4-5": Price(3.0, 15.0),
    "claude-sonnet-4": Price(3.0, 15.0),
    "claude-3-7-sonnet": Price(3.0, 15.0),
    "claude-3-5-sonnet": Price(3.0, 15.0),
    "claude-haiku-4-5": Price(1.0, 5.0),
    "claude-3-5-haiku": Price(0.8, 4.0),
    "gpt-5": Price(1.25, 10.0),
    "gpt-5-mini": Price(0.25, 2.0),
    "gpt-5-nano": Price(0.05, 0.4),
    "gpt-4.1": Price(2.0, 8.0),
    "gpt-4.1-mini": Price(0.4, 1.6),
    "gpt-4.1-nano": Price(0.1, 0.4),
    "gpt-4o": Price(2.5, 10.0),
    "gpt-4o-mini": Price(0.15, 0.6),
    "o3": Price(2.0, 8.0),
    "o3-mini": Price(1.1, 4.4),
    "o4-mini": Price(1.1, 4.4),
}

# Unknown models (a new release, a local server's model) are charged like the dearest family we know,
# so a budget errs on the side of stopping early rather than overspending.
UNKNOWN_MODEL_PRICE = Price(15.0, 75.0)


def price_for(model: str, prices: Mapping[str, Price] = PRICES) -> Price | None:
    """The listed price of `model` (longest matching prefix), or None when the table does not know it."""
    matches = [prefix for prefix in prices if model == prefix or model.startswith(prefix + "-")]
    if not matches:
        return None
    return prices[max(matches, key=len)]


def cost_usd(
    model: str, input_tokens: int, output_tokens: int, prices: Mapping[str, Price] = PRICES
) -> tuple[float, bool]:
    """The cost of one call and whether the price was known (False: charged at `UNKNOWN_MODEL_PRICE`)."""
    price = price_for(model, prices)
    known = price is not None
    return (price or UNKNOWN_MODEL_PRICE).cost(input_tokens, output_tokens), known


@dataclass(frozen=True)
class Usage:
    """Tokens and dollars of one `LLM.call` (all its rounds); a cache hit is `cached` and costs nothing.

    `price_known=False`: the model is not in the price table, so `cost_usd` is charged at the
    conservative `UNKNOWN_MODEL_PRICE`.
    """

    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    cached: bool
    price_known: bool = True


class BudgetExceeded(LLMError):
    """The run spent its `policy.max_cost_usd`; nothing more is sent."""


@dataclass
class Budget:
    """A run's spending limit, shared by all its calls: checked before each call, charged after."""

    limit_usd: float
    spent_usd: float = 0.0

    def check(self) -> None:
        if self.spent_usd >= self.limit_usd:
            raise BudgetExceeded(
                f"LLM budget exhausted: the run spent {_dollars(self.spent_usd)} of {_dollars(self.limit_usd)} "
                "(policy.max_cost_usd). Raise policy.max_cost_usd in .github/nofx.yml or make the request smaller."
            )

    def charge(self, cost: float) -> None:
        self.spent_usd += cost


def _dollars(amount: float) -> str:
    return f"${amount:.2f}" if amount == 0 or amount >= 0.01 else f"${amount:.4f}"


class ResponseCache(Protocol):
    """Validated responses by request key, so a retried step does not pay for the same answer twice."""

    def get(self, key: str) -> dict[str, Any] | None: ...

    def put(self, key: str, value: dict[str, Any]) -> None: ...


class FileCache:
    """A `ResponseCache` of JSON files, `<directory>/<key[:2]>/<key>.json`, written atomically."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> FileCache:
        """The server's cache, `<NOFX_DATA_DIR>/llm-cache`."""
        return cls(Path(data_dir) / "llm-cache")

    def _path(self, key: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{64}", key):
            raise ValueError("a cache key is a sha256 hex digest")
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            value = json.loads(self._path(key).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("llm cache entry unreadable, ignored", extra=fields(key=key, error=type(exc).__name__))
            return None
        return value if isinstance(value, dict) else None

    def put(self, key: str, value: dict[str, Any]) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(value, handle, ensure_ascii=False)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def cache_key(
    provider: str,
    model: str,
    system: str,
    messages: list[Message],
    tools: list[ToolSpec],
    max_tokens: int,
    require_tool: bool,
    extra: str,
) -> str:
    """sha256 over everything that shapes the answer (after redaction, so the key never depends on a secret)."""
    material = {
        "format": CACHE_FORMAT,
        "provider": provider,
        "model": model,
        "system": system,
        "messages": messages,
        "tools": [asdict(tool) for tool in tools],
        "max_tokens": max_tokens,
        "require_tool": require_tool,
        "extra": extra,
    }
    encoded = json.dumps(material, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(encoded.encode()).hexdigest()
