"""Keep the Installation and Repository tables current from `installation*` events."""

from __future__ import annotations

import logging
from typing import Any

from gidgethub import routing, sansio
from sqlmodel import Session, select

from bot.events.context import EventContext
from bot.models import Installation, Repository, utcnow
from bot.store import Store

router = routing.Router()
log = logging.getLogger(__name__)


@router.register("installation", action="created")
@router.register("installation", action="new_permissions_accepted")
@router.register("installation", action="unsuspend")
async def record_installation(event: sansio.Event, ctx: EventContext) -> None:
    """An App was installed (or resumed): remember the account and the repositories granted."""
    with ctx.store.session() as session:
        installation = _upsert_installation(session, event.data["installation"], suspended=False)
        for repo in event.data.get("repositories") or []:
            _upsert_repository(session, installation.id, repo)
    log.info("installation recorded")


@router.register("installation", action="suspend")
async def suspend_installation(event: sansio.Event, ctx: EventContext) -> None:
    """A suspended installation keeps its rows but triggers nothing until unsuspended."""
    with ctx.store.session() as session:
        _upsert_installation(session, event.data["installation"], suspended=True)
    log.info("installation suspended")


@router.register("installation", action="deleted")
async def remove_installation(event: sansio.Event, ctx: EventContext) -> None:
    """The App was uninstalled: mark the installation and its repositories removed."""
    with ctx.store.session() as session:
        installation = _upsert_installation(session, event.data["installation"], suspended=False)
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
        installation = _upsert_installation(session, event.data["installation"])
        for repo in event.data.get("repositories_added") or []:
            _upsert_repository(session, installation.id, repo)
        for repo in event.data.get("repositories_removed") or []:
            _upsert_repository(session, installation.id, repo).removed = True
    log.info("installation repositories updated")


def ignore_reason(store: Store, installation_id: int | None, event: str) -> str | None:
    """Why a delivery for this installation is not acted on, or None if nofx serves it."""
    if event in ("installation", "installation_repositories"):
        return None
    if installation_id is None:
        return "no installation in the payload"
    with store.session() as session:
        installation = session.get(Installation, installation_id)
    if installation is None or installation.removed:
        return f"installation {installation_id} is not known to nofx"
    if installation.suspended:
        return f"installation {installation_id} is suspended"
    return None


def _upsert_installation(session: Session, data: dict[str, Any], *, suspended: bool | None = None) -> Installation:
    account = data.get("account") or {}
    installation = session.get(Installation, data["id"]) or Installation(id=data["id"], account_login="")
    installation.account_login = account.get("login") or account.get("slug") or installation.account_login
    installation.account_id = account.get("id", installation.account_id)
    installation.account_type = account.get("type", installation.account_type)
    installation.repository_selection = data.get("repository_selection", installation.repository_selection)
    installation.removed = False
    if suspended is not None:
        installation.suspended = suspended
    installation.updated_at = utcnow()
    session.add(installation)
    session.flush()
    return installation


def _upsert_repository(session: Session, installation_id: int, data: dict[str, Any]) -> Repository:
    repo = session.get(Repository, data["id"]) or Repository(
        id=data["id"], installation_id=installation_id, full_name=""
    )
    repo.installation_id = installation_id
    repo.full_name = data.get("full_name") or repo.full_name
    repo.private = bool(data.get("private", repo.private))
    repo.removed = False
    repo.updated_at = utcnow()
    session.add(repo)
    return repo
