"""The App's own identity, fetched by workers (never the web process) and kept in the database."""

from __future__ import annotations

from urllib.parse import urlparse

from gidgethub.abc import GitHubAPI
from sqlmodel import col, select

from bot.github.client import GitHubApp
from bot.models import AppIdentity, utcnow
from bot.store import Store, upsert


async def refresh(github: GitHubApp, store: Store) -> AppIdentity:
    """Fetch `GET /app` and store it; the status page and the bot-sender check read it."""
    data = await github.app_client().getitem("/app")
    slug = data.get("slug") or ""
    values = {
        "id": data["id"],
        "slug": slug,
        "name": data.get("name") or slug,
        "html_url": data.get("html_url"),
        "updated_at": utcnow(),
    }
    # Workers starting together all write this row: an upsert, not read-then-insert (which raced).
    with store.session() as session:
        upsert(session, AppIdentity, values, keys=["id"])
    with store.session() as session:
        identity = session.get(AppIdentity, data["id"])
    assert identity is not None
    return identity


async def bot_author(gh: GitHubAPI, store: Store) -> tuple[str, str]:
    """Name and email that attribute commits to the App's bot account on GitHub."""
    app = current(store)
    if app is None:
        raise RuntimeError("the App's identity is unknown: no worker has fetched GET /app yet")
    login = f"{app.slug}[bot]"
    if app.bot_user_id is None:
        user = await gh.getitem("/users/{username}", url_vars={"username": login})
        with store.session() as session:
            stored = session.get(AppIdentity, app.id)
            if stored is not None:
                stored.bot_user_id = int(user["id"])
                session.add(stored)
        app.bot_user_id = int(user["id"])
    host = urlparse(app.html_url or "https://github.com").hostname or "github.com"
    return login, f"{app.bot_user_id}+{login}@users.noreply.{host}"


def current(store: Store) -> AppIdentity | None:
    """The last identity a worker recorded, or None before any worker has started."""
    with store.session() as session:
        return session.exec(select(AppIdentity).order_by(col(AppIdentity.updated_at).desc())).first()
