"""The repository's own CI as the last gate: nofx waits for it on the pushed head without holding a worker, learns
results from CI webhooks (real example payloads, signed like GitHub's) or its poll, reads failures through the checks
and Actions routes of the OpenAPI-checking GitHub double, and says on GitHub what CI did.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update
from sqlmodel import col

from bot.models import Run, RunStatus, Step, StepStatus, utcnow
from bot.runs import ci_wait, queries
from bot.settings import Settings
from bot.store import Store
from bot.worker.runtime import Runtime
from tests.conftest import OWNER, REPO, Deliverer, ask, with_model
from tests.support.git_server import GitServer, run_git
from tests.support.github_double import GitHubDouble
from tests.support.llm_double import AnthropicDouble
from tests.support.payloads import load_payload

CONFIG = ".github/nofx.yml"
NO_APPROVAL = "gates:\n  test: python3 -m unittest -q\npolicy:\n  require_approval_before: []\n"
MULTIPLY = "def add(a, b):\n    return a + b\n\n\ndef multiply(a, b):\n    return a * b\n"
BUGGY = MULTIPLY.replace("a * b", "a + b")
CALC = "def add(a, b):\n    return a + b\n"
FAILING_LOG = (
    "2026-12-01T10:00:00.0000000Z ##[group]Run python -m pytest\n"
    + "".join(f"2026-12-01T10:00:01.0000000Z collecting line {n}\n" for n in range(200))
    + "2026-12-01T10:00:02.0000000Z test_calc.py::test_multiply FAILED\n"
    "2026-12-01T10:00:02.0000000Z E   AssertionError: multiply(2, 3) returned 5\n"
    "2026-12-01T10:00:03.0000000Z ##[error]Process completed with exit code 1.\n"
)


@pytest.fixture
def settings(settings: Settings, llm: AnthropicDouble) -> Settings:
    return with_model(settings, llm)


pytestmark = pytest.mark.usefixtures("example_installation")


@pytest.fixture
def base_ci(github: GitHubDouble, git: GitServer) -> str:
    """CI ran on the base commit (a `test` job of Actions), so by default nofx waits for `test` on its head."""
    base = github.branches[(OWNER, REPO, "master")]
    job = github.ci_check_run(OWNER, REPO, base, "test")
    github.finish_ci(job, "success")
    return base


def start_run(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    config: str = NO_APPROVAL,
) -> None:
    github.files[(OWNER, REPO, CONFIG, None)] = config
    llm.tool_calls(
        [
            ("replace_in_file", {"path": "calc.py", "old": CALC, "new": MULTIPLY}),
            ("finish", {"summary": "Adds multiply()."}),
        ]
    )
    deliver("issue_comment", ask(git, "/nofx add a multiply function"))
    work()


def the_run(store: Store) -> Run:
    from sqlmodel import select

    with store.session() as session:
        [run] = session.exec(select(Run)).all()
    return run


def ci_step(store: Store, run: Run) -> Step:
    return next(s for s in queries.steps_of(store, run.id) if s.tool == "gate:ci")


def pushed(store: Store, run: Run) -> tuple[str, str]:
    """The head nofx pushed and its branch."""
    output = next(s.output for s in queries.steps_of(store, run.id) if s.tool == "git_pr")
    return output["head_sha"], output["branch"]


def ci_webhook(event: str, item: dict[str, Any], *, branch: str) -> dict[str, Any]:
    """A real example delivery of `event` (completed), carrying the double's CI object as GitHub would."""
    payload = load_payload(f"{event}.completed", installation={"id": 1})
    if event == "workflow_run":
        payload["workflow_run"] |= {k: item[k] for k in ("id", "name", "head_sha", "status", "conclusion", "html_url")}
        payload["workflow_run"]["head_branch"] = branch
    elif event == "check_run":
        payload["check_run"] |= {k: item[k] for k in ("id", "name", "head_sha", "status", "conclusion", "app")}
        payload["check_run"]["check_suite"] |= {"head_sha": item["head_sha"], "head_branch": branch}
    else:
        payload["check_suite"] |= {"head_sha": item["head_sha"], "head_branch": branch, "app": item["app"]}
        payload["check_suite"] |= {"status": "completed", "conclusion": item["conclusion"]}
    return payload


def comment(github: GitHubDouble, store: Store) -> str:
    """The run's status comment as it reads now."""
    run = the_run(store)
    return next(str(c["body"]) for c in github.issue_comments[(OWNER, REPO, 1)] if c["id"] == run.status_comment_id)


def test_the_run_waits_for_ci_and_succeeds_when_it_passes(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
    base_ci: str,
) -> None:
    start_run(deliver, work, github, git, llm)

    run = the_run(store)
    assert run.status == RunStatus.waiting  # parked: no worker holds the wait
    step = ci_step(store, run)
    head, branch = pushed(store, run)
    assert (step.status, step.output["ci"], step.output["required"]) == (StepStatus.waiting, "waiting", ["test"])
    assert "nofx is waiting for CI" in comment(github, store) and "Waiting for `test`" in comment(github, store)
    check = github.check_runs[run.check_run_id]
    assert check["status"] == "in_progress" and check["output"]["title"].startswith("Waiting for CI")
    # nofx's own check runs on the head are never CI: a review still running does not hold the gate.
    github.ci_check_run(OWNER, REPO, head, "nofx review", app=github.slug)
    # `/nofx approve` does not approve CI.
    deliver("issue_comment", ask(git, "/nofx approve"))
    work()
    assert ci_step(store, run).status == StepStatus.waiting
    assert github.issue_comments[(OWNER, REPO, 1)][-1]["body"] == "nofx is waiting for CI, not for an approval."

    workflow = github.ci_workflow_run(OWNER, REPO, head, "CI", branch=branch)
    job = github.ci_check_run(OWNER, REPO, head, "test", run=workflow)
    deliver("check_run", ci_webhook("check_run", job, branch=branch))  # still running: looks, waits again
    work()
    assert the_run(store).status == RunStatus.waiting
    github.finish_ci(job, "success")
    github.finish_ci(workflow, "success")
    deliver("workflow_run", ci_webhook("workflow_run", workflow, branch=branch))
    work()

    run = the_run(store)
    assert run.status == RunStatus.succeeded, run.error
    assert ci_step(store, run).output["ci"] == "passed"
    assert "**CI:** passed" in comment(github, store)
    assert github.check_runs[run.check_run_id]["conclusion"] == "success"
    events = [e.type for e in queries.events_of(store, run.id)]
    assert events.count("ci.reported") == 2 and "step.resumed" in events


def test_a_failure_fails_the_run_with_the_evidence_when_no_repair_is_left(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
    base_ci: str,
    settings: Settings,
) -> None:
    start_run(deliver, work, github, git, llm, NO_APPROVAL + "ci:\n  max_repairs: 0\n")
    run = the_run(store)
    head, branch = pushed(store, run)
    workflow = github.ci_workflow_run(OWNER, REPO, head, "CI", branch=branch)
    job = github.ci_check_run(OWNER, REPO, head, "test", run=workflow)
    github.finish_ci(
        job,
        "failure",
        title="1 test failed",
        annotations=[{"path": "test_calc.py", "start_line": 7, "message": "AssertionError: multiply(2, 3) returned 5"}],
        log=FAILING_LOG,
        failed_step="Run python -m pytest",
    )
    github.finish_ci(workflow, "failure")
    deliver("check_suite", ci_webhook("check_suite", {**job, "conclusion": "failure"}, branch=branch))
    work()

    run = the_run(store)
    assert run.status == RunStatus.failed
    step = ci_step(store, run)
    assert step.output["ci"] == "failed" and step.output["failing"][0]["name"] == "test"
    error = step.error or ""
    assert "CI failed on" in error and "`test` (failure)" in error
    assert "test_calc.py:7: failure: AssertionError: multiply(2, 3) returned 5" in error  # the annotation
    assert "job `test` of workflow `CI` failed at step `Run python -m pytest`" in error
    assert "test_calc.py::test_multiply FAILED" in error and "collecting line 10\n" not in error  # trimmed
    assert "2026-12-01T10:00" not in error  # Actions' timestamps dropped
    # The log came through the redirect, and the storage never saw a token.
    assert [c.status for c in github.calls("GET", "/repos/{owner}/{repo}/actions/jobs/{job_id}/logs")] == [302]
    assert all("authorization" not in c.headers for c in github.calls() if c.path.startswith("/_blob/"))
    body = comment(github, store)
    assert "**CI:** failed" in body and f"]({job['html_url']})" in body
    check = github.check_runs[run.check_run_id]
    assert check["conclusion"] == "failure" and "multiply(2, 3) returned 5" in check["output"]["text"]


def test_a_lost_webhook_is_made_up_for_by_the_poll(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
    runtime: Runtime,
    base_ci: str,
) -> None:
    start_run(deliver, work, github, git, llm)
    run = the_run(store)
    head, _branch = pushed(store, run)
    github.finish_ci(github.ci_check_run(OWNER, REPO, head, "test"), "success")  # and no webhook arrives

    assert ci_wait.poll_due(runtime.store, runtime.queue) == []  # looked a moment ago: not due yet
    assert ci_wait.poll_due(runtime.store, runtime.queue, every=timedelta(0)) == [ci_step(store, run).id]
    work()

    assert the_run(store).status == RunStatus.succeeded
    assert "poll" in [e.payload.get("reason") for e in queries.events_of(store, run.id) if e.type == "step.resumed"]


def test_ci_that_never_reports_times_out(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
    runtime: Runtime,
    base_ci: str,
) -> None:
    start_run(deliver, work, github, git, llm, NO_APPROVAL + "ci:\n  timeout_min: 5\n")
    run = the_run(store)
    step = ci_step(store, run)
    began = (utcnow() - timedelta(minutes=6)).isoformat()  # the wait began six minutes ago
    with store.session() as session:
        session.exec(update(Step).where(col(Step.id) == step.id).values(output={**step.output, "since": began}))  # type: ignore[call-overload]

    ci_wait.poll_due(runtime.store, runtime.queue, every=timedelta(0))
    work()

    run = the_run(store)
    assert run.status == RunStatus.failed
    assert "CI did not finish within 5 min" in (ci_step(store, run).error or "")
    assert "**CI:** did not finish in time" in comment(github, store)


def test_a_workflow_waiting_for_approval_is_said_to_need_a_person(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
    base_ci: str,
) -> None:
    start_run(deliver, work, github, git, llm)
    run = the_run(store)
    head, branch = pushed(store, run)
    workflow = github.ci_workflow_run(OWNER, REPO, head, "CI", branch=branch)
    github.finish_ci(workflow, "action_required")
    deliver("workflow_run", ci_webhook("workflow_run", workflow, branch=branch))
    work()

    run = the_run(store)
    assert run.status == RunStatus.failed
    step = ci_step(store, run)
    assert step.output["ci"] == "needs_person"
    assert "CI needs a person: `CI` is waiting for approval" in (step.error or "")
    assert "**CI:** needs a person" in comment(github, store)


def test_a_push_by_someone_else_stops_nofx(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
    base_ci: str,
) -> None:
    start_run(deliver, work, github, git, llm)
    run = the_run(store)
    _head, branch = pushed(store, run)
    theirs = git.commit(OWNER, REPO, {"notes.txt": "mine\n"}, branch=branch, message="A person's fix")
    job = github.ci_check_run(OWNER, REPO, theirs, "test")
    github.finish_ci(job, "failure")
    deliver("check_run", ci_webhook("check_run", job, branch=branch))
    work()

    run = the_run(store)
    assert run.status == RunStatus.succeeded, run.error
    step = ci_step(store, run)
    assert (step.output["ci"], step.output["foreign_sha"]) == ("handed_over", theirs)
    assert "someone else pushed to the branch" in comment(github, store)
    assert git.git(OWNER, REPO, "rev-parse", branch).strip() == theirs  # nofx pushed nothing over it


def test_no_ci_on_the_base_commit_means_nothing_to_wait_for(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
) -> None:
    start_run(deliver, work, github, git, llm)

    run = the_run(store)
    assert run.status == RunStatus.succeeded, run.error
    assert ci_step(store, run).output["ci"] == "none"
    base = github.branches[(OWNER, REPO, "master")]
    watched = github.calls("GET", "/repos/{owner}/{repo}/commits/{ref}/check-runs")
    assert {c.path_params["ref"] for c in watched} == {base}  # only the base was looked at, never the head


def test_ci_wait_false_leaves_the_step_out() -> None:
    from bot.repo_config import parse_config
    from bot.runs.planner import template

    assert "gate:ci" not in [s["tool"] for s in template("x", parse_config("ci:\n  wait: false\n"))["steps"]]
    assert template("x", parse_config(None))["steps"][-1]["tool"] == "gate:ci"


def failing_ci(github: GitHubDouble, head: str, branch: str) -> dict[str, Any]:
    """Actions runs `test` on `head` and it fails, with an annotation and a log; returns the job's check run."""
    workflow = github.ci_workflow_run(OWNER, REPO, head, "CI", branch=branch)
    job = github.ci_check_run(OWNER, REPO, head, "test", run=workflow)
    note = {"path": "test_calc.py", "start_line": 7, "message": "AssertionError: multiply(2, 3) returned 5"}
    github.finish_ci(job, "failure", title="1 test failed", annotations=[note], log=FAILING_LOG)
    github.finish_ci(workflow, "failure")
    return job


def script_buggy_change(llm: AnthropicDouble) -> None:
    llm.tool_calls(
        [
            ("replace_in_file", {"path": "calc.py", "old": CALC, "new": BUGGY}),
            ("finish", {"summary": "Adds multiply()."}),
        ]
    )


def script_repair(llm: AnthropicDouble, old: str, new: str) -> None:
    llm.tool_calls(
        [
            ("replace_in_file", {"path": "calc.py", "old": old, "new": new}),
            ("finish", {"summary": "multiply multiplies."}),
        ]
    )


def test_a_ci_failure_is_repaired_pushed_and_passes(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
    base_ci: str,
) -> None:
    github.files[(OWNER, REPO, CONFIG, None)] = NO_APPROVAL
    script_buggy_change(llm)
    deliver("issue_comment", ask(git, "/nofx add a multiply function"))
    work()
    run = the_run(store)
    first, branch = pushed(store, run)
    job = failing_ci(github, first, branch)
    script_repair(
        llm,
        "return a + b\n\n\ndef multiply(a, b):\n    return a + b",
        "return a + b\n\n\ndef multiply(a, b):\n    return a * b",
    )
    deliver("check_suite", ci_webhook("check_suite", {**job, "conclusion": "failure"}, branch=branch))
    work()

    # The repair round saw what CI reported, fenced as data: the annotation and the failing log lines.
    repair = llm.requests[-1].text
    assert "Repair attempt 1" in repair and "CI check `test`" in repair and "untrusted_data" in repair
    assert "multiply(2, 3) returned 5" in repair and "test_calc.py::test_multiply FAILED" in repair
    run = the_run(store)
    step = ci_step(store, run)
    second = step.output["head_sha"]
    assert run.status == RunStatus.waiting and second != first
    assert step.output["repairs"] == [{"attempt": 1, "files": ["calc.py"], "passed": None, "head_sha": second}]
    # Pushed to the same branch, on top of the first commit, as the App's bot; the pull request follows it.
    assert git.git(OWNER, REPO, "rev-parse", branch).strip() == second
    assert git.git(OWNER, REPO, "rev-parse", f"{second}^").strip() == first
    assert git.show(OWNER, REPO, branch, "calc.py") == MULTIPLY
    assert git.git(OWNER, REPO, "log", "-1", "--format=%an", branch).strip() == github.bot_login
    assert f"pushed `{second[:7]}`, waiting for CI" in comment(github, store)

    github.finish_ci(github.ci_check_run(OWNER, REPO, second, "test"), "success")
    deliver("check_run", ci_webhook("check_run", github.check_runs[max(github.check_runs)], branch=branch))
    work()

    run = the_run(store)
    assert run.status == RunStatus.succeeded, run.error
    assert ci_step(store, run).output["repairs"][0]["passed"] is True
    body = comment(github, store)
    assert "**CI:** passed" in body and "nofx repaired it 1 time" in body
    assert "repair 1: changed `calc.py` · checks passed" in body


def test_ci_failing_past_max_repairs_fails_the_run_with_the_evidence(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
    settings: Settings,
    base_ci: str,
) -> None:
    github.files[(OWNER, REPO, CONFIG, None)] = NO_APPROVAL + "ci:\n  max_repairs: 1\n"
    script_buggy_change(llm)
    deliver("issue_comment", ask(git, "/nofx add a multiply function"))
    work()
    run = the_run(store)
    first, branch = pushed(store, run)
    # As a worker on another disk rebuilds it: HEAD at the run's start commit, the files as pushed.
    worktree = settings.data_dir / "worktrees" / run.id
    run_git(None, "-C", str(worktree), "reset", "--quiet", "--mixed", github.branches[(OWNER, REPO, "master")])
    job = failing_ci(github, first, branch)
    script_repair(llm, "def multiply(a, b):\n    return a + b", "def multiply(a, b):\n    return b + a")
    deliver("check_suite", ci_webhook("check_suite", {**job, "conclusion": "failure"}, branch=branch))
    work()
    second = ci_step(store, the_run(store)).output["head_sha"]
    assert git.git(OWNER, REPO, "rev-parse", f"{second}^").strip() == first  # the repair follows the push
    job = failing_ci(github, second, branch)
    deliver("check_suite", ci_webhook("check_suite", {**job, "conclusion": "failure"}, branch=branch))
    work()

    run = the_run(store)
    assert run.status == RunStatus.failed
    step = ci_step(store, run)
    assert (step.error or "").startswith(f"CI failed on {second[:7]}: `test` (failure)")
    assert "after 1 repair(s)" in (step.error or "") and "multiply(2, 3) returned 5" in (step.error or "")
    assert [r["passed"] for r in step.output["repairs"]] == [False]
    assert llm.pending == 0  # one repair round, then no more spending
    assert "repair 1: changed `calc.py` · still failing" in comment(github, store)

    # CI on the repair is re-run and passes; `/nofx retry ci` watches nofx's latest commit, not mistaking it for
    # someone else's.
    github.finish_ci(github.ci_check_run(OWNER, REPO, second, "test"), "success")
    deliver("issue_comment", ask(git, "/nofx retry ci"))
    work()
    run = the_run(store)
    assert run.status == RunStatus.succeeded, run.error
    assert (ci_step(store, run).output["ci"], ci_step(store, run).output["head_sha"]) == ("passed", second)
