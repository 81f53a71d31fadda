"""Approvals, cancel, retry, check-run buttons, LLM plans and a worker killed mid-step, end to end.

Plans come from the LLM planner (`planner: llm`), answered by the Anthropic double, so each test
chooses its own steps; everything else is the real app, queue, worker, git server and GitHub double.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from bot.models import Run, RunStatus, StepStatus
from bot.runs import queries
from bot.settings import Settings, SettingsError
from bot.store import Store
from bot.worker.loop import reap
from bot.worker.runtime import Runtime
from tests.conftest import OWNER, REPO, Deliverer, ask, with_model
from tests.support.git_server import GitServer
from tests.support.github_double import GitHubDouble
from tests.support.llm_double import AnthropicDouble
from tests.support.payloads import load_payload

LLM_PLANNER = "planner: llm\ngates:\n  test: 'true'\nrepair:\n  max_attempts: 0\n"
CONFIG = ".github/nofx.yml"
CHECK_RUN_UPDATES = "/repos/{owner}/{repo}/check-runs/{check_run_id}"


@pytest.fixture
def settings(settings: Settings, llm: AnthropicDouble) -> Settings:
    return with_model(settings, llm)


@pytest.fixture(autouse=True)
def _setup(installed: Callable[[dict[str, Any]], None], github: GitHubDouble, git: GitServer) -> None:
    installed(load_payload("issue_comment.created"))
    github.files[(OWNER, REPO, CONFIG, None)] = LLM_PLANNER


def plan(llm: AnthropicDouble, *steps: dict[str, Any]) -> None:
    llm.tool_call("submit_plan", {"goal": "test the engine", "steps": list(steps)})


def gate(name: str, tool: str = "gate:test", **extra: Any) -> dict[str, Any]:
    """A gate step as the model plans it: which gate, never its command (that is the repository's config)."""
    return {"name": name, "tool": tool, **extra}


def use_gates(github: GitHubDouble, **commands: str) -> None:
    """The repository's `gates:` section, e.g. `use_gates(github, test="make check")`."""
    lines = "".join(f"  {kind}: {json.dumps(command)}\n" for kind, command in commands.items())
    github.files[(OWNER, REPO, CONFIG, None)] = f"planner: llm\ngates:\n{lines}repair:\n  max_attempts: 0\n"


def only_run(store: Store) -> Run:
    with store.session() as session:
        [run] = session.exec(select(Run)).all()
    return run


def step_named(store: Store, run: Run, name: str) -> Any:
    return next(s for s in queries.steps_of(store, run.id) if s.name == name)


def last_comment(github: GitHubDouble) -> str:
    return github.issue_comments[(OWNER, REPO, 1)][-1]["body"]


def test_approve_then_reject_on_the_next_run(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
) -> None:
    plan(llm, {"name": "ok", "tool": "manual:approval"}, gate("check", depends_on=["ok"]))
    deliver("issue_comment", ask(git, "/nofx check things"))
    work()
    run = only_run(store)
    assert run.status == RunStatus.waiting
    assert "/nofx approve" in github.issue_comments[(OWNER, REPO, 1)][0]["body"]

    deliver("issue_comment", ask(git, "/nofx approve"))
    work()
    run = only_run(store)
    assert run.status == RunStatus.succeeded
    assert step_named(store, run, "ok").decided_by == "Codertocat"
    events = [e.type for e in queries.events_of(store, run.id)]
    assert events.index("step.approved") < events.index("run.succeeded")


def test_reject_cancels_the_run(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
) -> None:
    plan(llm, {"name": "ok", "tool": "manual:approval"}, gate("check", depends_on=["ok"]))
    deliver("issue_comment", ask(git, "/nofx check things"))
    work()

    deliver("issue_comment", ask(git, "/nofx reject not today"))
    work()
    run = only_run(store)
    assert run.status == RunStatus.cancelled
    assert run.error == "rejected by @Codertocat: not today"
    assert step_named(store, run, "check").status == StepStatus.cancelled
    check = github.check_runs[run.check_run_id]
    assert check["conclusion"] == "cancelled"


def test_check_run_buttons_approve_with_the_same_permission_check(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
) -> None:
    plan(llm, {"name": "ok", "tool": "manual:approval"})
    deliver("issue_comment", ask(git, "/nofx check things"))
    work()
    run = only_run(store)

    press = _check_run_event(github, run, "requested_action", sender="mallory")
    press["requested_action"] = {"identifier": "approve"}
    github.permissions[(OWNER, REPO, "mallory")] = "read"
    deliver("check_run", press)
    work()
    assert only_run(store).status == RunStatus.waiting
    assert "mallory" in last_comment(github)

    press = _check_run_event(github, run, "requested_action", sender="Codertocat")
    press["requested_action"] = {"identifier": "approve"}
    deliver("check_run", press)
    work()
    assert only_run(store).status == RunStatus.succeeded


def test_retry_reruns_the_failed_step_and_rerequested_does_too(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
) -> None:
    # Fails on its first two attempts, passes on the third: the file lives in the run's worktree.
    flaky = 'n=$(cat .attempts 2>/dev/null || echo 0); echo $((n+1)) > .attempts; [ "$n" -ge 2 ] || { echo "attempt $n fails"; exit 1; }'
    use_gates(github, test=flaky, lint="true")
    plan(llm, gate("flaky"), gate("after", "gate:lint", depends_on=["flaky"]))
    deliver("issue_comment", ask(git, "/nofx be flaky"))
    work()
    run = only_run(store)
    assert run.status == RunStatus.failed
    assert step_named(store, run, "after").status == StepStatus.skipped
    assert "/nofx retry flaky" in last_comment(github)
    assert "attempt 0 fails" in last_comment(github)

    deliver("issue_comment", ask(git, "/nofx retry"))
    work()
    assert only_run(store).status == RunStatus.failed  # attempt 1 fails too

    response = deliver("check_run", _check_run_event(github, run, "rerequested", sender="Codertocat"))
    assert response.json()["status"] == "queued", response.json()
    work()
    run = only_run(store)
    assert run.status == RunStatus.succeeded
    assert step_named(store, run, "flaky").attempts == 3
    assert github.check_runs[run.check_run_id]["conclusion"] == "success"


def test_a_second_request_on_the_thread_waits_behind_the_active_run(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
) -> None:
    plan(llm, {"name": "ok", "tool": "manual:approval"})
    deliver("issue_comment", ask(git, "/nofx first"))
    work()
    plan(llm, gate("second"))
    deliver("issue_comment", ask(git, "/nofx second"))
    work()

    with store.session() as session:
        first, second = session.exec(select(Run).order_by(Run.created_at)).all()  # type: ignore[arg-type]
    assert (first.status, second.status) == (RunStatus.waiting, RunStatus.queued)
    assert second.behind_run_id == first.id
    bodies = [c["body"] for c in github.issue_comments[(OWNER, REPO, 1)]]
    assert any(f"Queued behind run {first.id}" in body or (first.id in body and "behind" in body) for body in bodies)

    deliver("issue_comment", ask(git, "/nofx approve"))
    work()
    with store.session() as session:
        statuses = [r.status for r in session.exec(select(Run).order_by(Run.created_at))]  # type: ignore[arg-type]
    assert statuses == [RunStatus.succeeded, RunStatus.succeeded]


def test_a_plan_the_model_cannot_correct_is_refused(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
) -> None:
    for _ in range(3):  # the answer, then the two corrections the router asks for
        plan(llm, {"name": "x", "tool": "deploy"})
    deliver("issue_comment", ask(git, "/nofx deploy it"))
    work()
    assert "could not make a plan" in last_comment(github)
    assert "'deploy' is not one of" in llm.requests[1].text  # the model was told what was wrong
    with store.session() as session:
        assert session.exec(select(Run)).all() == []


@pytest.mark.parametrize(
    ("steps", "reason"),
    [
        ([gate("a", depends_on=["b"]), gate("b", depends_on=["a"])], "not an earlier step"),
        ([{"name": "w", "tool": "workspace:write", "inputs": {"path": "../../etc/passwd"}}], "leaves the workspace"),
        ([gate("a"), gate("a")], "used twice"),
    ],
)
def test_an_invalid_llm_plan_is_refused_and_never_run(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
    steps: list[dict[str, Any]],
    reason: str,
) -> None:
    plan(llm, *steps)
    deliver("issue_comment", ask(git, "/nofx do something odd"))
    work()
    assert reason in last_comment(github)
    with store.session() as session:
        assert session.exec(select(Run)).all() == []


def test_plan_command_shows_the_plan_and_runs_nothing(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
) -> None:
    use_gates(github, test="make check")
    plan(llm, gate("check"))
    deliver("issue_comment", ask(git, "/nofx plan check the build"))
    work()
    assert "check" in last_comment(github) and "Nothing has run" in last_comment(github)
    with store.session() as session:
        assert session.exec(select(Run)).all() == []


def test_cancel_stops_the_running_step_in_another_worker(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
    settings: Settings,
) -> None:
    use_gates(github, test="sleep 97531")
    plan(llm, gate("slow", timeout_s=300))  # an unusual duration, to find the process
    deliver("issue_comment", ask(git, "/nofx be slow"))
    with background_worker(settings) as _worker:
        run = wait_for_running(store, "slow")
        assert _wait(lambda: _sleeping("97531"))  # the gate's command runs in the other worker
        deliver("issue_comment", ask(git, "/nofx cancel"))
        work()  # this process routes the cancel; the other worker notices it on its next heartbeat
        assert _wait(lambda: only_run(store).status == RunStatus.cancelled)
        assert _wait(lambda: not _sleeping("97531"), timeout_s=20), "the step's process outlived the cancel"
        assert run.id
    assert step_named(store, only_run(store), "slow").status == StepStatus.cancelled


def test_a_worker_killed_mid_step_leaves_no_run_stuck(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
    settings: Settings,
    runtime: Runtime,
) -> None:
    once = "if [ -f .killed ]; then echo recovered; else touch .killed; sleep 120; fi"
    use_gates(github, test=once)
    plan(llm, gate("fragile", retries=1, timeout_s=300))
    deliver("issue_comment", ask(git, "/nofx survive a crash"))
    with background_worker(settings) as worker:
        run = wait_for_running(store, "fragile")
        assert _wait(lambda: (worktree_of(settings, run) / ".killed").exists())
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
    time.sleep(0.2)  # its heartbeats have stopped; the reaper is told to give up on them after 0.1 s
    assert reap(runtime, dead_after=timedelta(seconds=0.1)) == [step_named(store, run, "fragile").id]
    work()

    run = only_run(store)
    assert run.status == RunStatus.succeeded
    fragile = step_named(store, run, "fragile")
    assert fragile.attempts == 2 and "recovered" in fragile.output["output_tail"]
    assert "step.retrying" in [e.type for e in queries.events_of(store, run.id)]


# --- helpers -------------------------------------------------------------------------------------------


class background_worker:
    """A real `nofx worker` process on the test's queue and database (`--lane dispatch`: only a dispatch lane)."""

    def __init__(self, settings: Settings, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "NOFX_", "ANTHROPIC_", "OPENAI_"))}
        env.update(
            {
                "DATABASE_URL": settings.database_url,
                "REDIS_URL": settings.redis_url or "",
                "NOFX_DATA_DIR": str(settings.data_dir),
                "GITHUB_APP_ID": settings.app_id or "",
                "GITHUB_PRIVATE_KEY": settings.private_key or "",
                "GITHUB_API_URL": settings.github_api_url,
                "ANTHROPIC_API_KEY": settings.anthropic_api_key or "",
                "ANTHROPIC_BASE_URL": settings.anthropic_base_url or "",
            }
        )
        self.cwd = settings.data_dir.parent
        self.log = (self.cwd / "worker.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "worker", *args],
            env=env,
            cwd=settings.data_dir.parent,
            stdout=self.log,
            stderr=self.log,
        )

    def __enter__(self) -> subprocess.Popen[bytes]:
        return self.proc

    def __exit__(self, *_: object) -> None:
        lanes = _processes_in(self.cwd)  # its dispatch lane, orphaned too if the test killed the worker
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        # Its dispatch lane stops with it (SIGTERM on the parent's death), finishing what it routes: the next
        # test's deliveries on the same queue must not reach it.
        deadline = time.monotonic() + 30
        while any(_running(lane) for lane in lanes) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.log.close()


def _processes_in(cwd: Path) -> list[Path]:
    """This user's processes working in `cwd` (a worker's directory: the worker and the lanes it started)."""
    found = []
    for process in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if process.name.isdigit() and (process / "cwd").resolve() == cwd.resolve():
                found.append(process)
    return found


def _running(process: Path) -> bool:
    """The process exists and is not a zombie (an orphan's reaper may be slow, or not reap at all)."""
    try:
        return (process / "stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def wait_for_running(store: Store, name: str) -> Run:
    def running() -> bool:
        with store.session() as session:
            found = session.exec(select(Run)).all()
        return bool(found) and step_named(store, found[0], name).status == StepStatus.running

    assert _wait(running, timeout_s=60), "the step never started in the background worker"
    return only_run(store)


def worktree_of(settings: Settings, run: Run) -> Path:
    return settings.data_dir / "worktrees" / run.id


def _check_run_event(github: GitHubDouble, run: Run, action: str, *, sender: str) -> dict[str, Any]:
    payload = load_payload(f"check_run.{action}")
    payload["check_run"] = {**payload["check_run"], **github.check_runs[run.check_run_id]}
    payload["repository"] = load_payload("issue_comment.created")["repository"]
    payload["installation"] = {"id": 1}
    payload["sender"] = {**payload["sender"], "login": sender, "type": "User"}
    return payload


def _sleeping(marker: str) -> bool:
    listing = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    return any(line.startswith("sleep") and marker in line for line in listing.splitlines())


def _wait(condition: Callable[[], bool], timeout_s: float = 30) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def _issue_event(name: str, git: GitServer, **changes: Any) -> dict[str, Any]:
    payload = load_payload(name, **changes)
    payload["installation"] = {"id": 1}
    payload["repository"]["clone_url"] = git.url_for(OWNER, REPO)
    return payload


def test_the_run_label_starts_a_run_with_the_issues_title_and_body(
    deliver: Deliverer, work: Callable[..., None], git: GitServer, llm: AnthropicDouble, store: Store
) -> None:
    plan(llm, gate("check"))
    labeled = _issue_event(
        "issues.labeled", git, label__name="nofx", issue__title="Add a cart", issue__body="With a total."
    )
    deliver("issues", labeled)
    work()
    run = only_run(store)
    assert (run.request, run.trigger, run.status) == ("Add a cart\n\nWith a total.", "label", RunStatus.succeeded)
    assert "Add a cart" in llm.requests[0].text


def test_another_label_starts_nothing(
    deliver: Deliverer, work: Callable[..., None], git: GitServer, store: Store
) -> None:
    deliver("issues", _issue_event("issues.labeled", git))  # the example's label is "bug"
    work()
    with store.session() as session:
        assert session.exec(select(Run)).all() == []


def test_a_command_in_a_new_issues_body_starts_a_run(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
) -> None:
    plan(llm, gate("check"))
    opened = _issue_event("issues.opened", git, issue__body="Please:\n\n/nofx add a cart")
    deliver("issues", opened)
    work()
    assert only_run(store).trigger == "issue_body"
    assert github.calls("POST", "/repos/{owner}/{repo}/issues/{issue_number}/reactions")


def test_a_command_in_a_review_comment_runs_on_the_pull_requests_branch(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
) -> None:
    git.commit(OWNER, REPO, {"feature.py": "x = 1\n"}, branch="feature")
    pull = github.add_pull(OWNER, REPO, head="feature", base="master", user="Codertocat")
    use_gates(github, test="test -f feature.py")
    plan(llm, gate("check"))
    comment = _issue_event("pull_request_review_comment.created", git, comment__body="/nofx tidy this up")
    comment["pull_request"]["number"] = pull["number"]
    deliver("pull_request_review_comment", comment)
    work()
    run = only_run(store)
    assert run.status == RunStatus.succeeded, run.error
    assert (run.trigger, run.default_branch) == ("review_comment", "feature")  # starts from the PR's head
    assert github.calls("POST", "/repos/{owner}/{repo}/pulls/comments/{comment_id}/reactions")


def test_a_resumed_run_gets_a_new_check_run_when_github_will_not_reopen_the_old_one(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
) -> None:
    plan(llm, {"name": "ok", "tool": "manual:approval"})
    deliver("issue_comment", ask(git, "/nofx check things"))
    work()
    first_check = only_run(store).check_run_id

    github.respond("PATCH", CHECK_RUN_UPDATES, 422, json={"message": "Validation Failed"})
    deliver("issue_comment", ask(git, "/nofx approve"))
    work()
    run = only_run(store)
    assert run.status == RunStatus.succeeded
    assert run.check_run_id != first_check
    assert github.check_runs[run.check_run_id]["conclusion"] == "success"


def test_the_pause_between_edits_comes_from_the_environment(tmp_path: Path) -> None:
    none = tmp_path / "no.env"
    assert Settings.from_env({}, env_file=none).report_interval_s == 1.0
    assert Settings.from_env({"NOFX_REPORT_INTERVAL_MS": "250"}, env_file=none).report_interval_s == 0.25
    for bad in ("-1", "60001", "1s"):
        with pytest.raises(SettingsError, match="NOFX_REPORT_INTERVAL_MS"):
            Settings.from_env({"NOFX_REPORT_INTERVAL_MS": bad}, env_file=none)


@pytest.mark.parametrize("report_interval_s", [1.0])  # NOFX_REPORT_INTERVAL_MS's default
def test_each_surface_gets_at_most_one_edit_per_second(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
) -> None:
    plan(llm, *(gate(f"g{i}", depends_on=[f"g{i - 1}"] if i else []) for i in range(6)))
    deliver("issue_comment", ask(git, "/nofx many quick steps"))
    work()
    run = only_run(store)
    assert run.status == RunStatus.succeeded
    for method, template in (
        ("PATCH", "/repos/{owner}/{repo}/issues/comments/{comment_id}"),
        ("PATCH", CHECK_RUN_UPDATES),
    ):
        times = [c.at for c in github.calls(method, template)]
        assert times, template
        gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
        assert all(gap >= 0.95 for gap in gaps), (template, gaps)
    # Coalesced, yet the last edit shows the final state.
    assert github.check_runs[run.check_run_id]["conclusion"] == "success"
    assert "✅" in last_comment(github)
