"""How event handlers talk back on a thread: the App's client for it, the repository config (or why not), a reply."""

from __future__ import annotations

import logging

from gidgethub.abc import GitHubAPI

from bot.events.context import EventContext
from bot.github import repos
from bot.github.threads import Thread
from bot.render.replies import (
    config_error,
)
from bot.repo_config import ConfigError, RepoConfig

log = logging.getLogger(__name__)


def github_for(ctx: EventContext, thread: Thread) -> GitHubAPI:
    if ctx.github is None:
        raise RuntimeError("the GitHub App is not configured (GITHUB_APP_ID and a private key are required)")
    return ctx.github.installation_client(thread.installation_id)


def own_app_id(ctx: EventContext) -> int | None:
    """This App's id, from the settings its credentials come from (the identity row a worker stores from `GET /app`
    has the same id): no database read on every delivery."""
    app_id = ctx.settings.app_id
    return int(app_id) if app_id and app_id.isdigit() else None


async def config_or_report(gh: GitHubAPI, thread: Thread, ctx: EventContext, *, mentioned: bool) -> RepoConfig | None:
    """The repository's config; an invalid file is reported (only when nofx was addressed, and not by the 👀 pass:
    routing the delivery reports it) and stops here."""
    try:
        return await repos.load_config(gh, thread, ctx.queue.shared)
    except ConfigError as exc:
        log.info("invalid repository config: %s", exc)
        if mentioned and not ctx.acknowledging:
            await reply(gh, thread, config_error(str(exc)))
        return None


async def reply(gh: GitHubAPI, thread: Thread, body: str) -> None:
    await gh.post("/repos/{owner}/{repo}/issues/{issue_number}/comments", url_vars=thread.url_vars, data={"body": body})
