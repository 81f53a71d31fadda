"""Automatic reviews of pull requests by people without the trigger permission (issue 10, finding 5): they follow
`review.outsiders`, a per-author hourly limit and the installation's daily budget, and what is skipped is said once
on the pull request. Through signed `pull_request` deliveries, a real worker and the model double."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from bot.models import ReviewKind, ReviewPass, new_id
from bot.settings import Settings
from bot.store import Store
from tests.conftest import OWNER, REPO, Deliverer, with_model
from tests.review.test_reviews import PullRequest, answer, changed_app, finding, passes
from tests.support.git_server import GitServer
from tests.support.github_double import GitHubDouble
from tests.support.llm_double import AnthropicDouble
from tests.support.payloads import load_payload

CONFIG = ".github/nofx.yml"
COMMENTS = "/repos/{owner}/{repo}/issues/{issue_number}/comments"


@pytest.fixture
def settings(settings: Settings, llm: AnthropicDouble) -> Settings:
    return with_model(settings, llm)


@pytest.fixture(autouse=True)
def _installed(installed: Callable[[dict[str, Any]], None], github: GitHubDouble) -> None:
    installed(load_payload("pull_request.opened"))
    github.permissions[(OWNER, REPO, "mallory")] = "read"


def notices(github: GitHubDouble) -> list[str]:
    return [call.json["body"] for call in github.calls("POST", COMMENTS)]


def test_an_outsider_gets_at_most_the_hourly_limit_of_automatic_reviews(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
) -> None:
    github.files[(OWNER, REPO, CONFIG, None)] = "review:\n  outsider_passes_per_hour: 1\n"
    pull = PullRequest(github, git, user="mallory")
    pull.push({"app.py": changed_app()})
    answer(llm, finding(30))
    deliver("pull_request", pull.event("opened"))
    for n in range(2):
        pull.push({"app.py": changed_app(text=f"compute({n})")})
        deliver("pull_request", pull.event("synchronize"))
    work()

    assert len(passes(store)) == 1
    [notice] = notices(github)
    assert "mallory reached the limit of 1 automatic review(s) an hour" in notice  # the @ defused: no ping


def test_outsiders_ignore_reviews_nothing_and_says_so_once(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
) -> None:
    github.files[(OWNER, REPO, CONFIG, None)] = "review:\n  outsiders: ignore\n"
    pull = PullRequest(github, git, user="mallory")
    pull.push({"app.py": changed_app()})
    deliver("pull_request", pull.event("opened"))
    pull.push({"app.py": changed_app(text="again()")})
    deliver("pull_request", pull.event("synchronize"))
    work()

    assert passes(store) == [] and llm.requests == []
    [notice] = notices(github)
    assert "review.outsiders: ignore" in notice


def test_outsiders_wait_once_the_installations_daily_review_budget_is_spent(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
) -> None:
    github.files[(OWNER, REPO, CONFIG, None)] = "review:\n  max_daily_cost_usd: 0.5\n"
    installation_id = load_payload("pull_request.opened")["installation"]["id"]
    with store.session() as session:  # earlier reviews of the installation today
        session.add(
            ReviewPass(
                id=new_id(),
                installation_id=installation_id,
                repository=f"{OWNER}/{REPO}",
                pull_number=99,
                base_sha="0" * 40,
                head_sha="1" * 40,
                kind=ReviewKind.full,
                trigger="opened",
                config={},
                cost_usd=0.75,
            )
        )
    pull = PullRequest(github, git, user="mallory")
    pull.push({"app.py": changed_app()})
    deliver("pull_request", pull.event("opened"))
    work()

    assert len(passes(store)) == 1  # only the seeded one
    [notice] = notices(github)
    assert "`review.max_daily_cost_usd`: 0.5" in notice
