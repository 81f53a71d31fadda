"""The pull-request router alone: a signed `pull_request` event from GitHub's example payload, dispatched to
`bot.events.pull_requests.router` with the worker's real context (gidgethub client on the GitHub double)."""

from __future__ import annotations

from typing import Any

from sqlmodel import select

from bot.events import pull_requests
from bot.models import ReviewKind, ReviewPass, ReviewStatus
from bot.queue import WorkQueue
from bot.store import Store
from bot.worker.runtime import Runtime
from tests.support.github_double import GitHubDouble
from tests.support.payloads import load_payload, signed_event


def dispatch(runtime: Runtime, **overrides: Any) -> dict[str, Any]:
    payload = load_payload("pull_request.opened", **overrides)
    runtime.run(pull_requests.router.dispatch(signed_event("pull_request", payload), runtime.context()))
    return payload


def passes(store: Store) -> list[ReviewPass]:
    with store.session() as session:
        return list(session.exec(select(ReviewPass)).all())


def test_an_opened_pull_request_starts_a_review_pass(
    runtime: Runtime, github: GitHubDouble, store: Store, queue: WorkQueue
) -> None:
    payload = dispatch(runtime)

    pull = payload["pull_request"]
    [review] = passes(store)
    assert (review.repository, review.pull_number, review.installation_id) == (
        payload["repository"]["full_name"],
        pull["number"],
        payload["installation"]["id"],
    )
    assert (review.base_sha, review.head_sha) == (pull["base"]["sha"], pull["head"]["sha"])
    assert (review.kind, review.status, review.trigger) == (ReviewKind.full, ReviewStatus.queued, "opened")
    assert review.requested_by == payload["sender"]["login"]
    assert queue.reviews.job_ids == [f"review-{review.id}"]  # the pass itself runs in the review job
    # the repository's config is read (an installation token first); nothing is written to the repository yet
    assert {call.method for call in github.calls() if call.template.startswith("/repos")} == {"GET"}


def test_a_draft_pull_request_is_not_reviewed_by_default(
    runtime: Runtime, github: GitHubDouble, store: Store, queue: WorkQueue
) -> None:
    dispatch(runtime, pull_request={"draft": True})

    assert passes(store) == []
    assert queue.reviews.count == 0
