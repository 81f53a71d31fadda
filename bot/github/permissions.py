"""Who may make nofx act: repository permission from GitHub, and never bots or the App itself."""

from __future__ import annotations

from typing import Any

from gidgethub import BadRequest
from gidgethub.abc import GitHubAPI

from bot.repo_config import PERMISSION_ORDER


async def permission_of(gh: GitHubAPI, owner: str, repo: str, username: str) -> str:
    """The sender's role on the repository (admin, maintain, write, triage, read) or "none"."""
    try:
        data = await gh.getitem(
            "/repos/{owner}/{repo}/collaborators/{username}/permission",
            url_vars={"owner": owner, "repo": repo, "username": username},
        )
    except BadRequest as exc:
        if exc.status_code == 404:  # not a collaborator (or the user does not exist)
            return "none"
        raise
    # role_name distinguishes maintain/triage, which the legacy `permission` folds into write/read.
    role = data.get("role_name")
    return role if role in PERMISSION_ORDER else data.get("permission") or "none"


def is_automation(sender: dict[str, Any], app_id: int | None, item: dict[str, Any] | None = None) -> bool:
    """True for bots and for the App's own account (`app_id`: this App's id): their comments never trigger anything."""
    if sender.get("type") == "Bot":
        return True
    via_app = (item or {}).get("performed_via_github_app") or {}
    return app_id is not None and via_app.get("id") == app_id
