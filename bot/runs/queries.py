"""Read queries over runs, steps and their events; statuses are written only by `bot.runs.records`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func
from sqlmodel import col, select

from bot.models import Repository, Run, RunEvent, RunStatus, Step, StepStatus, utcnow
from bot.runs.records import ACTIVE_RUN
from bot.store import Store


def get_run(store: Store, run_id: str) -> Run | None:
    with store.session() as session:
        return session.get(Run, run_id)


def get_step(store: Store, step_id: str) -> Step | None:
    with store.session() as session:
        return session.get(Step, step_id)


def steps_of(store: Store, run_id: str) -> list[Step]:
    with store.session() as session:
        return list(session.exec(select(Step).where(Step.run_id == run_id).order_by(col(Step.position))))


def events_of(store: Store, run_id: str, after_id: int = 0) -> list[RunEvent]:
    with store.session() as session:
        statement = select(RunEvent).where(RunEvent.run_id == run_id, col(RunEvent.id) > after_id)
        return list(session.exec(statement.order_by(col(RunEvent.id))))


def active_run_on_thread(store: Store, repository: str, thread_number: int) -> Run | None:
    """The run people mean by `/nofx approve` or `cancel`: the one going (or waiting) on the thread,
    else the newest queued one."""
    with store.session() as session:
        for statuses in ((RunStatus.running, RunStatus.waiting), (RunStatus.queued,)):
            statement = (
                select(Run)
                .where(Run.repository == repository, Run.thread_number == thread_number, col(Run.status).in_(statuses))
                .order_by(col(Run.created_at).desc())
            )
            run = session.exec(statement).first()
            if run is not None:
                return run
        return None


def latest_run_on_thread(store: Store, repository: str, thread_number: int) -> Run | None:
    with store.session() as session:
        statement = (
            select(Run)
            .where(Run.repository == repository, Run.thread_number == thread_number)
            .order_by(col(Run.created_at).desc())
        )
        return session.exec(statement).first()


def latest_run_on_branch(store: Store, repository: str, branch: str) -> Run | None:
    """The run that last pushed to a branch: a comment on its pull request follows up on it."""
    with store.session() as session:
        statement = (
            select(Run).where(Run.repository == repository, Run.branch == branch).order_by(col(Run.created_at).desc())
        )
        return session.exec(statement).first()


def runs_keeping_worktrees(store: Store, retry_window: timedelta) -> set[str]:
    """Runs whose worktree must stay: unfinished ones, and failed ones that may still be retried.

    A retried step must see the edits earlier steps applied, so a failed run keeps its worktree for
    `retry_window`; after that a retry starts over from a fresh checkout of the base.
    """
    cutoff = utcnow() - retry_window
    with store.session() as session:
        statement = select(Run.id).where(
            col(Run.status).in_(ACTIVE_RUN) | ((col(Run.status) == RunStatus.failed) & (col(Run.finished_at) > cutoff))
        )
        return set(session.exec(statement))


def unfinished_steps(store: Store) -> list[Step]:
    """Steps the reaper watches: queued (is their job still there?) and running (is their worker alive?)."""
    with store.session() as session:
        statement = select(Step).where(col(Step.status).in_((StepStatus.queued, StepStatus.running)))
        return list(session.exec(statement))


def last_event_time(store: Store, step_id: str) -> datetime | None:
    with store.session() as session:
        statement = select(RunEvent.created_at).where(RunEvent.step_id == step_id).order_by(col(RunEvent.id).desc())
        return session.exec(statement).first()


def waiting_steps(store: Store, tool: str, repository: str | None = None) -> list[tuple[Run, Step]]:
    """Steps of one tool waiting in active runs (of one repository), with their run: what a wake-up may resume."""
    with store.session() as session:
        statement = (
            select(Run, Step)
            .join(Step, col(Step.run_id) == col(Run.id))
            .where(Step.tool == tool, Step.status == StepStatus.waiting, col(Run.status).in_(ACTIVE_RUN))
        )
        if repository is not None:
            statement = statement.where(Run.repository == repository)
        return [(run, step) for run, step in session.exec(statement)]


def setup_steps_in_use(store: Store) -> list[tuple[Run, Step]]:
    """The `setup` steps of unfinished runs, with their run: the results eviction must keep for their later steps."""
    with store.session() as session:
        statement = (
            select(Run, Step)
            .join(Step, col(Step.run_id) == col(Run.id))
            .where(Step.tool == "setup", col(Run.status).in_(ACTIVE_RUN))
        )
        return [(run, step) for run, step in session.exec(statement)]


@dataclass(frozen=True)
class ServedRepository:
    """A repository an installation of this server serves: its name as GitHub spells it and GitHub's id of it."""

    installation_id: int
    full_name: str
    repository_id: int


def served_repository(store: Store, repo: str) -> ServedRepository | None:
    """The repository `repo` names among those served (names ignore case), or None."""
    with store.session() as session:
        row = session.exec(
            select(Repository.installation_id, Repository.full_name, Repository.id).where(
                func.lower(Repository.full_name) == repo.lower(), col(Repository.removed).is_(False)
            )
        ).first()
    return ServedRepository(int(row[0]), str(row[1]), int(row[2])) if row is not None else None
