"""Fair admission of runs: a busy installation cannot take every worker from the others.

At most `RunLimits.per_installation` runs of one installation, and `RunLimits.total` runs in all, are active
(running or waiting) at once; a run over the limit stays queued. When a run ends, the queued runs that may start
are taken round robin across installations: the installation with the fewest active runs first, then the one
whose oldest queued run has waited longest.
"""

from __future__ import annotations

from collections import Counter

from sqlmodel import Session, col, func, select

from bot.models import Run, RunEvent, RunStatus
from bot.settings import RunLimits

ACTIVE = (RunStatus.running, RunStatus.waiting)
QUEUED_FOR_CAPACITY = "run.queued_for_capacity"  # the event `start` records when it holds a run back


def admits(session: Session, run: Run, limits: RunLimits) -> bool:
    """Whether `run` may become active now (call inside `Store.serialized`, so the counts cannot go stale)."""
    active = _active_counts(session)
    if limits.total and sum(active.values()) >= limits.total:
        return False
    return not (limits.per_installation and active[run.installation_id] >= limits.per_installation)


def next_to_start(session: Session, limits: RunLimits) -> list[str]:
    """Runs waiting for capacity that fit the limits now, in round-robin order.

    Only runs `start` held back for capacity: one just created is about to be started by whoever created it.
    """
    active = _active_counts(session)
    held_back = select(RunEvent.run_id).where(RunEvent.type == QUEUED_FOR_CAPACITY)
    queued = session.exec(
        select(Run)
        .where(Run.status == RunStatus.queued, col(Run.behind_run_id).is_(None), col(Run.id).in_(held_back))
        .order_by(col(Run.created_at))
    ).all()
    waiting: dict[int, list[Run]] = {}
    for run in queued:
        waiting.setdefault(run.installation_id, []).append(run)
    total = sum(active.values())
    chosen: list[str] = []
    while waiting and not (limits.total and total >= limits.total):
        ready = [i for i in waiting if not (limits.per_installation and active[i] >= limits.per_installation)]
        if not ready:
            break
        installation = min(ready, key=lambda i: (active[i], waiting[i][0].created_at))
        run = waiting[installation].pop(0)
        if not waiting[installation]:
            del waiting[installation]
        chosen.append(run.id)
        active[installation] += 1
        total += 1
    return chosen


def _active_counts(session: Session) -> Counter[int]:
    rows = session.exec(
        select(Run.installation_id, func.count()).where(col(Run.status).in_(ACTIVE)).group_by(col(Run.installation_id))
    ).all()
    return Counter({installation: count for installation, count in rows})
