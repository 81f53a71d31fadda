"""The App's credentials in `.env`: other lines kept, values quoted so they read back as written, mode 0600.

The file is replaced atomically, so a crash never leaves half a private key behind.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

_BARE_ENV_VALUE = re.compile(r"[A-Za-z0-9_./:@+-]*")
_LINE_BREAKS = frozenset("\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


def update_env_file(path: Path, values: Mapping[str, str | None]) -> None:
    """Set keys in a dotenv file (None removes one), keeping every other line; never readable by others.

    The file is written to a temporary file created with mode 0600 and renamed
    over the old one, so a private key is never world-readable, not even for an
    instant, and a crash leaves either the old file or the new one.
    """
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    written: set[str] = set()
    out: list[str] = []
    for raw in lines:
        key = _env_key(raw)
        if key is None or key not in values:
            out.append(raw)
            continue
        value = values[key]
        if value is not None and key not in written:
            out.append(f"{key}={env_value(value)}")
            written.add(key)
    missing = [key for key, value in values.items() if value is not None and key not in written]
    if missing:
        if out and out[-1].strip():
            out.append("")
        out.append("# GitHub App credentials, written by the nofx setup page")
        out.extend(f"{key}={env_value(values[key] or '')}" for key in missing)
    _write_private(path, "\n".join(out) + "\n")


def _env_key(line: str) -> str | None:
    """The key a dotenv line sets, parsed the way `read_env_file` does."""
    stripped = line.strip()
    if not stripped or stripped.startswith("#") or "=" not in stripped:
        return None
    return stripped.partition("=")[0].removeprefix("export ").strip()


def env_value(value: str) -> str:
    """Quote a value so `read_env_file` gives it back unchanged (it knows `\\n` and `\\"` only)."""
    if _BARE_ENV_VALUE.fullmatch(value):
        return value
    if any(c in _LINE_BREAKS for c in value):  # `str.splitlines` would cut the line there
        raise ValueError("a value with a line break other than \\n cannot go in a .env file")
    if "\\" not in value:
        return '"' + value.replace('"', '\\"').replace("\n", "\\n") + '"'
    if "\n" not in value and "'" not in value:
        return f"'{value}'"
    raise ValueError("a value with a backslash and a newline or a quote cannot go in a .env file")


def _write_private(path: Path, text: str) -> None:
    """Replace `path` atomically with a file only its owner can read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp creates the file with O_EXCL and mode 0600 before a byte of the key is written.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
