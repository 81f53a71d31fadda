"""The operator's tools inside the sandbox: the directories on nofx's own PATH and NOFX_SANDBOX_PATHS, read-only.

A repository's commands must find the `python`, `node` or `cargo` the machine runs them with, also when these live
in a home directory (pyenv, asdf, nvm). Each PATH directory is shown read-only at its own path and keeps its place
on the sandbox's PATH; a `bin/` directory brings its toolchain prefix along (`…/3.11.7/bin` shows `…/3.11.7`, where
the interpreter's libraries are), except right under a home directory (`~/.cargo/bin` shows only itself: the
prefix may hold credentials); a version manager's `shims/` (pyenv, rbenv, asdf) brings its root. NOFX_SANDBOX_PATHS names more directories, shown whole (say `~/.pyenv`); their `bin/`,
or else they themselves, go on PATH.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bot.workspace.isolation import SAFE_PATH

_SYSTEM = (Path("/usr"), Path("/bin"), Path("/sbin"), Path("/lib"), Path("/lib64"), Path("/etc"))


@dataclass(frozen=True)
class Toolchains:
    """What the sandbox shows of the host's tools: the directories to bind, and the PATH inside."""

    binds: tuple[Path, ...] = ()
    search_path: str = SAFE_PATH


def find(path_variable: str, extra: Iterable[Path] = ()) -> Toolchains:
    """From nofx's PATH and NOFX_SANDBOX_PATHS; directories that do not exist are left out (not an error)."""
    binds: list[Path] = []
    search: list[str] = []
    for raw in path_variable.split(":"):
        directory = _existing(Path(raw)) if raw.startswith("/") else None
        if directory is None:
            continue
        search.append(str(directory))
        if not _system(directory):
            binds.append(_prefix(directory))
    for given in extra:
        directory = _existing(Path(given))
        if directory is None or directory == Path("/") or _system(directory):
            continue
        binds.append(directory)
        search.append(str(directory / "bin") if (directory / "bin").is_dir() else str(directory))
    search += SAFE_PATH.split(":")
    return Toolchains(tuple(dict.fromkeys(binds)), ":".join(dict.fromkeys(search)))


def _existing(path: Path) -> Path | None:
    with contextlib.suppress(OSError):
        resolved = path.resolve(strict=True)
        if resolved.is_dir():
            return resolved
    return None


def _system(path: Path) -> bool:
    """Under a directory every sandbox shows read-only already (/usr/local/bin is, /opt may hold nofx's data)."""
    return any(path == root or path.is_relative_to(root) for root in _SYSTEM)


def _prefix(directory: Path) -> Path:
    """A `bin/` directory's toolchain prefix, unless that prefix sits right in a home directory or is `/`; a version
    manager's `shims/` brings its whole root (the shims run `<root>/libexec/…` and read `<root>/versions`)."""
    parent = directory.parent
    if parent == Path("/") or _home(parent):
        return directory
    if directory.name == "shims" or (directory.name == "bin" and not _home(parent.parent)):
        return parent
    return directory


def _home(path: Path) -> bool:
    return path == Path("/root") or path.parent == Path("/home") or path == Path.home()
