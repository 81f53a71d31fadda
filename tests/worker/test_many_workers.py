"""Several workers, each with a data dir of its own (no shared disk), sharing only the database and the queue.

On PostgreSQL when one answers (as deployed), else SQLite; the queue is the test's real Redis/Valkey.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from itertools import cycle
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from rq import Worker
from rq.worker import WorkerStatus
from sqlalchemy import text
from sqlmodel import SQLModel

from bot import deliveries
from bot.models import DeliveryStatus, RunStatus, StepStatus
from bot.queue import DISPATCH_LANE, LANE_ALIVE, STEPS_QUEUE
from bot.runs import queries
from bot.runs import records as runs
from bot.settings import Settings
from bot.store import Store
from bot.worker.lanes import WORK_LANE_NICENESS
from bot.worker.loop import Worker as LaneWorker
from bot.worker.loop import reap, run_worker
from bot.worker.routing import RoutingThreads
from bot.worker.runtime import Runtime
from tests.conftest import BASE, OWNER, REPO, Deliverer, ask, with_model
from tests.events.test_run_control import background_worker, gate, only_run, plan, step_named, use_gates
from tests.runs.test_pull_request_flow import CONFIG, MULTIPLY, NO_APPROVAL, TEST_MULTIPLY, script_multiply
from tests.runs.test_setup_flow import script_greet, wheel
from tests.support.git_server import GitServer
from tests.support.github_double import GitHubDouble
from tests.support.llm_double import AnthropicDouble

REACTIONS = "/repos/{owner}/{repo}/issues/comments/{comment_id}/reactions"
REPLIES = "/repos/{owner}/{repo}/issues/{issue_number}/comments"
# A venv with a script that names its interpreter by absolute path, as pip's console scripts do.
SETUP_VENV = """\
setup:
  - python3 -m venv --without-pip "$NOFX_SETUP_DIR"
  - /usr/bin/python3 -m pip --python "$NOFX_SETUP_DIR/bin/python" install -q --no-index --find-links wheels greeting
  - printf '#!%s/bin/python\\nimport greeting\\nprint(greeting.hello("from the venv"))\\n' "$NOFX_SETUP_DIR" > "$NOFX_SETUP_DIR/bin/greet-check"
  - chmod +x "$NOFX_SETUP_DIR/bin/greet-check"
setup_cache_key: [requirements.txt]
gates:
  test: greet-check && python3 -m unittest -q
"""


@pytest.fixture
def store(tmp_path: Path, postgres_url: str | None) -> Iterator[Store]:
    """PostgreSQL, as a deployment with workers on several machines has, when one answers; else SQLite."""
    shared = Store(postgres_url or f"sqlite:///{tmp_path / 'nofx.db'}")
    shared.create_all()
    if postgres_url:
        tables = ", ".join(table.name for table in SQLModel.metadata.sorted_tables)
        with shared.engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    yield shared
    shared.dispose()


@pytest.fixture
def settings(settings: Settings, llm: AnthropicDouble, tmp_path: Path) -> Settings:
    return replace(with_model(settings, llm), data_dir=tmp_path / "worker-a" / "data")


pytestmark = pytest.mark.usefixtures("example_installation")


@pytest.fixture
def other(settings: Settings, tmp_path: Path) -> Iterator[Runtime]:
    """A second worker: the same database and queue, a data dir of its own."""
    second = Runtime(replace(settings, data_dir=tmp_path / "worker-b" / "data"))
    yield second
    second.close()


def drain_urgent(runtime: Runtime) -> None:
    """Deliveries and reports, and delayed jobs that came due (what the dispatch lane and scheduler do)."""
    runtime.queue.enqueue_due()
    run_worker(runtime, burst=True, lane=DISPATCH_LANE)  # in burst mode, maintenance is the identity only


def alternate(store: Store, runtime: Runtime, other: Runtime) -> dict[str, str]:
    """Run the delivered run's steps one at a time, each on the other worker than the one before (a first);
    which worker ran each step, by name."""
    drain_urgent(runtime)  # the delivery: the run starts
    ran_on: dict[str, str] = {}
    workers = cycle([("a", runtime), ("b", other)])
    deadline = time.monotonic() + 120
    while only_run(store).status not in runs.TERMINAL_RUN and time.monotonic() < deadline:
        drain_urgent(runtime)
        if runtime.queue.steps.count == 0:
            time.sleep(0.05)
            continue
        name, worker = next(workers)
        before = {s.id for s in queries.steps_of(store, only_run(store).id) if s.status == StepStatus.succeeded}
        run_worker(worker, burst=True, max_jobs=1, lane=(STEPS_QUEUE,), maintenance=False)
        for step in queries.steps_of(store, only_run(store).id):
            if step.status == StepStatus.succeeded and step.id not in before:
                ran_on[step.name] = name
    drain_urgent(runtime)
    return ran_on


def test_a_run_whose_steps_alternate_between_two_workers_opens_the_right_pull_request(
    deliver: Deliverer,
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
    runtime: Runtime,
    other: Runtime,
) -> None:
    github.files[(OWNER, REPO, CONFIG, None)] = NO_APPROVAL
    script_multiply(llm)
    deliver("issue_comment", ask(git, "/nofx add a multiply function"))

    ran_on = alternate(store, runtime, other)

    run = only_run(store)
    assert run.status == RunStatus.succeeded, run.error
    in_order = [ran_on[step.name] for step in queries.steps_of(store, run.id)]
    assert in_order[:4] == ["a", "b", "a", "b"]  # generate, apply, test, pull-request: each on the other worker
    branch = step_named(store, run, "pull-request").output["branch"]
    # Written on b, tested on a, committed and pushed on b: each rebuilt from the run's last checkpoint.
    assert git.show(OWNER, REPO, branch, "calc.py") == MULTIPLY
    assert git.show(OWNER, REPO, branch, "test_multiply.py") == TEST_MULTIPLY
    assert "Ran 2 tests" in step_named(store, run, "test").output["output_tail"]
    assert len(github.calls("POST", "/repos/{owner}/{repo}/pulls")) == 1


def test_a_worker_killed_mid_step_leaves_the_run_to_a_worker_on_another_disk(
    deliver: Deliverer,
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
    settings: Settings,
    other: Runtime,
) -> None:
    # The gate hangs only in worker a's worktrees (its data dir is under worker-a/), so the retry on b passes.
    use_gates(github, test='case "$PWD" in */worker-a/*) sleep 120;; esac; echo "passed on $PWD"')
    plan(llm, gate("check"))  # no `retries`: a worker's death is not the step's failure
    deliver("issue_comment", ask(git, "/nofx survive a crash"))

    settings.data_dir.mkdir(parents=True)
    with background_worker(settings) as worker:
        run = _wait_for_step(store, "check", StepStatus.running)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
    time.sleep(0.2)  # its heartbeats have stopped; the reaper is told to give up on them after 0.1 s
    assert reap(other, dead_after=timedelta(seconds=0.1)) == [step_named(store, run, "check").id]
    deadline = time.monotonic() + 60
    while only_run(store).status not in runs.TERMINAL_RUN and time.monotonic() < deadline:
        other.queue.enqueue_due()
        run_worker(other, burst=True, maintenance=False)

    run = only_run(store)
    assert run.status == RunStatus.succeeded, run.error
    check = step_named(store, run, "check")
    assert check.attempts == 2 and "passed on" in check.output["output_tail"]  # it would hang on a


def _wait_for_step(store: Store, name: str, status: StepStatus, timeout_s: float = 60) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            run = only_run(store)
        except ValueError:
            run = None
        if run is not None and step_named(store, run, name).status == status:
            return run
        time.sleep(0.1)
    raise AssertionError(f"step {name} never became {status.value}")


def test_a_busy_worker_still_acknowledges_a_second_installation_at_once(
    deliver: Deliverer, github: GitHubDouble, git: GitServer, llm: AnthropicDouble, store: Store, settings: Settings
) -> None:
    use_gates(github, test="sleep 150")
    plan(llm, gate("slow"))
    deliver("issue_comment", ask(git, "/nofx keep the worker busy"))
    other = ask(git, "/nofx help", number=2)
    other["installation"] = {"id": 2}  # unknown so far: learned by the worker
    other["comment"]["id"] += 1

    settings.data_dir.mkdir(parents=True)
    with background_worker(settings):
        _wait_for_step(store, "slow", StepStatus.running)  # the work lane is in a 150 s gate
        lanes = Redis.from_url(settings.redis_url or "")
        assert _wait_for(lambda: Worker.count(connection=lanes) >= 2, timeout_s=60), "the dispatch lane never started"
        deliver("issue_comment", other)
        acknowledged = _wait_for(lambda: _eyes_on(github, other["comment"]["id"]), timeout_s=45)
        shown = _wait_for(lambda: "· running" in _status_comment(github), timeout_s=45)
        still_busy = step_named(store, only_run(store), "slow").status == StepStatus.running

    assert acknowledged, "the second installation's comment got no 👀 while the worker was busy"
    assert shown, "the status comment never showed the gate running while the worker was in it"
    assert still_busy  # 👀 and the status came from the dispatch lane, not after the gate


def _eyes_on(github: GitHubDouble, comment_id: int) -> bool:
    calls = github.calls("POST", "/repos/{owner}/{repo}/issues/comments/{comment_id}/reactions")
    return any(call.path_params["comment_id"] == comment_id and call.status == 201 for call in calls)


def _status_comment(github: GitHubDouble) -> str:
    comments = github.issue_comments.get((OWNER, REPO, 1), [])
    return comments[-1]["body"] if comments else ""


def _wait_for(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def test_a_gate_on_another_worker_gets_the_setup_made_on_the_first_from_the_shared_store(
    deliver: Deliverer,
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
    runtime: Runtime,
    other: Runtime,
) -> None:
    files = {"wheels/greeting-1.0-py3-none-any.whl": wheel(), "requirements.txt": "greeting\n", CONFIG: SETUP_VENV}
    github.branches[(OWNER, REPO, BASE)] = git.commit_many(OWNER, REPO, files, branch=BASE)
    github.files[(OWNER, REPO, CONFIG, None)] = SETUP_VENV
    script_greet(llm, "greet")
    deliver("issue_comment", ask(git, "/nofx add greet()"))

    ran_on = alternate(store, runtime, other)

    run = only_run(store)
    assert run.status == RunStatus.succeeded, run.error
    assert (ran_on["setup"], ran_on["test"]) == ("a", "b")
    setup = step_named(store, run, "setup")
    assert setup.output["cached"] is False and setup.output["shared"].startswith("shared with the other workers")
    # b unpacked a's venv under its own data dir; the script setup wrote there names its interpreter by the
    # sandbox's fixed path, so it runs on b although a's data dir lies elsewhere
    assert list((other.settings.data_dir / "setup").glob(f"*/*/*/{setup.output['key']}/.nofx-setup.json"))
    output = step_named(store, run, "test").output["output_tail"]
    assert "hello from the venv" in output and "Ran 2 tests" in output


class HeldCalls:
    """Calls to one GitHub operation after the first `passing`, held until `release` (or 120 s): counts how many
    deliveries are at that point at once. Replies are made while routing, 👀 while acknowledging."""

    def __init__(self, github: GitHubDouble, template: str, passing: int = 0) -> None:
        self.release = threading.Event()
        self._lock = threading.Lock()
        self._passing = passing
        self.held = 0
        github.gate("POST", template, self._hold)

    def _hold(self) -> None:
        with self._lock:
            if self._passing:
                self._passing -= 1
                return
            self.held += 1
        self.release.wait(timeout=120)


def _help_requests(deliver: Deliverer, git: GitServer, count: int) -> dict[str, int]:
    """`count` `/nofx help` comments on as many issues, delivered through the web's intake: comment id by delivery."""
    sent = {}
    for n in range(1, count + 1):
        payload = ask(git, "/nofx help", number=n)
        payload["comment"]["id"] += n
        deliver("issue_comment", payload, delivery_id=f"burst-{n}")
        sent[f"burst-{n}"] = payload["comment"]["id"]
    return sent


def _status(store: Store, delivery_id: str) -> DeliveryStatus | None:
    row = deliveries.get(store, delivery_id)
    return row.status if row else None


def test_a_dispatch_lane_routes_a_burst_of_deliveries_at_once(
    deliver: Deliverer, github: GitHubDouble, git: GitServer, store: Store, runtime: Runtime
) -> None:
    at_once = threading.Barrier(4, timeout=120)  # broken (and the reply refused) unless 4 are in flight together
    github.gate("POST", REPLIES, at_once.wait)
    sent = _help_requests(deliver, git, 4)

    routing = RoutingThreads(runtime, threads=4)
    routing.start()
    try:
        # Until routed, not until 👀: the acknowledging pass reacts before routing, and a lane stopped then leaves the
        # deliveries it has not taken (the replies in flight waited at the gate for the fourth until they timed out).
        routed = _wait_for(lambda: {_status(store, d) for d in sent} == {DeliveryStatus.done}, timeout_s=150)
    finally:
        routing.stop()

    assert routed and not at_once.broken
    assert all(_eyes_on(github, c) for c in sent.values())
    assert runtime.queue.intake_waiting() == [] and runtime.queue.intake_taken() == []


def test_a_dispatch_lane_stopped_mid_burst_finishes_what_it_is_routing(
    deliver: Deliverer, github: GitHubDouble, git: GitServer, store: Store, settings: Settings
) -> None:
    replies = HeldCalls(github, REPLIES)
    sent = _help_requests(deliver, git, 3)

    settings.data_dir.mkdir(parents=True)
    with background_worker(settings, "--lane", "dispatch") as lane:
        assert _wait_for(lambda: replies.held == 3, timeout_s=90), "the lane did not route 3 deliveries at once"
        lane.send_signal(signal.SIGTERM)
        replies.release.set()
        assert lane.wait(timeout=60) == 0

    assert {_status(store, d) for d in sent} == {DeliveryStatus.done}
    assert all(_eyes_on(github, c) for c in sent.values())


def test_a_stop_asked_for_in_a_signal_handler_takes_no_lock_and_still_stops_every_thread(runtime: Runtime) -> None:
    """A signal handler runs on the main thread between any two bytecodes: taking the stop event's lock there hung
    lanes for ever when the interrupted code held it (two SIGTERMs close together: the parent's death signal and a
    supervisor's), seen as orphaned lanes after the killed-worker tests."""
    routing = RoutingThreads(runtime, threads=1, acknowledging=1)
    routing.start()
    threads = [*routing._takers, *routing._routers]  # type: ignore[attr-defined]
    try:
        with routing._stopping._cond:  # type: ignore[attr-defined]  # held, as by the code the signal interrupted
            routing.stop_taking()
            routing.stop_taking()
        assert _wait_for(lambda: not any(thread.is_alive() for thread in threads), timeout_s=60)
    finally:
        routing.stop()


def test_a_stop_request_stops_the_routing_threads_taking_while_rq_finishes_its_job(runtime: Runtime) -> None:
    """SIGTERM while the lane's RQ worker runs a report job: RQ waits for the job, the routing threads stop taking
    deliveries at once (an orphaned lane would otherwise go on taking them until the job ends)."""
    routing = RoutingThreads(runtime, threads=2)
    routing.start()
    worker = LaneWorker(runtime.queue.lane(DISPATCH_LANE), connection=runtime.queue.redis)
    worker.on_stop = routing.stop_taking
    worker.set_state(WorkerStatus.BUSY)  # as if in a job: RQ itself only notes the request
    handlers = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        worker.request_stop(signal.SIGTERM, None)

        def routing_threads() -> list[threading.Thread]:
            return [thread for thread in threading.enumerate() if thread.name.startswith("route-")]

        assert _wait_for(lambda: not routing_threads(), timeout_s=60), "the routing threads went on taking"
    finally:
        for number, handler in handlers.items():
            signal.signal(number, handler)
        routing.stop()


def test_what_a_killed_dispatch_lane_held_goes_back_and_nothing_is_routed_twice(
    deliver: Deliverer, github: GitHubDouble, git: GitServer, store: Store, settings: Settings, runtime: Runtime
) -> None:
    replies = HeldCalls(github, REPLIES)
    in_flight = _help_requests(deliver, git, 3)
    reactions = HeldCalls(github, REACTIONS, passing=3)  # the three above react; the next is held at its 👀

    settings.data_dir.mkdir(parents=True)
    with background_worker(settings, "--lane", "dispatch") as lane:
        assert _wait_for(lambda: replies.held == 3, timeout_s=90), "the lane did not route 3 deliveries at once"
        acknowledging = {"acknowledging": ask(git, "/nofx help", number=8)}
        acknowledging["acknowledging"]["comment"]["id"] += 8
        deliver("issue_comment", acknowledging["acknowledging"], delivery_id="acknowledging")
        assert _wait_for(lambda: reactions.held == 1, timeout_s=90), "the lane did not acknowledge while routing"
        os.kill(lane.pid, signal.SIGKILL)
        lane.wait()
    replies.release.set()
    reactions.release.set()
    later = {"later-1": ask(git, "/nofx help", number=9)}
    later["later-1"]["comment"]["id"] += 9
    deliver("issue_comment", later["later-1"], delivery_id="later-1")
    runtime.queue.take_delivery("killed-before-claiming", 1)  # it took one and died before claiming it

    # What the sweeper does: what the lane without a heartbeat took comes back; the killed lane's beat is still fresh.
    assert runtime.queue.reclaim_taken() == ["later-1"]
    runtime.queue.redis.delete(*runtime.queue.redis.scan_iter(f"{LANE_ALIVE}*"))  # LANE_ALIVE_TTL_S later
    assert sorted(runtime.queue.reclaim_taken()) == sorted([*in_flight, "acknowledging"])
    run_worker(runtime, burst=True, lane=DISPATCH_LANE)  # another lane takes them: claimed once

    # Taken but not claimed (later-1; "acknowledging" was held at its 👀): routed by the other lane, once.
    for delivery_id, payload in (*later.items(), *acknowledging.items()):
        assert _status(store, delivery_id) == DeliveryStatus.done and _eyes_on(github, payload["comment"]["id"])
        assert deliveries.get(store, delivery_id).attempts == 1  # type: ignore[union-attr]
    # Claimed by the killed lane: not routed again (the sweeper fails them after ABANDONED_AFTER, for replay).
    assert {_status(store, d) for d in in_flight} == {DeliveryStatus.processing}
    assert all(deliveries.get(store, d).attempts == 1 for d in in_flight)  # type: ignore[union-attr]
    assert runtime.queue.intake_waiting() == [] and runtime.queue.intake_taken() == []


def test_a_workers_work_lane_yields_the_cpu_to_its_dispatch_lane(settings: Settings) -> None:
    settings.data_dir.mkdir(parents=True)
    with background_worker(settings) as worker:
        children = Path(f"/proc/{worker.pid}/task/{worker.pid}/children")
        assert _wait_for(lambda: bool(children.read_text().split()), timeout_s=60), "no dispatch lane started"
        lane = int(children.read_text().split()[0])
        assert _wait_for(lambda: Worker.count(connection=Redis.from_url(settings.redis_url or "")) >= 2, 60)
        work_threads = [_nice(task) for task in Path(f"/proc/{worker.pid}/task").iterdir()]

    # Every thread of the work lane (its job thread, the sweeper, …) and what it starts runs below the lane.
    assert min(work_threads) >= os.getpriority(os.PRIO_PROCESS, os.getpid()) + WORK_LANE_NICENESS
    assert _nice_of_pid(lane) == os.getpriority(os.PRIO_PROCESS, os.getpid())


def _nice(task: Path) -> int:
    return int((task / "stat").read_text().rpartition(")")[2].split()[16])  # field 19: nice


def _nice_of_pid(pid: int) -> int:
    return _nice(Path(f"/proc/{pid}"))
