"""Moving one run or step to a new status: the state machines, and the conditional UPDATE that is the one place a
status is written. Only `bot.runs.records` calls these, inside its transactions."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from sqlalchemy import update
from sqlmodel import Session, SQLModel

from bot.models import Run, RunEvent, RunStatus, Step, StepStatus, utcnow

RUN_MACHINE: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.queued: frozenset({RunStatus.running, RunStatus.failed, RunStatus.cancelled}),
    RunStatus.running: frozenset({RunStatus.waiting, RunStatus.succeeded, RunStatus.failed, RunStatus.cancelled}),
    RunStatus.waiting: frozenset({RunStatus.running, RunStatus.failed, RunStatus.cancelled}),
    RunStatus.failed: frozenset({RunStatus.running}),  # `/nofx retry`
    RunStatus.succeeded: frozenset(),
    RunStatus.cancelled: frozenset(),
}
STEP_MACHINE: dict[StepStatus, frozenset[StepStatus]] = {
    StepStatus.pending: frozenset({StepStatus.queued, StepStatus.skipped, StepStatus.cancelled}),
    StepStatus.queued: frozenset({StepStatus.running, StepStatus.cancelled}),
    StepStatus.running: frozenset(
        {StepStatus.succeeded, StepStatus.failed, StepStatus.waiting, StepStatus.queued, StepStatus.cancelled}
    ),
    StepStatus.waiting: frozenset(
        {StepStatus.succeeded, StepStatus.cancelled, StepStatus.failed, StepStatus.queued}  # queued: `resume_step`
    ),
    StepStatus.failed: frozenset({StepStatus.pending}),  # `/nofx retry`
    StepStatus.skipped: frozenset({StepStatus.pending}),  # retry of what it depended on
    StepStatus.cancelled: frozenset(),
    StepStatus.succeeded: frozenset(),
}
RowT = TypeVar("RowT", Run, Step)


class TransitionError(RuntimeError):
    """A forbidden status change was asked for; the message names the object and both states."""


def move_run(session: Session, run: Run, to: RunStatus, payload: dict[str, Any]) -> None:
    if not conditional_update(session, Run, run.id, to, {}, only_from=[run.status]):
        current = session.get(Run, run.id)
        raise TransitionError(f"run {run.id}: {current.status.value if current else '?'} → {to.value} is not allowed")
    run.status = to
    run.updated_at = utcnow()
    add_event(session, run.id, f"run.{to.value}", payload)


def move_step(session: Session, step: Step, to: StepStatus, event_type: str, payload: dict[str, Any]) -> None:
    if not moved(session, step, to):
        raise TransitionError(f"step {step.name} of run {step.run_id}: {step.status.value} → {to.value} is not allowed")
    add_event(session, step.run_id, event_type, {"name": step.name, **payload}, step.id)


def moved(session: Session, step: Step, to: StepStatus) -> bool:
    if not conditional_update(session, Step, step.id, to, {}, only_from=[step.status]):
        return False
    step.status = to
    return True


def conditional_update(
    session: Session,
    model: type[SQLModel],
    row_id: str,
    to: RunStatus | StepStatus,
    values: dict[str, Any],
    *,
    only_from: Iterable[RunStatus | StepStatus],
) -> bool:
    """UPDATE ... WHERE status IN (from-states that may reach `to`): the one place status is written."""
    machine: dict[Any, frozenset[Any]] = RUN_MACHINE if model is Run else STEP_MACHINE
    allowed = [state for state in only_from if to in machine[state]]
    if not allowed:
        return False
    extra = {"updated_at": utcnow()} if model is Run else {}
    statement = (
        update(model)
        .where(model.id == row_id, model.status.in_(allowed))  # type: ignore[attr-defined]
        .values(status=to, **values, **extra)
    )
    result = session.exec(statement)
    return bool(result.rowcount)


def finish_run(session: Session, run: Run) -> None:
    run.finished_at = utcnow()
    session.add(run)


def add_event(session: Session, run_id: str, type_: str, payload: dict[str, Any], step_id: str | None = None) -> None:
    session.add(RunEvent(run_id=run_id, step_id=step_id, type=type_, payload=payload))


def fresh_run(session: Session, run_id: str) -> Run:
    return _fresh(session, Run, run_id)


def fresh_step(session: Session, step_id: str) -> Step:
    return _fresh(session, Step, step_id)


def _fresh(session: Session, model: type[RowT], row_id: str) -> RowT:
    """The row as it is in the database now (another worker may have moved it)."""
    row = session.get(model, row_id)
    if row is None:
        raise TransitionError(f"{model.__name__.lower()} {row_id} does not exist")
    session.refresh(row)
    return row
