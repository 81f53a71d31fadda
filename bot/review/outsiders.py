"""Automatic reviews of pull requests by people without the trigger permission (outsiders, forks).

Anyone can open a pull request, and each automatic review costs the installation model money. So for an author
below `trigger.min_permission`, `review.outsiders` decides (`review` or `ignore`), each outsider gets at most
`review.outsider_passes_per_hour` automatic passes in any hour, and none run once the installation's reviews
cost `review.max_daily_cost_usd` in the last 24 hours. A person with the permission can still ask for a review.
"""

from __future__ import annotations

from datetime import timedelta

from gidgethub.abc import GitHubAPI
from sqlalchemy import func
from sqlmodel import col, select

from bot.github.permissions import permission_of
from bot.github.threads import Thread
from bot.models import ReviewPass, utcnow
from bot.repo_config import RepoConfig, permission_reaches
from bot.store import Store

AUTOMATIC_TRIGGERS = ("opened", "reopened", "ready_for_review", "synchronize")


async def why_not_review(store: Store, gh: GitHubAPI, thread: Thread, config: RepoConfig, author: str) -> str | None:
    """None if an automatic review of `author`'s pull request may run; else why not, for the pull request."""
    permission = await permission_of(gh, thread.owner, thread.repo, author)
    if permission_reaches(permission, config.trigger.min_permission):
        return None
    review = config.review
    if review.outsiders == "ignore":
        return (
            f"nofx does not review pull requests by people without `{config.trigger.min_permission}` permission "
            "automatically here (`review.outsiders: ignore`); someone with it can ask with `/nofx review`."
        )
    recent = _count_passes(store, thread.installation_id, author, timedelta(hours=1))
    if recent >= review.outsider_passes_per_hour:
        return (
            f"@{author} reached the limit of {review.outsider_passes_per_hour} automatic review(s) an hour "
            "(`review.outsider_passes_per_hour`); later pushes are reviewed again once the hour has passed, or "
            "someone with permission can ask with `/nofx review`."
        )
    spent = _cost_since(store, thread.installation_id, timedelta(days=1))
    if spent >= review.max_daily_cost_usd:
        return (
            f"this installation's reviews cost {spent:.2f} USD in the last 24 hours, the limit for pull requests "
            f"by people without permission (`review.max_daily_cost_usd`: {review.max_daily_cost_usd:g})."
        )
    return None


def _count_passes(store: Store, installation_id: int, author: str, window: timedelta) -> int:
    with store.session() as session:
        count = session.exec(
            select(func.count())
            .select_from(ReviewPass)
            .where(
                col(ReviewPass.installation_id) == installation_id,
                col(ReviewPass.author) == author,
                col(ReviewPass.trigger).in_(AUTOMATIC_TRIGGERS),
                col(ReviewPass.created_at) > utcnow() - window,
            )
        ).one()
    return int(count)


def _cost_since(store: Store, installation_id: int, window: timedelta) -> float:
    with store.session() as session:
        total = session.exec(
            select(func.coalesce(func.sum(ReviewPass.cost_usd), 0.0)).where(
                col(ReviewPass.installation_id) == installation_id,
                col(ReviewPass.created_at) > utcnow() - window,
            )
        ).one()
    return float(total)
