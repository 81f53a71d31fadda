"""Pull request events that start a review: new, reopened, out of draft or pushed to, and a person's request."""

from __future__ import annotations

import logging
from typing import Any

from gidgethub import routing, sansio
from gidgethub.abc import GitHubAPI

from bot import logs
from bot.events.answers import reply
from bot.events.context import EventContext
from bot.github import repos
from bot.github.threads import Thread
from bot.models import AppIdentity, ReviewKind, ReviewPass
from bot.render.replies import nothing_to_do
from bot.repo_config import ConfigError, RepoConfig
from bot.review import outsiders
from bot.review.pass_records import add_pass, get_pass
from bot.review.publish import CHECK_NAME
from bot.store import Store

router = routing.Router()
log = logging.getLogger(__name__)
SKIP_NOTICE_TTL_S = 30 * 24 * 3600


@router.register("pull_request", action="opened")
@router.register("pull_request", action="reopened")
@router.register("pull_request", action="ready_for_review")
@router.register("pull_request", action="synchronize")
async def review_updated_pull_request(event: sansio.Event, ctx: EventContext) -> None:
    """Review automatically when `review.auto` is on: new, reopened, out of draft, or new commits pushed.

    Pushes by nofx itself are reviewed too: the review only comments, so reviewing its own work is harmless.
    """
    pull = event.data["pull_request"]
    if pull.get("state", "open") != "open":
        return
    thread = Thread.from_payload(event.data)
    if ctx.github is None:
        raise RuntimeError("the GitHub App is not configured (GITHUB_APP_ID and a private key are required)")
    gh = ctx.github.installation_client(thread.installation_id)
    try:
        config = await repos.load_config(gh, thread, ctx.queue.shared)
    except ConfigError as exc:  # nobody asked: no comment, the next `/nofx` command reports the error
        log.info("invalid repository config, no automatic review: %s", exc)
        return
    if not config.review.auto or (pull.get("draft") and not config.review.drafts):
        return
    author = (pull.get("user") or {}).get("login") or ""
    skipped = await outsiders.why_not_review(ctx.store, gh, thread, config, author)
    if skipped is not None:
        log.info("automatic review skipped: %s", skipped)
        await _say_once(ctx, gh, thread, skipped)
        return
    action = event.data["action"]
    kind = ReviewKind.incremental if action == "synchronize" else ReviewKind.full
    requested_by = event.data["sender"]["login"]
    _queued(ctx, add_pass(ctx.store, thread, config, pull, kind=kind, trigger=action, requested_by=requested_by))


async def request_review(
    ctx: EventContext, gh: GitHubAPI, thread: Thread, config: RepoConfig, *, trigger: str, requested_by: str
) -> ReviewPass | None:
    """A full review asked for by a person (`/nofx review`, the label, Re-run); None if the PR is not open."""
    pull = await repos.pull_request(gh, thread)
    if pull.get("state") != "open":
        return None
    review = add_pass(ctx.store, thread, config, pull, kind=ReviewKind.full, trigger=trigger, requested_by=requested_by)
    return _queued(ctx, review)


async def _say_once(ctx: EventContext, gh: GitHubAPI, thread: Thread, why: str) -> None:
    """Tell the pull request once why it is not reviewed; later skips stay quiet (no rate limit spent on them)."""
    key = f"nofx:review-skipped:{thread.installation_id}:{thread.full_name.lower()}#{thread.number}"
    if ctx.queue.shared.claim(key, SKIP_NOTICE_TTL_S):
        await reply(gh, thread, nothing_to_do(why))


def _queued(ctx: EventContext, review: ReviewPass) -> ReviewPass:
    """Queue the job of a pass just recorded (`add_pass`)."""
    ctx.queue.enqueue_review(review.id)
    log.info(
        "review pass queued", extra=logs.fields(review_pass=review.id, kind=review.kind.value, trigger=review.trigger)
    )
    return review


def pass_of_check(store: Store, check_run: dict[str, Any], app: AppIdentity | None) -> ReviewPass | None:
    """The pass behind one of this App's "nofx review" check runs (for its Re-run button), or None."""
    if check_run.get("name") != CHECK_NAME:
        return None
    app_id = (check_run.get("app") or {}).get("id")
    if app is not None and app_id is not None and app_id != app.id:
        return None  # another App's check of the same name
    external_id = check_run.get("external_id") or ""
    return get_pass(store, external_id) if external_id else None
