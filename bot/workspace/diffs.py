"""THE unified-diff parser: `git diff` output and GitHub's `patch` fields as `FileDiff`s with their hunks.

Two sources give the same `FileDiff`s: `git diff` output (the CLI, workers with a clone, checkpoints) and the
`patch` fields of GitHub's pull-request files API. Hunks are read by their line counts, never by what a line looks
like, so a deleted line that reads `-- x` (shown as `--- x`) or an added `diff --git` line is content, not a header.
Lines are split on `\\n` only: a CRLF file's `\\r` stays part of its lines, and form feeds or Unicode line
separators inside code do not shift line numbers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

# The two sides of a diff, in GitHub's review-comment words: RIGHT is the new file, LEFT the old one.
RIGHT = "RIGHT"
LEFT = "LEFT"

_HUNK_HEADER = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@ ?(.*)$")
_C_ESCAPES = {"a": 7, "b": 8, "t": 9, "n": 10, "v": 11, "f": 12, "r": 13, '"': 34, "\\": 92}


@dataclass(frozen=True)
class Hunk:
    """One `@@` block; `lines` are raw, with their ' ', '+', '-' or '\\' prefix (a CRLF line keeps its '\\r')."""

    old_start: int
    old_count: int
    new_start: int
    new_count: int
    header: str  # the whole `@@ -a,b +c,d @@ section` line
    lines: tuple[str, ...]

    def right_lines(self) -> set[int]:
        """New-file line numbers shown in this hunk ('+' and ' '): where RIGHT-side comments may go."""
        return {number for op, number in self.numbered() if op in "+ " and number is not None}

    def left_lines(self) -> set[int]:
        """Old-file line numbers shown in this hunk ('-' and ' '): where LEFT-side comments may go."""
        found, number = set(), self.old_start
        for line in self.lines:
            if line[:1] in ("-", " "):
                found.add(number)
                number += 1
        return found

    def numbered(self) -> list[tuple[str, int | None]]:
        """Each line's prefix with its new-file number; '-' and '\\' lines have none."""
        out: list[tuple[str, int | None]] = []
        number = self.new_start
        for line in self.lines:
            op = line[:1]
            if op in ("+", " "):
                out.append((op, number))
                number += 1
            else:
                out.append((op, None))
        return out

    @property
    def section(self) -> str:
        """The function or class git names after the second `@@`, or ''."""
        found = _HUNK_HEADER.match(self.header)
        return found.group(5) if found else ""


@dataclass(frozen=True)
class FileDiff:
    """One file's change. `path` is the new path (the old one for a removed file), as review comments use it.

    `status` is GitHub's vocabulary (added, modified, removed, renamed, copied, changed, unchanged) whatever
    the source; a binary file keeps its status and has `binary` set. `no_patch` marks a text file whose diff
    GitHub would not send (too large), so it is skipped with that reason instead of looking unchanged.
    """

    path: str
    old_path: str | None
    status: str
    hunks: tuple[Hunk, ...]
    binary: bool = False
    additions: int = 0
    deletions: int = 0
    no_patch: bool = False

    def patch(self) -> str:
        """The unified text of its hunks, as GitHub's `patch` field holds it."""
        return "\n".join(line for hunk in self.hunks for line in (hunk.header, *hunk.lines))


# --- parsing ---------------------------------------------------------------------------------------------------


def parse_git_diff(text: str) -> list[FileDiff]:
    """Files of `git diff --no-color --no-ext-diff -M base...head` output (plain unified diffs work too).

    Paths come from the most reliable header present: `rename from/to`, then `---`/`+++`, then the
    `diff --git` line; git's C-quoted form (`"a/\\303\\274.txt"`) and `core.quotepath=false` output both decode.
    """
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    files: list[FileDiff] = []
    index = 0
    while index < len(lines):
        line = lines[index].removesuffix("\r")
        if line.startswith("diff --git "):
            diff, index = _read_git_file(lines, index)
            files.append(diff)
        elif line.startswith("--- ") and index + 1 < len(lines) and lines[index + 1].startswith("+++ "):
            diff, index = _read_plain_file(lines, index)
            files.append(diff)
        else:
            index += 1  # commit messages, `diff --cc` blocks and other text between files
    return files


def from_github_files(files: Sequence[dict[str, Any]]) -> list[FileDiff]:
    """Files of `GET /repos/{owner}/{repo}/pulls/{n}/files` (or a compare's `files`).

    GitHub leaves out `patch` for binary files and for diffs too large to send; with no changed lines counted
    it is a binary (or empty) file, with changed lines it is marked `no_patch` so the review says so.
    """
    out = []
    for entry in files:
        status = str(entry.get("status") or "modified")
        patch = entry.get("patch")
        hunks: tuple[Hunk, ...] = ()
        if patch:
            hunks, _rest = _read_hunks(str(patch).split("\n"), 0)
        additions, deletions = line_counts(hunks)
        changes = int(entry.get("additions") or 0) + int(entry.get("deletions") or 0)
        no_text = not patch and status not in ("renamed", "copied", "unchanged")
        out.append(
            FileDiff(
                path=str(entry["filename"]),
                old_path=str(entry["previous_filename"]) if entry.get("previous_filename") else None,
                status=status,
                hunks=hunks,
                binary=no_text and changes == 0,
                additions=additions if patch else int(entry.get("additions") or 0),
                deletions=deletions if patch else int(entry.get("deletions") or 0),
                no_patch=no_text and changes > 0,
            )
        )
    return out


def _read_git_file(lines: list[str], index: int) -> tuple[FileDiff, int]:
    """One `diff --git` block: extended headers, then hunks, up to the next file."""
    git_names = _git_line_names(lines[index].removesuffix("\r")[len("diff --git ") :])
    index += 1
    status, binary = "modified", False
    old_name: str | None = None
    new_name: str | None = None
    minus: str | None = None
    plus: str | None = None
    saw_minus = saw_plus = False
    while index < len(lines):
        line = lines[index].removesuffix("\r")
        if line.startswith("diff --git ") or line.startswith("@@ "):
            break
        if line.startswith("new file mode"):
            status = "added"
        elif line.startswith("deleted file mode"):
            status = "removed"
        elif line.startswith("rename from "):
            status, old_name = "renamed", _unquote_path(line[len("rename from ") :])
        elif line.startswith("rename to "):
            new_name = _unquote_path(line[len("rename to ") :])
        elif line.startswith("copy from "):
            status, old_name = "copied", _unquote_path(line[len("copy from ") :])
        elif line.startswith("copy to "):
            new_name = _unquote_path(line[len("copy to ") :])
        elif line.startswith("--- "):
            saw_minus, minus = True, _header_path(line[4:])
        elif line.startswith("+++ "):
            saw_plus, plus = True, _header_path(line[4:])
        elif line.startswith("Binary files ") or line == "GIT binary patch":
            binary = True
            if line == "GIT binary patch":
                index = _skip_binary_patch(lines, index + 1)
                continue
        index += 1
    hunks, index = _read_hunks(lines, index)
    git_old, git_new = git_names
    old = old_name or (minus if saw_minus else git_old)
    new = new_name or (plus if saw_plus else git_new)
    if status == "removed" or (saw_plus and plus is None):
        status, path = "removed", old or new or ""
    else:
        path = new or old or ""
        if saw_minus and minus is None:
            status = "added"
    additions, deletions = line_counts(hunks)
    diff = FileDiff(
        path=path,
        old_path=old if status in ("renamed", "copied") else None,
        status=status,
        hunks=hunks,
        binary=binary,
        additions=additions,
        deletions=deletions,
    )
    return diff, index


def _read_plain_file(lines: list[str], index: int) -> tuple[FileDiff, int]:
    """A `---`/`+++` pair without a `diff --git` line, as `diff -u` writes it."""
    minus = _header_path(lines[index].removesuffix("\r")[4:].split("\t")[0])
    plus = _header_path(lines[index + 1].removesuffix("\r")[4:].split("\t")[0])
    hunks, index = _read_hunks(lines, index + 2)
    additions, deletions = line_counts(hunks)
    status = "added" if minus is None else "removed" if plus is None else "modified"
    path = plus if plus is not None else minus or ""
    return FileDiff(path, None, status, hunks, False, additions, deletions), index


def _read_hunks(lines: list[str], index: int) -> tuple[tuple[Hunk, ...], int]:
    """Hunks from `index` on, each read by its counts; stops at the first line that is not a hunk."""
    hunks = []
    while index < len(lines):
        found = _HUNK_HEADER.match(lines[index].removesuffix("\r"))
        if not found:
            break
        old_start, new_start = int(found.group(1)), int(found.group(3))
        old_count = int(found.group(2)) if found.group(2) is not None else 1
        new_count = int(found.group(4)) if found.group(4) is not None else 1
        header = lines[index].removesuffix("\r")
        index += 1
        body: list[str] = []
        old_left, new_left = old_count, new_count
        while index < len(lines) and (old_left > 0 or new_left > 0):
            line = lines[index]
            op = line[:1]
            if op == "" or op == " ":
                # An empty line is a context line whose lone space was stripped (mail clients, editors).
                line, old_left, new_left = line or " ", old_left - 1, new_left - 1
            elif op == "-":
                old_left -= 1
            elif op == "+":
                new_left -= 1
            elif op != "\\":
                break  # a truncated hunk: keep what was there
            body.append(line)
            index += 1
        while index < len(lines) and lines[index].startswith("\\"):
            body.append(lines[index])  # `\ No newline at end of file` after the last counted line
            index += 1
        hunks.append(Hunk(old_start, old_count, new_start, new_count, header, tuple(body)))
    return tuple(hunks), index


def _skip_binary_patch(lines: list[str], index: int) -> int:
    """Past the base85 payload of a `GIT binary patch`, to the next file."""
    while index < len(lines) and not lines[index].startswith("diff --git "):
        index += 1
    return index


def line_counts(hunks: Iterable[Hunk]) -> tuple[int, int]:
    additions = deletions = 0
    for hunk in hunks:
        for line in hunk.lines:
            additions += line.startswith("+")
            deletions += line.startswith("-")
    return additions, deletions


def _header_path(text: str) -> str | None:
    """The path of a `---`/`+++` line: None for /dev/null; git adds a tab after names with spaces."""
    text = text.removesuffix("\t") if not text.startswith('"') else text
    if text.startswith('"'):
        name, _rest = _c_unquote(text)
    else:
        name = text.split("\t")[0]
    if name == "/dev/null":
        return None
    return _strip_prefix(name)


def _unquote_path(text: str) -> str:
    return _c_unquote(text)[0] if text.startswith('"') else text


def _git_line_names(text: str) -> tuple[str | None, str | None]:
    """Both names of a `diff --git a/x b/y` line; unquoted names with spaces are split where both halves match."""
    if text.startswith('"'):
        old, rest = _c_unquote(text)
        rest = rest.lstrip(" ")
        new = _c_unquote(rest)[0] if rest.startswith('"') else rest
        return _strip_prefix(old), _strip_prefix(new)
    quoted = text.find(' "')
    if quoted != -1:
        return _strip_prefix(text[:quoted]), _strip_prefix(_c_unquote(text[quoted + 1 :])[0])
    half = (len(text) - 1) // 2
    if len(text) % 2 == 1 and text[half] == " " and text[:half][2:] == text[half + 1 :][2:]:
        return _strip_prefix(text[:half]), _strip_prefix(text[half + 1 :])
    old, sep, new = text.partition(" b/")
    return (_strip_prefix(old), "b/" + new) if sep else (_strip_prefix(text), _strip_prefix(text))


def _strip_prefix(name: str) -> str:
    return name[2:] if name[:2] in ("a/", "b/") else name


def _c_unquote(text: str) -> tuple[str, str]:
    """Decode a C-quoted string at the start of `text` (git's octal bytes are UTF-8); return it and the rest."""
    out = bytearray()
    index = 1
    while index < len(text):
        char = text[index]
        if char == '"':
            return out.decode("utf-8", errors="replace"), text[index + 1 :]
        if char == "\\" and index + 1 < len(text):
            following = text[index + 1]
            if following in _C_ESCAPES:
                out.append(_C_ESCAPES[following])
                index += 2
                continue
            octal = re.match(r"[0-7]{1,3}", text[index + 1 : index + 4])
            if octal:
                out.append(int(octal.group(), 8) & 0xFF)
                index += 1 + len(octal.group())
                continue
        out.extend(char.encode("utf-8", errors="surrogateescape"))
        index += 1
    return out.decode("utf-8", errors="replace"), ""
