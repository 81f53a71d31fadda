"""The run and step state machine in `bot.runs`, on SQLite and PostgreSQL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, StatementError

from bot.models import RunStatus, StepStatus
from bot.plans import validate
from bot.runs import queries, records
from bot.runs.transitions import TransitionError
from bot.store import Store

TOOLS = {"manual:approval", "gate:test"}


def _plan(*steps: dict) -> object:
    return validate({"goal": "test", "steps": list(steps)}, available_tools=TOOLS)


def _request(number: int = 7) -> records.RunRequest:
    return records.RunRequest(
        installation_id=1,
        repository="octo/repo",
        thread_number=number,
        thread_kind="issue",
        request="add a cart",
        requester="alice",
        trigger="comment",
    )


def _two_step_run(store: Store, number: int = 7) -> str:
    plan = _plan(
        {"name": "approve", "tool": "manual:approval"},
        {"name": "test", "tool": "gate:test", "inputs": {"command": "true"}, "depends_on": ["approve"], "retries": 1},
    )
    return records.create(store, _request(number), plan, {}).id  # type: ignore[arg-type]


def _step(store: Store, run_id: str, name: str) -> object:
    return next(s for s in queries.steps_of(store, run_id) if s.name == name)


def test_start_enqueues_only_steps_without_dependencies(any_store: Store) -> None:
    run_id = _two_step_run(any_store)
    progress = records.start(any_store, run_id)

    approve = _step(any_store, run_id, "approve")
    assert progress.enqueue == [approve.id]  # type: ignore[attr-defined]
    assert progress.run_status == RunStatus.running
    assert [s.status for s in queries.steps_of(any_store, run_id)] == [StepStatus.queued, StepStatus.pending]
    types = [e.type for e in queries.events_of(any_store, run_id)]
    assert types == ["run.created", "run.running", "step.enqueued"]


def test_approval_waits_then_resumes_and_the_run_succeeds(any_store: Store) -> None:
    run_id = _two_step_run(any_store)
    approve_id = records.start(any_store, run_id).enqueue[0]
    assert records.claim_step(any_store, approve_id, "job-1") is not None

    assert records.wait_step(any_store, approve_id, {"prompt": "ok?"}).run_status == RunStatus.waiting
    progress = records.decide(any_store, approve_id, approved=True, by="bob")
    test_id = _step(any_store, run_id, "test").id  # type: ignore[attr-defined]
    assert progress.enqueue == [test_id]

    records.claim_step(any_store, test_id, "job-2")
    final = records.succeed_step(any_store, test_id, {"exit_code": 0})
    assert final.run_status == RunStatus.succeeded
    run = queries.get_run(any_store, run_id)
    assert run is not None and run.finished_at is not None
    types = [e.type for e in queries.events_of(any_store, run_id)]
    assert "step.approved" in types and types[-1] == "run.succeeded"


def test_rejection_cancels_the_run_and_its_pending_steps(any_store: Store) -> None:
    run_id = _two_step_run(any_store)
    approve_id = records.start(any_store, run_id).enqueue[0]
    records.claim_step(any_store, approve_id, None)
    records.wait_step(any_store, approve_id, {})

    assert records.decide(any_store, approve_id, approved=False, by="bob", reason="not now").run_status == (
        RunStatus.cancelled
    )
    assert {s.status for s in queries.steps_of(any_store, run_id)} == {StepStatus.cancelled}
    run = queries.get_run(any_store, run_id)
    assert run is not None and run.error == "rejected by @bob: not now"


def test_a_failed_step_skips_its_dependents_and_fails_the_run_and_retry_resumes(any_store: Store) -> None:
    run_id = _two_step_run(any_store)
    approve_id = records.start(any_store, run_id).enqueue[0]
    records.claim_step(any_store, approve_id, None)
    progress = records.fail_step(any_store, approve_id, "boom")

    assert progress.run_status == RunStatus.failed
    assert [s.status for s in queries.steps_of(any_store, run_id)] == [StepStatus.failed, StepStatus.skipped]
    run = queries.get_run(any_store, run_id)
    assert run is not None and run.error == "step approve failed: boom"

    retried = records.retry(any_store, run_id, by="alice")
    assert retried.run_status == RunStatus.running and retried.enqueue == [approve_id]
    assert [s.status for s in queries.steps_of(any_store, run_id)] == [StepStatus.queued, StepStatus.pending]


@pytest.mark.parametrize("action", ["succeed", "wait", "claim_twice", "retry_running", "cancel_finished"])
def test_forbidden_transitions_raise(any_store: Store, action: str) -> None:
    run_id = _two_step_run(any_store)
    step_id = records.start(any_store, run_id).enqueue[0]
    with pytest.raises(TransitionError):
        if action == "succeed":  # queued, never claimed
            records.succeed_step(any_store, step_id, {})
        elif action == "wait":
            records.wait_step(any_store, step_id, {})
        elif action == "claim_twice":
            records.claim_step(any_store, step_id, None)
            records.decide(any_store, step_id, approved=True, by="x")  # running, not waiting
        elif action == "retry_running":
            records.retry(any_store, run_id, by="x")
        else:
            records.cancel(any_store, run_id, by="x")
            records.cancel(any_store, run_id, by="x")


def test_exactly_one_concurrent_claim_wins(any_store: Store) -> None:
    run_id = _two_step_run(any_store)
    step_id = records.start(any_store, run_id).enqueue[0]
    with ThreadPoolExecutor(8) as pool:
        claims = list(pool.map(lambda i: records.claim_step(any_store, step_id, f"job-{i}"), range(8)))
    assert sum(c is not None for c in claims) == 1
    assert [e.type for e in queries.events_of(any_store, run_id)].count("step.started") == 1


def test_a_second_run_on_a_thread_waits_behind_the_active_one(any_store: Store) -> None:
    first = _two_step_run(any_store)
    records.start(any_store, first)
    second = _two_step_run(any_store)

    assert records.start(any_store, second).run_status == RunStatus.queued
    blocked = queries.get_run(any_store, second)
    assert blocked is not None and blocked.behind_run_id == first

    progress = records.cancel(any_store, first, by="alice")
    assert progress.started_runs == [second]
    assert progress.enqueue == [_step(any_store, second, "approve").id]  # type: ignore[attr-defined]
    started = queries.get_run(any_store, second)
    assert started is not None and started.status == RunStatus.running and started.behind_run_id is None

    other_thread = _two_step_run(any_store, number=8)
    assert records.start(any_store, other_thread).run_status == RunStatus.running


def test_the_database_refuses_an_unknown_step_status(any_store: Store) -> None:
    run_id = _two_step_run(any_store)
    with pytest.raises((IntegrityError, StatementError)), any_store.session() as session:
        session.execute(text("UPDATE step SET status = 'exploded' WHERE run_id = :r"), {"r": run_id})


def test_idempotency_key_names_run_step_and_inputs(any_store: Store) -> None:
    run_id = _two_step_run(any_store)
    keys = {s.name: s.idempotency_key for s in queries.steps_of(any_store, run_id)}
    assert keys["approve"] == records.idempotency_key(run_id, "approve", {})
    assert keys["test"].startswith(f"{run_id}:test:") and len(keys["test"].rsplit(":", 1)[1]) == 12


def test_status_is_never_written_through_set_run_fields(any_store: Store) -> None:
    run_id = _two_step_run(any_store)
    with pytest.raises(TransitionError):
        records.set_run_fields(any_store, run_id, status=RunStatus.succeeded)
