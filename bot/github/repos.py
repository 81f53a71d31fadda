"""What nofx reads from a repository through the API: its config file and the head of a branch."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Protocol

from gidgethub import BadRequest
from gidgethub.abc import GitHubAPI

from bot import config_inheritance
from bot.config_inheritance import ConfigFile
from bot.github.threads import Thread
from bot.repo_config import MAX_CONFIG_BYTES, ConfigError, RepoConfig
from bot.single_flight import SingleFlight

CONFIG_CACHE_TTL_S = 24 * 3600
# How long the default branch's head is taken as known: a config pushed to it applies to commands this much later
# at most. Kept per installation: one installation's answer (or access) never serves another's.
HEAD_CACHE_TTL_S = 60
_HEADS: SingleFlight[str | None] = SingleFlight()  # a burst in one repository asks GitHub for its head once


async def load_config(gh: GitHubAPI, thread: Thread, cache: TextCache | None = None) -> RepoConfig:
    """The effective `.github/nofx.yml` (own, else the organization's, with `_extends` bases). Raises ConfigError.

    Each file is read at its repository's default-branch head; with a `cache` (the queue's server) a file is read once
    per commit, and the head is looked up once per HEAD_CACHE_TTL_S per installation, so a burst of comments in a
    repository costs no GitHub call at all after the first.
    """
    reader = _ConfigReader(gh, thread, cache)
    return await config_inheritance.resolve(reader.read, thread.owner, thread.repo)


class TextCache(Protocol):
    """What the config cache needs (`bot.queue.SharedState` on the queue's server)."""

    def text(self, key: str) -> str | None: ...

    def keep_text(self, key: str, text: str, ttl_s: int) -> None: ...


class _ConfigReader:
    """Reads config files for one event: head commit first (which also proves access), then the cache or the file."""

    def __init__(self, gh: GitHubAPI, thread: Thread, cache: TextCache | None) -> None:
        self.gh, self.thread, self.cache = gh, thread, cache

    async def read(self, file: ConfigFile) -> str | None:
        head = await self._head(file.owner, file.repo)
        if head is None:
            if self._is_own(file.owner, file.repo):  # an empty repository, or a branch renamed a moment ago
                return await self._file_at(file, self.thread.default_branch)
            return None
        key = f"nofx:config:{file.owner.lower()}/{file.repo.lower()}@{head}:{file.path}"
        if self.cache is not None and (hit := self.cache.text(key)) is not None:
            cached: str | None = json.loads(hit)["text"]
            return cached
        text = await self._file_at(file, head)
        if self.cache is not None:
            self.cache.keep_text(key, json.dumps({"text": text}), CONFIG_CACHE_TTL_S)
        return text

    async def _head(self, owner: str, repo: str) -> str | None:
        """The default branch's head commit, or None when the repository cannot be read or is empty; remembered for
        HEAD_CACHE_TTL_S under the installation (and the branch the event names, for the event's own repository)."""
        branch = f"@{self.thread.default_branch}" if self._is_own(owner, repo) else ""
        key = f"nofx:head:{self.thread.installation_id}:{owner.lower()}/{repo.lower()}{branch}"
        if self.cache is not None and (hit := self.cache.text(key)) is not None:
            cached: str | None = json.loads(hit)["sha"]
            return cached
        return await _HEADS.do(key, lambda: self._head_to_cache(key, owner, repo))

    async def _head_to_cache(self, key: str, owner: str, repo: str) -> str | None:
        head = await self._head_from_github(owner, repo)
        if self.cache is not None:
            self.cache.keep_text(key, json.dumps({"sha": head}), HEAD_CACHE_TTL_S)
        return head

    async def _head_from_github(self, owner: str, repo: str) -> str | None:
        try:
            if self._is_own(owner, repo):
                branch = self.thread.default_branch
            else:
                meta = await self.gh.getitem("/repos/{owner}/{repo}", url_vars={"owner": owner, "repo": repo})
                branch = str(meta["default_branch"])
            data = await self.gh.getitem(
                "/repos/{owner}/{repo}/branches/{branch}", url_vars={"owner": owner, "repo": repo, "branch": branch}
            )
        except BadRequest as exc:
            if exc.status_code in (403, 404):
                return None
            raise
        return str(data["commit"]["sha"])

    def _is_own(self, owner: str, repo: str) -> bool:
        return (owner.lower(), repo.lower()) == (self.thread.owner.lower(), self.thread.repo.lower())

    async def _file_at(self, file: ConfigFile, ref: str) -> str | None:
        try:
            data = await self.gh.getitem(
                "/repos/{owner}/{repo}/contents/{+path}{?ref}",
                url_vars={"owner": file.owner, "repo": file.repo, "path": file.path, "ref": ref},
            )
        except BadRequest as exc:
            if exc.status_code == 404:
                return None
            raise
        if not isinstance(data, dict) or data.get("type") != "file":
            raise ConfigError("(file)", "is not a file", "a YAML file", file=file.label)
        if (data.get("size") or 0) > MAX_CONFIG_BYTES:
            raise ConfigError(
                "(file)", f"is {data['size']} bytes", f"at most {MAX_CONFIG_BYTES} bytes", file=file.label
            )
        try:
            return base64.b64decode(data.get("content") or "").decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise ConfigError("(file)", "is not UTF-8 text", "a UTF-8 YAML file", file=file.label) from None


async def branch_head(gh: GitHubAPI, thread: Thread, branch: str) -> str:
    """The commit a run on an issue concerns: the head of the default branch when it starts."""
    data = await gh.getitem(
        "/repos/{owner}/{repo}/branches/{branch}",
        url_vars={"owner": thread.owner, "repo": thread.repo, "branch": branch},
    )
    return str(data["commit"]["sha"])


async def pull_request(gh: GitHubAPI, thread: Thread) -> dict[str, Any]:
    """The pull request of a thread (its head and base branches and commits)."""
    data: dict[str, Any] = await gh.getitem(
        "/repos/{owner}/{repo}/pulls/{pull_number}",
        url_vars={"owner": thread.owner, "repo": thread.repo, "pull_number": thread.number},
    )
    return data
