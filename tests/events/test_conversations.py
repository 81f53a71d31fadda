"""`/nofx` commands end to end: signed delivery → real app → real queue and worker → calls on the GitHub double."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlmodel import select

from bot.models import Run
from bot.store import Store
from tests.conftest import Deliverer
from tests.support.github_double import GitHubDouble
from tests.support.payloads import load_payload

OWNER, REPO = "Codertocat", "Hello-World"
COMMENTS = "/repos/{owner}/{repo}/issues/{issue_number}/comments"
COMMENT_REACTIONS = "/repos/{owner}/{repo}/issues/comments/{comment_id}/reactions"


def comment(body: str, **overrides: Any) -> dict[str, Any]:
    return load_payload("issue_comment.created", comment__body=body, **overrides)


pytestmark = pytest.mark.usefixtures("example_installation")


def _posted(github: GitHubDouble) -> list[str]:
    return [call.json["body"] for call in github.calls("POST", COMMENTS)]


def _run_count(store: Store) -> int:
    with store.session() as session:
        return len(session.exec(select(Run)).all())


def test_help_is_acknowledged_with_eyes_and_answered(
    deliver: Deliverer, work: Callable[..., None], github: GitHubDouble
) -> None:
    payload = comment("/nofx help")
    deliver("issue_comment", payload)
    work()

    reactions = github.calls("POST", COMMENT_REACTIONS)
    assert [(r.path_params["comment_id"], r.json) for r in reactions] == [
        (payload["comment"]["id"], {"content": "eyes"})
    ]
    [reply] = _posted(github)
    assert "/nofx approve" in reply and "/nofx plan" in reply
    assert github.calls("POST", COMMENTS)[0].installation_id == payload["installation"]["id"]


def test_reaction_comes_before_anything_slow(
    deliver: Deliverer, work: Callable[..., None], github: GitHubDouble
) -> None:
    deliver("issue_comment", comment("/nofx help"))
    work()
    repo_calls = [c.template for c in github.calls() if c.template.startswith("/repos")]
    assert repo_calls.index(COMMENT_REACTIONS) < repo_calls.index(COMMENTS)
    # Only the config (own file, else the organization's; heads key the cache) and the sender's permission were
    # read before the reaction: people without the permission get no 👀 (issue 10).
    config_reads = {
        "/repos/{owner}/{repo}/contents/{path}",
        "/repos/{owner}/{repo}/branches/{branch}",
        "/repos/{owner}/{repo}",
        "/repos/{owner}/{repo}/collaborators/{username}/permission",
    }
    assert set(repo_calls[: repo_calls.index(COMMENT_REACTIONS)]) == config_reads


def test_reader_is_refused_once_and_nothing_else_happens(
    deliver: Deliverer, work: Callable[..., None], github: GitHubDouble, store: Store
) -> None:
    github.permissions[(OWNER, REPO, "Codertocat")] = "read"
    deliver("issue_comment", comment("/nofx add a cart"))
    work()

    [reply] = _posted(github)
    assert reply.startswith("@Codertocat, only people with *write* access")
    assert _run_count(store) == 0
    assert not github.calls("POST", "/repos/{owner}/{repo}/check-runs")
    templates = [c.template for c in github.calls() if c.template.startswith("/repos")]
    after_check = templates[templates.index("/repos/{owner}/{repo}/collaborators/{username}/permission") + 1 :]
    assert after_check == [COMMENTS]  # no branch of the run was looked up


@pytest.mark.parametrize(
    "sender",
    [
        {"login": "dependabot[bot]", "id": 49699333, "type": "Bot"},
        {"login": "renovate", "id": 2, "type": "Bot"},
    ],
)
def test_bots_never_trigger(
    deliver: Deliverer, work: Callable[..., None], github: GitHubDouble, sender: dict[str, Any]
) -> None:
    deliver("issue_comment", comment("/nofx add a cart", sender=sender))
    work()
    assert [c for c in github.calls() if c.template.startswith("/repos")] == []


def test_the_apps_own_comment_never_triggers(
    deliver: Deliverer, work: Callable[..., None], github: GitHubDouble
) -> None:
    work()  # the worker learns the App's identity from GET /app
    app_id = github.calls("GET", "/app")[0].response["id"]
    own = comment("/nofx retry", comment__performed_via_github_app={"id": app_id, "slug": "nofx-test"})
    deliver("issue_comment", own)
    work()
    assert [c for c in github.calls() if c.template.startswith("/repos")] == []


def test_edited_comment_does_not_retrigger(deliver: Deliverer, github: GitHubDouble, client: Any) -> None:
    edited = load_payload("issue_comment.edited", comment__body="/nofx add a cart")
    edited["installation"] = {"id": 1}
    response = deliver("issue_comment", edited)
    assert response.json()["status"] == "ignored"


@pytest.mark.parametrize(
    "body",
    [
        "Let's do this:\n```\n/nofx add a cart\n```",
        "> /nofx add a cart\n\nNo thanks.",
        "/nofxy add a cart",
        "please /nofx add a cart",
    ],
)
def test_text_that_is_not_a_command_starts_nothing(
    deliver: Deliverer, work: Callable[..., None], github: GitHubDouble, body: str
) -> None:
    deliver("issue_comment", comment(body))
    work()
    assert not github.calls("POST", COMMENT_REACTIONS)
    assert not github.calls("POST", COMMENTS)


def test_invalid_config_is_answered_with_the_bad_key_and_runs_nothing(
    deliver: Deliverer, work: Callable[..., None], github: GitHubDouble, store: Store
) -> None:
    github.files[(OWNER, REPO, ".github/nofx.yml", None)] = "review:\n  fail_on: severe\n"
    deliver("issue_comment", comment("/nofx add a cart"))
    work()

    [reply] = _posted(github)
    assert "review.fail_on" in reply and "severe" in reply
    assert "low, medium, high, critical, never" in reply
    assert _run_count(store) == 0


def test_custom_prefix_from_the_repo_config(
    deliver: Deliverer, work: Callable[..., None], github: GitHubDouble
) -> None:
    github.files[(OWNER, REPO, ".github/nofx.yml", None)] = "trigger: {command: /bot}\n"
    deliver("issue_comment", comment("/bot help"))
    work()
    [reply] = _posted(github)
    assert "/bot approve" in reply


def test_approve_without_a_waiting_run_says_so(
    deliver: Deliverer, work: Callable[..., None], github: GitHubDouble
) -> None:
    deliver("issue_comment", comment("/nofx approve"))
    work()
    [reply] = _posted(github)
    assert "no run waiting for approval" in reply


def test_reader_may_not_approve(deliver: Deliverer, work: Callable[..., None], github: GitHubDouble) -> None:
    github.permissions[(OWNER, REPO, "Codertocat")] = "read"
    deliver("issue_comment", comment("/nofx approve"))
    work()
    [reply] = _posted(github)
    assert "Codertocat" in reply and "approve" in reply
