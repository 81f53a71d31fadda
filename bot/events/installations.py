"""Keep the Installation and Repository tables current: from `installation*` events, from the API when a
delivery names an installation nofx never heard of, and from a full sync when a worker starts."""

from __future__ import annotations

import logging
from typing import Any

from gidgethub import BadRequest, routing, sansio
from sqlmodel import Session, col, select

from bot.events.context import EventContext
from bot.github.client import GitHubApp
from bot.models import Installation, Repository, utcnow
from bot.store import Store, upsert

router = routing.Router()
log = logging.getLogger(__name__)


@router.register("installation", action="created")
@router.register("installation", action="new_permissions_accepted")
@router.register("installation", action="unsuspend")
async def record_installation(event: sansio.Event, ctx: EventContext) -> None:
    """An App was installed (or resumed): remember the account and the repositories granted."""
    with ctx.store.session() as session:
        installation = save_installation(session, event.data["installation"], suspended=False)
        for repo in event.data.get("repositories") or []:
            save_repository(session, installation.id, repo)
    log.info("installation recorded")


@router.register("installation", action="suspend")
async def suspend_installation(event: sansio.Event, ctx: EventContext) -> None:
    """A suspended installation keeps its rows but triggers nothing until unsuspended."""
    with ctx.store.session() as session:
        save_installation(session, event.data["installation"], suspended=True)
    log.info("installation suspended")


@router.register("installation", action="deleted")
async def remove_installation(event: sansio.Event, ctx: EventContext) -> None:
    """The App was uninstalled: mark the installation and its repositories removed."""
    with ctx.store.session() as session:
        installation = save_installation(session, event.data["installation"], suspended=False)
        installation.removed = True
        for repo in session.exec(select(Repository).where(Repository.installation_id == installation.id)):
            repo.removed = True
            repo.updated_at = utcnow()
    log.info("installation removed")


@router.register("installation_repositories", action="added")
@router.register("installation_repositories", action="removed")
async def update_repositories(event: sansio.Event, ctx: EventContext) -> None:
    """Repositories were granted or withdrawn; also learns an installation we had missed."""
    with ctx.store.session() as session:
        installation = save_installation(session, event.data["installation"])
        for repo in event.data.get("repositories_added") or []:
            save_repository(session, installation.id, repo)
        for repo in event.data.get("repositories_removed") or []:
            save_repository(session, installation.id, repo).removed = True
    log.info("installation repositories updated")


async def learn(ctx: EventContext, installation_id: int, repository: dict[str, Any] | None) -> str | None:
    """Make sure nofx knows the installation a delivery names; returns why to ignore the delivery, or None.

    Known and active: nothing to do. Unknown or marked removed: `GET /app/installations/{id}` says whether it
    exists (and is suspended); it is recorded with the delivery's repository.
    """
    state = select(Installation.suspended, Installation.removed).where(Installation.id == installation_id)
    with ctx.store.autocommit() as conn:  # one round trip on every delivery's way to 👀
        known = conn.execute(state).one_or_none()
    if known is not None and not known.removed:
        return f"installation {installation_id} is suspended" if known.suspended else None
    if ctx.github is None:
        return f"installation {installation_id} is not known to nofx and the GitHub App is not configured"
    try:
        data = await ctx.github.app_client().getitem(
            "/app/installations/{installation_id}", url_vars={"installation_id": str(installation_id)}
        )
    except BadRequest as exc:
        if exc.status_code == 404:
            return f"installation {installation_id} does not exist on GitHub for this App"
        raise
    suspended = bool(data.get("suspended_at"))
    with ctx.store.session() as session:
        save_installation(session, data, suspended=suspended)
        if repository is not None and isinstance(repository.get("id"), int):
            save_repository(session, installation_id, repository)
    log.info("learned installation %s from GitHub", installation_id)
    return f"installation {installation_id} is suspended" if suspended else None


async def sync(store: Store, github: GitHubApp) -> tuple[int, int]:
    """Record every installation of the App and the repositories each grants; mark the rest removed.

    Workers run this at start, so installations and repositories changed while nofx was down are current.
    Returns (installations, repositories) seen.
    """
    seen: set[int] = set()
    repositories = 0
    async for data in github.app_client().getiter("/app/installations"):
        suspended = bool(data.get("suspended_at"))
        with store.session() as session:
            save_installation(session, data, suspended=suspended)
        seen.add(int(data["id"]))
        if not suspended:
            repositories += await _sync_repositories(store, github, int(data["id"]))
    with store.session() as session:
        for gone in session.exec(select(Installation).where(col(Installation.id).not_in(seen or {0}))):
            gone.removed, gone.updated_at = True, utcnow()
    return len(seen), repositories


async def _sync_repositories(store: Store, github: GitHubApp, installation_id: int) -> int:
    seen: set[int] = set()
    client = github.installation_client(installation_id)
    async for data in client.getiter("/installation/repositories", iterable_key="repositories"):
        with store.session() as session:
            save_repository(session, installation_id, data)
        seen.add(int(data["id"]))
    with store.session() as session:
        stale = select(Repository).where(
            Repository.installation_id == installation_id, col(Repository.id).not_in(seen or {0})
        )
        for gone in session.exec(stale):
            gone.removed, gone.updated_at = True, utcnow()
    return len(seen)


def save_installation(session: Session, data: dict[str, Any], *, suspended: bool | None = None) -> Installation:
    """Insert or update an installation from GitHub's JSON in one statement (workers may write it at once)."""
    account = data.get("account") or {}
    values: dict[str, Any] = {
        "id": data["id"],
        "account_login": account.get("login") or account.get("slug") or "",
        "removed": False,
        "updated_at": utcnow(),
    }
    for column, value in (
        ("account_id", account.get("id")),
        ("account_type", account.get("type")),
        ("repository_selection", data.get("repository_selection")),
        ("suspended", suspended),
    ):
        if value is not None:
            values[column] = value
    # A payload without the account (rare) must not blank the login recorded earlier.
    upsert(
        session, Installation, values, keys=["id"], insert_only=() if values["account_login"] else ("account_login",)
    )
    installation = session.get(Installation, data["id"], populate_existing=True)
    assert installation is not None
    return installation


def save_repository(session: Session, installation_id: int, data: dict[str, Any]) -> Repository:
    """Insert or update a repository the installation grants, in one statement."""
    values: dict[str, Any] = {
        "id": data["id"],
        "installation_id": installation_id,
        "full_name": data.get("full_name") or "",
        "private": bool(data.get("private", False)),
        "removed": False,
        "updated_at": utcnow(),
    }
    upsert(session, Repository, values, keys=["id"])
    repository = session.get(Repository, data["id"], populate_existing=True)
    assert repository is not None
    return repository
