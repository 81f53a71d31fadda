"""The trigger router alone, as bedevere tests its routers: a signed event from a real payload, dispatched to
`bot.events.triggers.router` with the worker's real context (gidgethub client on the GitHub double).

No web process and no queue in between: what is asserted is what this one router does with one event.
"""

from __future__ import annotations

from typing import Any

from gidgethub import sansio
from sqlmodel import select

from bot import deliveries
from bot.events import router, triggers
from bot.models import Run
from bot.queue import WorkQueue
from bot.store import Store
from bot.worker.runtime import Runtime
from tests.support.github_double import GitHubDouble
from tests.support.payloads import load_payload, signed_event

OWNER, REPO, READER = "Codertocat", "Hello-World", "Codertocat"
COMMENTS = "/repos/{owner}/{repo}/issues/{issue_number}/comments"
REACTIONS = "/repos/{owner}/{repo}/issues/comments/{comment_id}/reactions"


def dispatch(runtime: Runtime, body: str) -> dict[str, Any]:
    payload = load_payload("issue_comment.created", comment__body=body)
    runtime.run(triggers.router.dispatch(signed_event("issue_comment", payload), runtime.context()))
    return payload


def replies(github: GitHubDouble) -> list[str]:
    return [call.json["body"] for call in github.calls("POST", COMMENTS)]


def runs(store: Store) -> list[Run]:
    with store.session() as session:
        return list(session.exec(select(Run)).all())


def test_a_readers_command_gets_one_refusal_and_starts_nothing(
    runtime: Runtime, github: GitHubDouble, store: Store, queue: WorkQueue
) -> None:
    github.permissions[(OWNER, REPO, READER)] = "read"
    payload = dispatch(runtime, "/nofx add a cart")

    [reply] = replies(github)
    assert reply.startswith(f"@{READER}, only people with *write* access")
    assert github.calls("POST", COMMENTS)[0].path_params["issue_number"] == payload["issue"]["number"]
    assert runs(store) == []
    assert set(queue.depths().values()) == {0}  # no job on any queue
    assert github.calls("POST", "/repos/{owner}/{repo}/check-runs") == []


def test_a_readers_comment_without_a_command_gets_no_answer(
    runtime: Runtime, github: GitHubDouble, store: Store, queue: WorkQueue
) -> None:
    github.permissions[(OWNER, REPO, READER)] = "read"
    dispatch(runtime, "Thanks, /nofx looks useful here.")

    assert github.calls() == []
    assert runs(store) == []
    assert set(queue.depths().values()) == {0}  # no job on any queue


def test_a_plan_command_posts_the_plan_and_runs_nothing(
    runtime: Runtime, github: GitHubDouble, store: Store, queue: WorkQueue
) -> None:
    payload = dispatch(runtime, "/nofx plan add a cart")

    [eyes] = github.calls("POST", REACTIONS)
    assert (eyes.path_params["comment_id"], eyes.json) == (payload["comment"]["id"], {"content": "eyes"})
    [plan] = replies(github)
    assert plan.startswith("### 📋 nofx plan\n\n> add a cart")
    assert "1. `generate`" in plan and "`pull-request` · open a pull request" in plan
    assert plan.endswith("Nothing has run. Reply `/nofx add a cart` to run it.")
    assert runs(store) == []
    assert set(queue.depths().values()) == {0}  # no job on any queue


def acknowledge(runtime: Runtime, body: str) -> sansio.Event:
    """The dispatch lane's 👀 pass over a comment holding `body`: the event it read, for routing it afterwards."""
    payload = load_payload("issue_comment.created", comment__body=body)
    event = signed_event("issue_comment", payload)
    delivery = deliveries.describe(event.delivery_id, event.event, event.data)
    runtime.run(router.acknowledge(delivery, runtime.context()))
    return event


def test_the_acknowledging_pass_reacts_only_and_routing_does_not_react_again(
    runtime: Runtime, github: GitHubDouble, store: Store, queue: WorkQueue
) -> None:
    event = acknowledge(runtime, "/nofx plan add a cart")

    [eyes] = github.calls("POST", REACTIONS)
    assert (eyes.path_params["comment_id"], eyes.json) == (event.data["comment"]["id"], {"content": "eyes"})
    assert replies(github) == [] and runs(store) == []
    assert set(queue.depths().values()) == {0}

    runtime.run(triggers.router.dispatch(event, runtime.context()))

    assert len(github.calls("POST", REACTIONS)) == 1
    [plan] = replies(github)
    assert plan.startswith("### 📋 nofx plan")


def test_the_acknowledging_pass_refuses_nobody(runtime: Runtime, github: GitHubDouble, store: Store) -> None:
    github.permissions[(OWNER, REPO, READER)] = "read"
    event = acknowledge(runtime, "/nofx add a cart")

    assert github.calls("POST", REACTIONS) == [] and replies(github) == []
    runtime.run(triggers.router.dispatch(event, runtime.context()))  # routing refuses, once
    [refusal] = replies(github)
    assert refusal.startswith(f"@{READER}, only people with *write* access")
    assert github.calls("POST", REACTIONS) == [] and runs(store) == []


def test_the_acknowledging_pass_leaves_a_broken_config_to_routing(
    runtime: Runtime, github: GitHubDouble, store: Store
) -> None:
    github.files[(OWNER, REPO, ".github/nofx.yml", None)] = "gates: [unclosed\n"
    event = acknowledge(runtime, "/nofx add a cart")

    assert github.calls("POST", REACTIONS) == [] and replies(github) == []
    runtime.run(triggers.router.dispatch(event, runtime.context()))
    [report] = replies(github)
    assert ".github/nofx.yml" in report
    assert github.calls("POST", REACTIONS) == [] and runs(store) == []
