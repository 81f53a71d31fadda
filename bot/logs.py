"""JSON-lines logging with bound context (delivery, event, installation, repo) and secret redaction."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TextIO

_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("nofx_log_context", default=None)

REDACTED = "[redacted]"

# Shapes of credentials we may meet even when we were never told their value: (pattern, replacement).
_SECRET_PATTERNS = [
    (
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)", re.S),
        REDACTED,
    ),
    (re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})"), REDACTED),
    (re.compile(r"\bsk-(?:ant-)?[A-Za-z0-9_-]{16,}"), REDACTED),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"), REDACTED),
    (re.compile(r"(?i)(authorization\W{0,3}\s*(?:bearer|token|basic)\s+)[^\s'\",]+"), rf"\1{REDACTED}"),
    (re.compile(r"(?i)(https?://)[^/\s:@]+:[^/\s@]+@"), rf"\1{REDACTED}@"),
    # The manifest flow's one-time code can be exchanged for the App's private key until it is used.
    (re.compile(r"(?i)([?&](?:code|state)=)[^&\s\"']+"), rf"\1{REDACTED}"),
]


class Redactor:
    """The single place secrets are removed from log text: known values plus credential shapes."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str | None) -> None:
        """Remember a secret value (an installation token, the webhook secret) to redact it later."""
        if secret and len(secret) >= 6:
            with self._lock:
                self._values.add(secret)
                # PEM keys also appear with escaped newlines (in .env files, JSON).
                if "\n" in secret:
                    self._values.add(secret.replace("\n", "\\n"))

    def redact(self, text: str) -> str:
        with self._lock:
            values = sorted(self._values, key=len, reverse=True)
        for value in values:
            if value in text:
                text = text.replace(value, REDACTED)
        for pattern, replacement in _SECRET_PATTERNS:
            text = pattern.sub(replacement, text)
        return text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, bound context, extras, exception."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(_context.get() or {})
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        line = json.dumps(entry, default=str, ensure_ascii=False)
        return self.redactor.redact(line)


@contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """Attach fields (delivery_id, event, installation, repo, ...) to every log line inside the block."""
    token = _context.set({**(_context.get() or {}), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def fields(**values: Any) -> dict[str, Any]:
    """Structured extras for one log call: `log.info("...", extra=fields(run_id=...))`."""
    return {"fields": values}


def configure(redactor: Redactor, *, level: int = logging.INFO, stream: TextIO | None = None) -> None:
    """Route all logging through the JSON formatter; called once by each entry point."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(redactor))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    # httpx logs full URLs at INFO; ours are token-free, but keep the noise down.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpx2").setLevel(logging.WARNING)
