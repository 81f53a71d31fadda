"""The App's own identity, fetched by workers (never the web process) and kept in the database."""

from __future__ import annotations

from sqlmodel import select

from bot.github import GitHubApp
from bot.models import AppIdentity, utcnow
from bot.store import Store


async def refresh(github: GitHubApp, store: Store) -> AppIdentity:
    """Fetch `GET /app` and store it; the status page and the bot-sender check read it."""
    data = await github.app_client().getitem("/app")
    with store.session() as session:
        identity = session.get(AppIdentity, data["id"]) or AppIdentity(id=data["id"], slug="", name="")
        identity.slug = data.get("slug") or ""
        identity.name = data.get("name") or identity.slug
        identity.html_url = data.get("html_url")
        identity.updated_at = utcnow()
        session.add(identity)
    return identity


def current(store: Store) -> AppIdentity | None:
    """The last identity a worker recorded, or None before any worker has started."""
    with store.session() as session:
        return session.exec(select(AppIdentity).order_by(AppIdentity.updated_at.desc())).first()  # type: ignore[attr-defined]
