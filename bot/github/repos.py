"""What nofx reads from a repository through the API: its config file and the head of a branch."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from gidgethub import BadRequest
from gidgethub.abc import GitHubAPI

from bot.github.threads import Thread
from bot.repo_config import CONFIG_PATH, MAX_CONFIG_BYTES, ConfigError, RepoConfig, parse_config


async def load_config(gh: GitHubAPI, thread: Thread) -> RepoConfig:
    """`.github/nofx.yml` from the default branch; defaults when it is missing. Raises ConfigError."""
    try:
        data = await gh.getitem(
            "/repos/{owner}/{repo}/contents/{+path}{?ref}",
            url_vars={"owner": thread.owner, "repo": thread.repo, "path": CONFIG_PATH, "ref": thread.default_branch},
        )
    except BadRequest as exc:
        if exc.status_code == 404:
            return parse_config(None)
        raise
    if not isinstance(data, dict) or data.get("type") != "file":
        raise ConfigError("(file)", f"{CONFIG_PATH} is not a file", "a YAML file")
    if (data.get("size") or 0) > MAX_CONFIG_BYTES:
        raise ConfigError("(file)", f"is {data['size']} bytes", f"at most {MAX_CONFIG_BYTES} bytes")
    try:
        text = base64.b64decode(data.get("content") or "").decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise ConfigError("(file)", "is not UTF-8 text", "a UTF-8 YAML file") from None
    return parse_config(text)


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
