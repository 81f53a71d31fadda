"""Probot's config inheritance: organization defaults and `_extends` chains, merged before the schema sees them.

A repository without `.github/nofx.yml` takes its owner's `.github` repository's file. A file may say
`_extends: other-repo` (same owner), `_extends: owner/repo` or `_extends: owner/repo:path/to/file.yml`; the base
is merged under it (mappings deeply, lists and scalars replaced by the extending file), at most `MAX_LEVELS`
deep and without cycles, and only the merged result is validated. An error names the file the key came from.
Pure apart from the `fetch` callable the caller passes in (the GitHub API, or a test's dict).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from bot.repo_config import CONFIG_PATH, ConfigError, RepoConfig, from_mapping, load_mapping

ORG_REPO = ".github"
EXTENDS_KEY = "_extends"
MAX_LEVELS = 3
_NAME = r"[A-Za-z0-9_.-]{1,100}"
_EXTENDS = re.compile(rf"(?:(?P<owner>{_NAME})/)?(?P<repo>{_NAME})(?::(?P<path>[A-Za-z0-9_./-]{{1,200}}))?")
EXTENDS_ALLOWED = "a repository of the same owner (`.github`), `owner/repo`, or `owner/repo:path/to/file.yml`"


@dataclass(frozen=True)
class ConfigFile:
    """Where a config file lives; `label` is how errors name it (the repository's own file by its path alone)."""

    owner: str
    repo: str
    path: str = CONFIG_PATH
    own: bool = False

    @property
    def label(self) -> str:
        return self.path if self.own else f"{self.owner}/{self.repo}:{self.path}"

    def same_file(self, other: ConfigFile) -> bool:
        return (self.owner.lower(), self.repo.lower(), self.path) == (
            other.owner.lower(),
            other.repo.lower(),
            other.path,
        )


# Returns the file's text, or None when the file (or its repository) does not exist or cannot be read.
Fetch = Callable[[ConfigFile], Awaitable[str | None]]


async def resolve(fetch: Fetch, owner: str, repo: str) -> RepoConfig:
    """The repository's effective config: its own file, else the organization's, with their `_extends` bases."""
    current = ConfigFile(owner, repo, own=True)
    text = await fetch(current)
    if text is None:
        if repo.lower() == ORG_REPO:
            return RepoConfig()
        current = ConfigFile(owner, ORG_REPO)
        text = await fetch(current)
        if text is None:
            return RepoConfig()
    layers = [(current, load_mapping(text, file=current.label))]
    while EXTENDS_KEY in layers[-1][1]:
        file, data = layers[-1]
        base = _base_of(data.pop(EXTENDS_KEY), file)
        if any(base.same_file(earlier) for earlier, _ in layers):
            chain = " → ".join(f.label for f, _ in layers)
            raise ConfigError(
                EXTENDS_KEY,
                f"names {base.label} again ({chain} → {base.label}: a cycle)",
                "a chain of bases without repeats",
                file=file.label,
            )
        if len(layers) > MAX_LEVELS:
            raise ConfigError(
                EXTENDS_KEY,
                f"goes deeper than {MAX_LEVELS} levels of `_extends`",
                f"at most {MAX_LEVELS} levels",
                file=file.label,
            )
        base_text = await fetch(base)
        if base_text is None:
            raise ConfigError(
                EXTENDS_KEY,
                f"names {base.label}, which nofx cannot read (missing, or not installed)",
                EXTENDS_ALLOWED,
                file=file.label,
            )
        layers.append((base, load_mapping(base_text, file=base.label)))
    merged: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for file, data in reversed(layers):
        merged = merge(merged, data, origins, file.label)
    try:
        return from_mapping(merged)
    except ConfigError as exc:
        _raise_in(exc, origins, layers[0][0].label)


def merge(
    base: dict[str, Any], override: dict[str, Any], origins: dict[str, str], file: str, prefix: str = ""
) -> dict[str, Any]:
    """`override` over `base`: mappings merge key by key, anything else (lists too) replaces; `origins` learns
    which file each key path last came from."""
    merged = dict(base)
    for key, value in override.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if not (isinstance(value, dict) and isinstance(merged.get(key), dict)):
            for known in [p for p in origins if p.startswith(path + ".")]:
                del origins[known]
            merged.pop(key, None)
        merged[key] = merge(merged.get(key, {}), value, origins, file, path) if isinstance(value, dict) else value
        origins[path] = file
    return merged


def _base_of(value: object, extending: ConfigFile) -> ConfigFile:
    match = _EXTENDS.fullmatch(value) if isinstance(value, str) else None
    path = (match.group("path") if match else None) or CONFIG_PATH
    if match is None or ".." in path.split("/") or path.startswith("/") or not path.endswith((".yml", ".yaml")):
        shown = repr(value) if isinstance(value, str) else type(value).__name__
        raise ConfigError(EXTENDS_KEY, f"is {shown}", EXTENDS_ALLOWED, file=extending.label)
    return ConfigFile(match.group("owner") or extending.owner, match.group("repo"), path)


def _raise_in(exc: ConfigError, origins: dict[str, str], own: str) -> NoReturn:
    """Re-raise a schema error naming the file its key (or the nearest section above it) came from."""
    key = exc.key
    while key and key not in origins:
        key = key.rpartition(".")[0]
    raise exc.in_file(origins.get(key, own)) from None
