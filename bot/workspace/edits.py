"""File edits proposed by the model (`write_file`, `replace_in_file`), checked and applied inside a worktree.

All edits are checked before any is written, so a bad edit leaves the worktree untouched.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.plans import glob_regex, normalise_path, path_problem

WORKFLOWS_DIR = ".github/workflows/"
MAX_FILE_BYTES = 2 * 1024 * 1024


class EditError(ValueError):
    """An edit cannot be applied; the message names the path and the reason."""


@dataclass(frozen=True)
class Edit:
    op: str  # "write_file" | "replace_in_file"
    path: str
    content: str = ""
    old: str = ""
    new: str = ""

    def to_dict(self) -> dict[str, str]:
        if self.op == "write_file":
            return {"op": self.op, "path": self.path, "content": self.content}
        return {"op": self.op, "path": self.path, "old": self.old, "new": self.new}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Edit:
        op = data.get("op")
        path = data.get("path")
        if op not in ("write_file", "replace_in_file") or not isinstance(path, str):
            raise EditError(f"not an edit: {str(data)[:200]}")
        problem = path_problem(path)
        if problem:
            raise EditError(f"{path}: {problem}")
        path = normalise_path(path)
        if op == "write_file":
            return cls(op=op, path=path, content=_text(data, "content"))
        return cls(op=op, path=path, old=_text(data, "old"), new=_text(data, "new"))


def touches_workflows(edits: list[Edit]) -> list[str]:
    """Paths under .github/workflows/ (in any spelling or letter case): changing CI needs a person's approval first."""
    return sorted({e.path for e in edits if normalise_path(e.path).lower().startswith(WORKFLOWS_DIR)})


def outside(edits: list[Edit], patterns: list[str]) -> list[str]:
    """The edited paths no glob of `patterns` matches: a plan limited to those paths must not write them."""
    return sorted({e.path for e in edits if not any(glob_regex(p).fullmatch(normalise_path(e.path)) for p in patterns)})


def apply(root: Path, edits: list[Edit]) -> list[str]:
    """Apply all edits or none; returns the paths written. Raises EditError naming the path and why."""
    planned: dict[Path, str] = {}
    for edit in edits:
        target = safe_target(root, edit.path)
        current = planned.get(target)
        if current is None and target.exists():
            current = _read(target, edit.path)
        if edit.op == "write_file":
            planned[target] = edit.content
            continue
        if current is None:
            raise EditError(f"{edit.path}: cannot replace text in a file that does not exist")
        if not edit.old:
            raise EditError(f"{edit.path}: the text to replace is empty")
        count = current.count(edit.old)
        if count == 0:
            raise EditError(f"{edit.path}: the text to replace was not found")
        if count > 1:
            raise EditError(f"{edit.path}: the text to replace occurs {count} times; it must be unique")
        planned[target] = current.replace(edit.old, edit.new, 1)
    for target, content in planned.items():
        if len(content.encode()) > MAX_FILE_BYTES:
            raise EditError(f"{target.relative_to(root)}: larger than {MAX_FILE_BYTES} bytes")
    for target, content in planned.items():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content, encoding="utf-8")
    return sorted(str(target.relative_to(root)) for target in planned)


def safe_target(root: Path, path: str) -> Path:
    """The file a path names inside the worktree; refuses absolute, `..`, `.git/` and symlink escapes."""
    problem = path_problem(path)
    if problem:
        raise EditError(f"{path}: {problem}")
    real_root = root.resolve()
    target = real_root / normalise_path(path)
    # Walk every existing component: a symlink anywhere on the way may point out of the worktree.
    current = real_root
    for part in Path(normalise_path(path)).parts:
        current = current / part
        if current.is_symlink():
            raise EditError(f"{path}: goes through a symbolic link ({current.relative_to(real_root)})")
    if os.path.commonpath([real_root, target.resolve()]) != str(real_root):
        raise EditError(f"{path}: leaves the workspace")
    if target.is_dir():
        raise EditError(f"{path}: is a directory")
    return target


def _read(target: Path, path: str) -> str:
    try:
        return target.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise EditError(f"{path}: not a UTF-8 text file") from None


def _text(data: dict[str, Any], key: str) -> str:
    value = data.get(key, "")
    if not isinstance(value, str):
        raise EditError(f"{data.get('path')}: `{key}` must be text")
    return value
