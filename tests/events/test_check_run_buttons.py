"""Check-run buttons act on the run their check run names, under the config and permissions as they are now.

Before issue 10 an Approve pressed on an old run's check run approved whatever run was waiting on the thread,
and buttons and `/nofx retry --from` judged the presser by the config stored with the run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlmodel import select

from bot.models import Run, RunStatus, StepStatus
from bot.queue import WorkQueue
from bot.runs import checkpoints, queries
from bot.settings import Settings
from bot.store import Store
from tests.conftest import BASE, OWNER, REPO, Deliverer, ask, expire_routing_caches, with_model
from tests.support.git_server import GitServer
from tests.support.github_double import GitHubDouble
from tests.support.llm_double import AnthropicDouble
from tests.support.payloads import load_payload

CONFIG = ".github/nofx.yml"
LLM_PLANNER = "planner: llm\ngates: {}\npolicy:\n  require_approval_before: []\n"


@pytest.fixture
def settings(settings: Settings, llm: AnthropicDouble) -> Settings:
    return with_model(settings, llm)


pytestmark = pytest.mark.usefixtures("example_installation")


def all_runs(store: Store) -> list[Run]:
    with store.session() as session:
        return list(session.exec(select(Run).order_by(Run.created_at)).all())  # type: ignore[arg-type]


def change_config(github: GitHubDouble, git: GitServer, queue: WorkQueue, text: str) -> None:
    """A config change is a commit on the default branch (config reads are cached per commit), seen once the head
    nofx remembers expires (a minute later)."""
    github.files[(OWNER, REPO, CONFIG, None)] = text
    github.branches[(OWNER, REPO, BASE)] = git.commit(OWNER, REPO, {CONFIG: text}, branch=BASE)
    expire_routing_caches(queue)


def press(github: GitHubDouble, run: Run, action: str, *, sender: str, identifier: str = "") -> dict[str, Any]:
    payload = load_payload(f"check_run.{action}")
    payload["check_run"] = {**payload["check_run"], **github.check_runs[run.check_run_id]}
    payload["repository"] = load_payload("issue_comment.created")["repository"]
    payload["installation"] = {"id": 1}
    payload["sender"] = {**payload["sender"], "login": sender, "type": "User"}
    if identifier:
        payload["requested_action"] = {"identifier": identifier}
    return payload


def wait_for_approval(llm: AnthropicDouble, deliver: Deliverer, git: GitServer, work: Callable[..., None]) -> None:
    llm.tool_call("submit_plan", {"goal": "wait", "steps": [{"name": "ok", "tool": "manual:approval"}]})
    deliver("issue_comment", ask(git, "/nofx wait for a person"))
    work()


def test_approve_on_an_older_runs_check_run_does_not_approve_the_newer_run(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
) -> None:
    github.files[(OWNER, REPO, CONFIG, None)] = LLM_PLANNER
    wait_for_approval(llm, deliver, git, work)
    deliver("issue_comment", ask(git, "/nofx approve"))
    work()
    wait_for_approval(llm, deliver, git, work)
    older, newer = all_runs(store)
    assert (older.status, newer.status) == (RunStatus.succeeded, RunStatus.waiting)

    deliver("check_run", press(github, older, "requested_action", sender="Codertocat", identifier="approve"))
    work()

    older, newer = all_runs(store)
    assert newer.status == RunStatus.waiting
    assert "no run waiting" in github.issue_comments[(OWNER, REPO, 1)][-1]["body"]
    deliver("check_run", press(github, newer, "requested_action", sender="Codertocat", identifier="approve"))
    work()
    assert all_runs(store)[1].status == RunStatus.succeeded


def test_a_button_judges_the_presser_by_the_config_as_it_is_now(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
    queue: WorkQueue,
) -> None:
    change_config(github, git, queue, LLM_PLANNER)  # min_permission: write (the default), stored with the run
    wait_for_approval(llm, deliver, git, work)
    change_config(github, git, queue, LLM_PLANNER + "trigger:\n  min_permission: admin\n")
    github.permissions[(OWNER, REPO, "wendy")] = "write"

    deliver("check_run", press(github, all_runs(store)[0], "requested_action", sender="wendy", identifier="approve"))
    work()

    [run] = all_runs(store)
    assert run.status == RunStatus.waiting
    assert "wendy" in github.issue_comments[(OWNER, REPO, 1)][-1]["body"]


def test_retry_from_a_checkpoint_runs_under_the_current_policy(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
    queue: WorkQueue,
) -> None:
    change_config(
        github, git, queue, "gates:\n  test: python3 -m unittest -q\npolicy:\n  require_approval_before: []\n"
    )
    llm.tool_calls([("write_file", {"path": "notes.txt", "content": "hi\n"}), ("finish", {"summary": "Notes."})])
    deliver("issue_comment", ask(git, "/nofx add notes"))
    work()
    [source] = all_runs(store)
    assert source.status == RunStatus.succeeded, source.error
    listed = {c.step_name: c.n for c in checkpoints.list_for_run(store, source.id)}

    approving = "gates:\n  test: python3 -m unittest -q\npolicy:\n  require_approval_before: [git_pr]\n"
    change_config(github, git, queue, approving)  # the policy now wants a person's approval before the pull request
    deliver("issue_comment", ask(git, f"/nofx retry --from {listed['apply']}"))
    work()

    resumed = all_runs(store)[1]
    assert resumed.status == RunStatus.waiting
    steps = {s.name: s for s in queries.steps_of(store, resumed.id)}
    assert steps["approve-pull-request"].status == StepStatus.waiting
    assert resumed.config["policy"]["require_approval_before"] == ["git_pr"]
