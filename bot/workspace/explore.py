"""What the codegen model may look at in a worktree: files by glob, a regex search, line ranges of any file.

Each answer is bounded (entries, lines, characters), so a 10,000-file repository or a 2 MB file costs the prompt
only what the model asked for. Paths go through the same checks as edits: nothing outside the worktree, no `.git/`.
"""

from __future__ import annotations

import re
from pathlib import Path

from bot.plans import glob_regex
from bot.workspace.edits import EditError, safe_target

MAX_LIST = 500
MAX_MATCHES = 100
MAX_LINE_CHARS = 300
MAX_READ_LINES = 800
MAX_READ_CHARS = 60_000
MAX_SEARCH_FILE_BYTES = 2 * 1024 * 1024
MAX_READ_FILE_BYTES = 16 * 1024 * 1024


class ExploreError(ValueError):
    """The request cannot be answered (bad pattern, missing file); the message goes back to the model."""


def list_files(paths: list[str], pattern: str = "**") -> str:
    """Tracked files matching a glob (`*` within a directory, `**` across them), sorted, at most MAX_LIST."""
    regex = glob_regex(pattern.strip() or "**")
    found = [path for path in paths if regex.fullmatch(path)]
    shown = "\n".join(found[:MAX_LIST])
    if len(found) > MAX_LIST:
        shown += f"\n… {len(found) - MAX_LIST} more; narrow the pattern"
    return shown or f"no tracked file matches {pattern!r}"


def search_code(root: Path, paths: list[str], pattern: str, glob: str = "**") -> str:
    """Lines matching a regular expression in tracked text files, as `path:line: text`, at most MAX_MATCHES."""
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise ExploreError(f"not a valid regular expression: {exc}") from None
    only = glob_regex(glob.strip() or "**")
    matches: list[str] = []
    more = 0
    for path in paths:
        if not only.fullmatch(path):
            continue
        text = _text(root / path)
        if text is None or not regex.search(text):
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            if regex.search(line):
                if len(matches) < MAX_MATCHES:
                    matches.append(f"{path}:{number}: {line[:MAX_LINE_CHARS]}")
                else:
                    more += 1
    if not matches:
        return f"no match for {pattern!r}"
    return "\n".join(matches) + (f"\n… {more} more matches; narrow the pattern or the glob" if more else "")


def read_lines(root: Path, path: str, start: int = 1, end: int | None = None) -> str:
    """Lines `start`..`end` (1-based, inclusive) of a text file of any size, numbered, within the read caps."""
    try:
        target = safe_target(root, path)
    except EditError as exc:
        raise ExploreError(str(exc)) from None
    if not target.is_file():
        raise ExploreError(f"{path}: no such file")
    text = _text(target, limit=MAX_READ_FILE_BYTES)
    if text is None:
        raise ExploreError(f"{path}: not a UTF-8 text file")
    lines = text.splitlines()
    start = max(1, start)
    last = min(len(lines), end if end is not None else len(lines), start + MAX_READ_LINES - 1)
    shown: list[str] = []
    size = 0
    for number in range(start, last + 1):
        line = f"{number}\t{lines[number - 1]}"
        size += len(line) + 1
        if size > MAX_READ_CHARS and shown:
            last = number - 1
            break
        shown.append(line)
    header = f"{path}: lines {start}-{last} of {len(lines)}"
    if last < len(lines):
        header += f"; read on with start={last + 1}"
    return header + "\n" + "\n".join(shown)


def _text(path: Path, *, limit: int | None = MAX_SEARCH_FILE_BYTES) -> str | None:
    try:
        if path.is_symlink() or not path.is_file() or (limit is not None and path.stat().st_size > limit):
            return None
        data = path.read_bytes()
    except OSError:
        return None
    if b"\x00" in data[:4096]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None
