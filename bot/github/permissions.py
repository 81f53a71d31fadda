"""Who may make nofx act: repository permission from GitHub, and never bots or the App itself."""

from __future__ import annotations

from typing import Any

from gidgethub import BadRequest
from gidgethub.abc import GitHubAPI

from bot.github.repos import TextCache
from bot.github.threads import Thread
from bot.repo_config import PERMISSION_ORDER

# How long a sender's permission is taken as known: a revoked collaborator can still command nofx this much later.
# nofx receives no `member` events (they need the organization's Members permission): expiry is the only bound.
PERMISSION_CACHE_TTL_S = 60


async def sender_permission(gh: GitHubAPI, thread: Thread, sender: dict[str, Any], cache: TextCache) -> str:
    """`permission_of` the event's sender, remembered for PERMISSION_CACHE_TTL_S, so a burst of commands in a
    repository asks GitHub once. Keyed by installation and by GitHub's ids of the repository and the user where the
    payload has them, and by login (a renamed login or repository, or a name taken over, never inherits an entry)."""
    login = str(sender["login"])
    repository = thread.repository_id or thread.full_name.lower()
    key = f"nofx:permission:{thread.installation_id}:{repository}:{sender.get('id')}:{login.lower()}"
    if (hit := cache.text(key)) is not None:
        return hit
    permission = await permission_of(gh, thread.owner, thread.repo, login)
    cache.keep_text(key, permission, PERMISSION_CACHE_TTL_S)
    return permission


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
