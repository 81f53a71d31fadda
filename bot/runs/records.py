"""The only writer of run and step status: every transition is checked, atomic, and recorded as an event.

Transitions are conditional UPDATEs (`... WHERE status IN (allowed predecessors)`), so two workers
racing for the same step or run cannot both win, on SQLite or PostgreSQL.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, col, select

from bot.models import Run, RunEvent, RunStatus, Step, StepStatus, new_id, utcnow
from bot.plans import Plan
from bot.runs import admission
from bot.runs.transitions import (
    TransitionError,
    add_event,
    conditional_update,
    finish_run,
    fresh_run,
    fresh_step,
    move_run,
    move_step,
    moved,
)
from bot.store import Store

ACTIVE_RUN = (RunStatus.queued, RunStatus.running, RunStatus.waiting)
TERMINAL_RUN = (RunStatus.succeeded, RunStatus.failed, RunStatus.cancelled)
UNFINISHED_STEP = (StepStatus.pending, StepStatus.queued, StepStatus.running, StepStatus.waiting)


@dataclass(frozen=True)
class RunRequest:
    """Who asked for what, where: everything a run needs from the event that started it."""

    installation_id: int
    repository: str
    thread_number: int
    thread_kind: str
    request: str
    requester: str
    trigger: str
    requester_id: int | None = None
    trigger_comment_id: int | None = None
    trigger_comment_kind: str | None = None
    delivery_id: str | None = None
    clone_url: str | None = None
    thread_url: str | None = None
    default_branch: str | None = None
    head_sha: str | None = None
    branch: str | None = None
    follows_run_id: str | None = None
    repository_id: int | None = None


@dataclass
class Progress:
    """What the engine must do after a change: steps to enqueue, runs to start, and whether to report."""

    enqueue: list[str] = field(default_factory=list)
    started_runs: list[str] = field(default_factory=list)
    run_status: RunStatus | None = None


def idempotency_key(run_id: str, name: str, inputs: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"{run_id}:{name}:{digest}"


def create(store: Store, request: RunRequest, plan: Plan, config: dict[str, Any]) -> Run:
    """Persist a run and its steps (all pending); `start` makes it go, or it waits behind the thread's run."""
    run = Run(
        id=new_id(),
        plan=plan.to_dict(),
        config=config,
        status=RunStatus.queued,
        **request.__dict__,
    )
    with store.session() as session:
        session.add(run)
        for position, spec in enumerate(plan.steps):
            step_id = new_id()
            session.add(
                Step(
                    id=step_id,
                    run_id=run.id,
                    position=position,
                    name=spec.name,
                    tool=spec.tool,
                    inputs=spec.inputs,
                    depends_on=list(spec.depends_on),
                    policy=spec.policy,
                    timeout_s=spec.timeout_s,
                    retries=spec.retries,
                    idempotency_key=idempotency_key(run.id, spec.name, spec.inputs),
                )
            )
        session.flush()
        add_event(session, run.id, "run.created", {"request": request.request, "requester": request.requester})
    return run


def start(store: Store, run_id: str) -> Progress:
    """Start a queued run unless another run is active on its thread (it stays queued behind it), or its
    installation or the server has as many active runs as allowed (it waits its turn: `bot.runs.admission`)."""
    with store.serialized() as session:
        run = fresh_run(session, run_id)
        if run.status != RunStatus.queued:  # admitted meanwhile by a run that ended
            return Progress(run_status=run.status)
        blocker = _active_run_on_thread(session, run)
        if blocker is not None:
            if run.behind_run_id != blocker.id:
                run.behind_run_id = blocker.id
                session.add(run)
                add_event(session, run.id, "run.queued_behind", {"behind_run_id": blocker.id})
            return Progress(run_status=RunStatus.queued)
        if not admission.admits(session, run, store.run_limits):
            run.behind_run_id = None  # no longer behind a run on its thread: in line with every other waiting run
            session.add(run)
            add_event(session, run.id, admission.QUEUED_FOR_CAPACITY, {"installation": run.installation_id})
            return Progress(run_status=RunStatus.queued)
        move_run(session, run, RunStatus.running, {"started": True})
        run.started_at = run.started_at or utcnow()
        run.behind_run_id = None
        session.add(run)
    return _advance(store, run_id)


def advance(store: Store, run_id: str) -> Progress:
    """After a step changed: enqueue what became ready, and settle the run when nothing is left to do."""
    return _advance(store, run_id)


def claim_step(store: Store, step_id: str, job_id: str | None) -> Step | None:
    """queued → running for exactly one job; None when another job has it or it is no longer queued."""
    with store.session() as session:
        now = utcnow()
        taken = conditional_update(
            session,
            Step,
            step_id,
            StepStatus.running,
            {
                "attempts": col(Step.attempts) + 1,
                "job_id": job_id,
                "heartbeat_at": now,
                "started_at": now,
                "error": None,
            },
            only_from=[StepStatus.queued],
        )
        if not taken:
            return None
        step = session.get(Step, step_id)
        assert step is not None
        session.refresh(step)
        queued_at = session.exec(
            select(RunEvent.created_at).where(RunEvent.step_id == step.id).order_by(col(RunEvent.id).desc())
        ).first()
        wait = max(0.0, (now - queued_at).total_seconds()) if queued_at else None
        payload = {"name": step.name, "tool": step.tool, "attempt": step.attempts, "queue_wait_s": wait}
        add_event(session, step.run_id, "step.started", payload, step.id)
        return step


def heartbeat(store: Store, step_id: str) -> bool:
    """A running step's worker is alive; False once the step is no longer running (cancelled)."""
    statement = (
        update(Step)
        .where(col(Step.id) == step_id, col(Step.status) == StepStatus.running)
        .values(heartbeat_at=utcnow())
    )
    with store.session() as session:
        return bool(session.exec(statement).rowcount)


def succeed_step(store: Store, step_id: str, output: dict[str, Any]) -> Progress:
    step = _step_transition(store, step_id, StepStatus.succeeded, "step.finished", output=output)
    return _advance(store, step.run_id)


def wait_step(store: Store, step_id: str, output: dict[str, Any]) -> Progress:
    """The step needs a person (an approval): the run waits until `decide` is called."""
    step = _step_transition(store, step_id, StepStatus.waiting, "step.waiting", output=output)
    return _advance(store, step.run_id)


def fail_step(store: Store, step_id: str, error: str, output: dict[str, Any] | None = None) -> Progress:
    step = _step_transition(store, step_id, StepStatus.failed, "step.failed", output=output, error=error)
    return _advance(store, step.run_id)


def requeue_step(store: Store, step_id: str, reason: str) -> Step:
    """running → queued for another attempt (retryable error, or its worker vanished)."""
    return _step_transition(store, step_id, StepStatus.queued, "step.retrying", error=reason, finished=False)


def resume_step(store: Store, step_id: str, reason: str) -> Progress:
    """waiting → queued for a step that waits on something other than a person (CI): its handler looks again.

    Conditional like every transition, so a webhook and a poll waking the same step at once enqueue it once;
    the loser gets an empty Progress.
    """
    with store.session() as session:
        step = fresh_step(session, step_id)
        if (
            step.status != StepStatus.waiting
            or step.tool == "manual:approval"
            or not moved(session, step, StepStatus.queued)
        ):
            return Progress()
        add_event(session, step.run_id, "step.resumed", {"name": step.name, "reason": reason}, step.id)
        run = fresh_run(session, step.run_id)
        if run.status == RunStatus.waiting:
            move_run(session, run, RunStatus.running, {"resumed_by": reason})
    return Progress(enqueue=[step_id], run_status=RunStatus.running)


def decide(store: Store, step_id: str, *, approved: bool, by: str, reason: str = "") -> Progress:
    """Resolve a waiting approval: approved resumes the run; rejected cancels it."""
    with store.session() as session:
        step = fresh_step(session, step_id)
        if step.status != StepStatus.waiting:
            raise TransitionError(
                f"step {step.name} of run {step.run_id} is {step.status.value}, not waiting for a decision"
            )
        if approved:
            move_step(session, step, StepStatus.succeeded, "step.approved", {"by": by})
        else:
            move_step(session, step, StepStatus.cancelled, "step.rejected", {"by": by, "reason": reason})
        step.decided_by = by
        step.finished_at = utcnow()
        session.add(step)
        run = fresh_run(session, step.run_id)
        if approved and run.status == RunStatus.waiting:
            move_run(session, run, RunStatus.running, {"resumed_by": by})
    if approved:
        return _advance(store, step.run_id)
    return cancel(store, step.run_id, by=by, reason=f"rejected by @{by}" + (f": {reason}" if reason else ""))


def cancel(store: Store, run_id: str, *, by: str, reason: str = "") -> Progress:
    """Stop a run: unfinished steps are cancelled (the runner stops a running job), the run is cancelled."""
    with store.session() as session:
        run = fresh_run(session, run_id)
        for step in session.exec(select(Step).where(Step.run_id == run_id, col(Step.status).in_(UNFINISHED_STEP))):
            move_step(session, step, StepStatus.cancelled, "step.cancelled", {"by": by})
            step.finished_at = utcnow()
            session.add(step)
        move_run(session, run, RunStatus.cancelled, {"by": by, "reason": reason})
        run.error = reason or f"cancelled by @{by}"
        finish_run(session, run)
    return _after_terminal(store, run_id, RunStatus.cancelled)


def retry(store: Store, run_id: str, step_name: str | None = None, *, by: str) -> Progress:
    """Re-run a failed step (default: every failed step) of a failed run, and everything that depends on it."""
    with store.session() as session:
        run = fresh_run(session, run_id)
        steps = list(session.exec(select(Step).where(Step.run_id == run_id).order_by(col(Step.position))))
        if step_name is not None:
            targets = [s for s in steps if s.name == step_name]
            if not targets:
                raise TransitionError(f"run {run_id} has no step named {step_name!r}")
        else:
            targets = [s for s in steps if s.status == StepStatus.failed]
        if run.status != RunStatus.failed:
            raise TransitionError(f"run {run_id} is {run.status.value}; only a failed run can be retried")
        if not targets or any(s.status != StepStatus.failed for s in targets):
            raise TransitionError(f"run {run_id}: only failed steps can be retried")
        if _active_run_on_thread(session, run) is not None:
            raise TransitionError(f"run {run_id}: another run is active on this thread")
        names = _with_dependents({s.name for s in targets}, steps)
        for step in steps:
            if step.name in names and step.status in (StepStatus.failed, StepStatus.skipped):
                move_step(session, step, StepStatus.pending, "step.reset", {"by": by})
                step.error, step.finished_at, step.output = None, None, {}
                session.add(step)
        move_run(session, run, RunStatus.running, {"retried_by": by, "steps": sorted(names)})
        run.error, run.finished_at = None, None
        session.add(run)
    return _advance(store, run_id)


def record_event(store: Store, run_id: str, type_: str, payload: dict[str, Any], step_id: str | None = None) -> None:
    """Events that are not status changes (a handler's progress, an LLM call's cost)."""
    with store.session() as session:
        add_event(session, run_id, type_, payload, step_id)


def add_usage(
    store: Store, step: Step, *, input_tokens: int, output_tokens: int, cost_usd: float, detail: dict[str, Any]
) -> None:
    """Charge an LLM call to its step and run (atomic increments: parallel steps share the run's total)."""
    with store.session() as session:
        session.exec(
            update(Step)
            .where(col(Step.id) == step.id)
            .values(
                input_tokens=col(Step.input_tokens) + input_tokens,
                output_tokens=col(Step.output_tokens) + output_tokens,
                cost_usd=col(Step.cost_usd) + cost_usd,
            )
        )
        session.exec(update(Run).where(col(Run.id) == step.run_id).values(cost_usd=col(Run.cost_usd) + cost_usd))
        add_event(
            session,
            step.run_id,
            "llm.call",
            {"input_tokens": input_tokens, "output_tokens": output_tokens, "cost_usd": round(cost_usd, 6), **detail},
            step.id,
        )


def set_run_fields(store: Store, run_id: str, **values: Any) -> None:
    """Record GitHub ids (status comment, check run) and costs; never a status."""
    if "status" in values:
        raise TransitionError("statuses change only through the transition functions")
    with store.session() as session:
        session.exec(update(Run).where(col(Run.id) == run_id).values(**values, updated_at=utcnow()))


# --- internals -------------------------------------------------------------------------------------


def _advance(store: Store, run_id: str) -> Progress:
    progress = Progress()
    with store.session() as session:
        run = fresh_run(session, run_id)
        progress.run_status = run.status
        if run.status != RunStatus.running:
            return progress
        steps = list(session.exec(select(Step).where(Step.run_id == run_id).order_by(col(Step.position))))
        by_name = {s.name: s for s in steps}
        failed = next((s for s in steps if s.status == StepStatus.failed), None)
        if failed is not None:
            for step in steps:
                if step.status == StepStatus.pending:
                    move_step(session, step, StepStatus.skipped, "step.skipped", {"reason": f"{failed.name} failed"})
                elif step.status == StepStatus.waiting:
                    move_step(
                        session, step, StepStatus.cancelled, "step.cancelled", {"reason": f"{failed.name} failed"}
                    )
            if not any(s.status in (StepStatus.queued, StepStatus.running) for s in steps):
                move_run(session, run, RunStatus.failed, {"failed_step": failed.name})
                run.error = f"step {failed.name} failed: {failed.error or 'no detail'}"
                finish_run(session, run)
                progress.run_status = RunStatus.failed
        else:
            for step in steps:
                deps_done = all(by_name[d].status == StepStatus.succeeded for d in step.depends_on)
                if step.status == StepStatus.pending and deps_done and moved(session, step, StepStatus.queued):
                    add_event(session, run_id, "step.enqueued", {"name": step.name}, step.id)
                    progress.enqueue.append(step.id)
            statuses = {s.status for s in steps}
            if statuses <= {StepStatus.succeeded, StepStatus.skipped}:
                move_run(session, run, RunStatus.succeeded, {})
                finish_run(session, run)
                progress.run_status = RunStatus.succeeded
            elif StepStatus.waiting in statuses and not statuses & {StepStatus.queued, StepStatus.running}:
                waiting_on = [s.name for s in steps if s.status == StepStatus.waiting]
                move_run(session, run, RunStatus.waiting, {"waiting_on": waiting_on})
                progress.run_status = RunStatus.waiting
    if progress.run_status in TERMINAL_RUN:
        following = _after_terminal(store, run_id, progress.run_status)
        progress.started_runs = following.started_runs
        progress.enqueue += following.enqueue
    return progress


def _after_terminal(store: Store, run_id: str, status: RunStatus) -> Progress:
    """A finished run releases its thread: the run queued behind it starts."""
    progress = Progress(run_status=status)
    with store.session() as session:
        waiting = session.exec(
            select(Run).where(Run.behind_run_id == run_id, Run.status == RunStatus.queued).order_by(col(Run.created_at))
        ).first()
        next_id = waiting.id if waiting else None
    if next_id is not None:
        started = start(store, next_id)
        if started.run_status != RunStatus.queued:
            progress.started_runs = [next_id, *started.started_runs]
            progress.enqueue = started.enqueue
    admitted = admit_waiting(store)
    progress.started_runs += admitted.started_runs
    progress.enqueue += admitted.enqueue
    return progress


def admit_waiting(store: Store) -> Progress:
    """Start the queued runs that fit the limits now, round robin across installations (also the sweeper's)."""
    progress = Progress()
    with store.session() as session:
        candidates = admission.next_to_start(session, store.run_limits)
    for run_id in candidates:
        started = start(store, run_id)
        if started.run_status != RunStatus.queued:
            progress.started_runs += [run_id, *started.started_runs]
            progress.enqueue += started.enqueue
    return progress


def _active_run_on_thread(session: Session, run: Run) -> Run | None:
    statement = select(Run).where(
        Run.repository == run.repository,
        Run.thread_number == run.thread_number,
        Run.id != run.id,
        col(Run.status).in_((RunStatus.running, RunStatus.waiting)),
    )
    return session.exec(statement.order_by(col(Run.created_at))).first()


def _with_dependents(names: set[str], steps: list[Step]) -> set[str]:
    result = set(names)
    changed = True
    while changed:
        changed = False
        for step in steps:
            if step.name not in result and result & set(step.depends_on):
                result.add(step.name)
                changed = True
    return result


def _step_transition(
    store: Store,
    step_id: str,
    to: StepStatus,
    event_type: str,
    *,
    output: dict[str, Any] | None = None,
    error: str | None = None,
    finished: bool = True,
) -> Step:
    with store.session() as session:
        step = fresh_step(session, step_id)
        payload: dict[str, Any] = {"name": step.name, "attempt": step.attempts}
        if error:
            payload["error"] = error
        move_step(session, step, to, event_type, payload)
        if output is not None:
            step.output = output
        step.error = error
        if finished and to != StepStatus.waiting:
            step.finished_at = utcnow()
        session.add(step)
        return step
