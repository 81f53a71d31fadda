"""JSON-lines logging with bound context (delivery, event, installation, repo) and secret redaction."""

from __future__ import annotations

import base64
import contextvars
import json
import logging
import os
import re
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote, quote_plus

_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("nofx_log_context", default=None)

REDACTED = "[redacted]"
RUN_LOG = "worker.log"
_RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Shorter known values would redact ordinary words; base64 forms of shorter secrets leave too little to match.
MIN_SECRET = 6
MIN_ENCODED = 12
MAX_ADDED = 512
_HEADER_NAMES = r"(?:proxy-)?authorization|x-api-key|api[-_]key"
_SCHEMES = r"bearer|token|basic|digest|bot"

# `Authorization: Bearer x`, `'Authorization': 'token x'`, `\"authorization\":\"x\"`, `AUTHORIZATION=basic x`.
_HEADER_VALUE = (
    rf"(?i)\b({_HEADER_NAMES})"  # the header's name
    r"([\s'\"\\]*[:=][\s'\"\\]*)"  # `: `, `': '`, `\":\"`, `=`
    rf"((?:{_SCHEMES})\s+)?"  # the scheme, kept
    rf"(?!\[redacted\]|(?:{_SCHEMES})\s)[^\s'\",;\\}}\]]+"  # the credential: not a scheme, not redacted already
)


def _unless_plain_words(match: re.Match[str]) -> str:
    """`sk-…` keys mix digits and letters; `risk-assessment-for-the-release` does not and stays readable."""
    text = match.group(0)
    return REDACTED if any(c.isdigit() for c in text) else text


# Shapes of credentials we may meet even when we were never told their value: (pattern, replacement).
# No `\b` before token prefixes: `id_ghs_…` or `xghs_…` glue a token to a word and must not hide it.
_SECRET_PATTERNS: list[tuple[re.Pattern[str], Any]] = [
    (
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)", re.S),
        REDACTED,
    ),
    (re.compile(r"(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})"), REDACTED),
    (re.compile(r"(?<![A-Za-z0-9])sk-(?:ant-|proj-)?[A-Za-z0-9_-]{16,}"), _unless_plain_words),
    (re.compile(r"eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"), REDACTED),
    (re.compile(_HEADER_VALUE), rf"\1\2\3{REDACTED}"),
    # The scheme alone: `('Authorization', 'Bearer x')`, `Bearer x` in a curl line.
    (re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]{16,}"), rf"\1\2{REDACTED}"),
    # Credentials in any URL, up to the last `@` of the authority (passwords may hold an unescaped `@`).
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s?#@'\"<>]*:[^/\s?#'\"<>]*@"), rf"\1{REDACTED}@"),
    # The manifest flow's one-time code can be exchanged for the App's private key until it is used.
    (re.compile(r"(?i)([?&](?:code|state|access_token|token|client_secret)=)[^&\s\"'\\]+"), rf"\1{REDACTED}"),
]


class Redactor:
    """The single place secrets are removed from log text: known values (in every encoding they travel in) plus
    credential shapes."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        # The configured secrets stay for the life of the process; values added later (installation tokens, one
        # an hour per installation) are kept for the newest MAX_ADDED, so a long-running worker does not slow down.
        self._pinned: set[str] = set()
        for secret in secrets:
            if secret and len(secret) >= MIN_SECRET:
                self._pinned |= _forms(secret)
        self._added: OrderedDict[str, frozenset[str]] = OrderedDict()
        self._ordered = sorted(self._pinned, key=len, reverse=True)

    def add(self, secret: str | None) -> None:
        """Remember a secret value (an installation token, the webhook secret) to redact it later."""
        if not secret or len(secret) < MIN_SECRET:
            return
        forms = frozenset(_forms(secret))
        with self._lock:
            if secret in self._added:
                self._added.move_to_end(secret)
                return
            self._added[secret] = forms
            while len(self._added) > MAX_ADDED:
                self._added.popitem(last=False)
            values = self._pinned.union(*self._added.values())
            self._ordered = sorted(values, key=len, reverse=True)

    def redact(self, text: str) -> str:
        with self._lock:
            values = self._ordered
        for value in values:
            if value in text:
                text = text.replace(value, REDACTED)
        for pattern, replacement in _SECRET_PATTERNS:
            text = pattern.sub(replacement, text)
        return text

    def redact_data(self, value: Any) -> Any:
        """Redact every string inside JSON-like data (keys too), before it is encoded and its escapes hide a secret."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {self.redact(str(k)): self.redact_data(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.redact_data(v) for v in value]
        if value is None or isinstance(value, bool | int | float):
            return value
        return self.redact(str(value))


def _forms(secret: str) -> set[str]:
    """The ways a secret shows up in text: as is, with either newline style, JSON-escaped (once or twice),
    URL-encoded, base64-encoded at any offset (`x-access-token:<token>` in a Basic header), and line by line
    for multi-line secrets (one line of a PEM body in a parse error)."""
    texts = {secret}
    if "\n" in secret or "\r" in secret:
        unix = secret.replace("\r\n", "\n")
        texts |= {unix, unix.replace("\n", "\r\n")}
    forms: set[str] = set()
    for text in texts:
        once = json.dumps(text)[1:-1]
        forms |= {
            text,
            once,
            json.dumps(text, ensure_ascii=False)[1:-1],
            json.dumps(once)[1:-1],
            quote(text, safe=""),
            quote_plus(text, safe=""),
            text.replace("\r", "\\r").replace("\n", "\\n"),
        }
    for line in re.split(r"[\r\n]+", secret):
        line = line.strip()
        if len(line) >= 2 * MIN_ENCODED and not line.startswith("-----"):
            forms.add(line)
    forms |= _base64_cores(secret.encode())
    return {form for form in forms if len(form) >= MIN_SECRET}


def _base64_cores(data: bytes) -> set[str]:
    """The part of base64(prefix + data + suffix) that depends only on data, for each of the 3 alignments."""
    cores: set[str] = set()
    if len(data) < MIN_ENCODED:
        return cores
    for offset in range(3):
        padded = b"\0" * offset + data
        whole = len(padded) // 3  # groups made only of the secret's bytes (and, at offset 0, no padding)
        first = 1 if offset else 0
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            core = encode(padded[: whole * 3]).decode()[4 * first :]
            if len(core) >= MIN_ENCODED:
                cores.add(core)
    return cores


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
        # Twice: the values before JSON escapes can disguise a secret, the line for what spans values.
        line = json.dumps(self.redactor.redact_data(entry), default=str, ensure_ascii=False)
        return self.redactor.redact(line)


class RunLogHandler(logging.Handler):
    """Appends every record bound to a run (`run_id`) to `<data>/runs/<run_id>/worker.log`; when a step ends, the
    engine stores the lines it added in the shared store (`bot.runs.step_logs`), for the run's RCA bundle.

    One `write` per line on an O_APPEND descriptor, so workers in several processes never interleave a line.
    """

    def __init__(self, data_dir: Path, redactor: Redactor) -> None:
        super().__init__()
        self.data_dir = Path(data_dir)
        self.setFormatter(JsonFormatter(redactor))

    def emit(self, record: logging.LogRecord) -> None:
        run_id = getattr(record, "fields", {}).get("run_id") or (_context.get() or {}).get("run_id")
        if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
            return
        try:
            line = (self.format(record) + "\n").encode("utf-8")
            path = run_log_path(self.data_dir, run_id)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
        except Exception:  # logging must never break the code that logs; the handler reports it on stderr
            self.handleError(record)


def run_log_path(data_dir: Path, run_id: str) -> Path:
    """Where a run's worker log lines are collected (next to its artifacts)."""
    if not _RUN_ID.fullmatch(run_id):
        raise ValueError(f"not a run id: {run_id!r}")
    return Path(data_dir) / "runs" / run_id / RUN_LOG


def bound(**fields: Any) -> _Bound:
    """Attach fields (delivery_id, event, installation, repo, ...) to every log line inside the block."""
    return _Bound(fields)


class _Bound:
    """`bound`'s block: a class rather than a generator, as intake enters two per delivery."""

    __slots__ = ("_fields", "_token")

    def __init__(self, fields: dict[str, Any]) -> None:
        self._fields = fields

    def __enter__(self) -> None:
        values = {k: v for k, v in self._fields.items() if v is not None}
        self._token = _context.set({**(_context.get() or {}), **values})

    def __exit__(self, *_exc: object) -> None:
        _context.reset(self._token)


def fields(**values: Any) -> dict[str, Any]:
    """Structured extras for one log call: `log.info("...", extra=fields(run_id=...))`."""
    return {"fields": values}


def configure(
    redactor: Redactor, *, level: int = logging.INFO, stream: TextIO | None = None, data_dir: Path | None = None
) -> None:
    """Route all logging through the JSON formatter; called once by each entry point.

    With `data_dir`, lines bound to a run are also collected per run (`RunLogHandler`) for its RCA bundle.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(redactor))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    if data_dir is not None:
        root.addHandler(RunLogHandler(data_dir, redactor))
    root.setLevel(level)
    # httpx logs full URLs at INFO; ours are token-free, but keep the noise down.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpx2").setLevel(logging.WARNING)
