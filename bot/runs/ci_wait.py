"""Waking a `gate:ci` step that waits for the repository's CI: when a CI webhook names its commit or branch, or
when its poll is due (a webhook can be lost). A woken step's handler reads CI's state again through the API.

The step itself never sleeps on a worker: it returns `wait`, and one of these puts it back on the queue.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from bot import logs
from bot.models import utcnow
from bot.queue import WorkQueue
from bot.runs import queries, records
from bot.runs.progress import enqueue_progress
from bot.runs.transitions import TransitionError
from bot.store import Store

log = logging.getLogger(__name__)
CI_TOOL = "gate:ci"
POLL_EVERY = timedelta(seconds=60)


def wake_for(
    store: Store,
    queue: WorkQueue,
    repository: str,
    *,
    head_sha: str | None,
    branch: str | None,
    report: dict[str, Any],
) -> list[str]:
    """Resume the CI steps waiting on `head_sha`, or on `branch` (someone else may have pushed to it)."""
    woken = []
    for run, step in queries.waiting_steps(store, CI_TOOL, repository):
        output = step.output or {}
        if not (head_sha and head_sha == output.get("head_sha")) and not (branch and branch == output.get("branch")):
            continue
        records.record_event(store, run.id, "ci.reported", {"step": step.name, **report}, step.id)
        if _resume(store, queue, run.id, step.id, f"{report.get('event', 'webhook')}"):
            woken.append(step.id)
    return woken


def poll_due(store: Store, queue: WorkQueue, *, every: timedelta = POLL_EVERY) -> list[str]:
    """Resume the CI steps nothing has woken for `every`: the fallback for lost webhooks, and the timeout's clock."""
    now = utcnow()
    woken = []
    for run, step in queries.waiting_steps(store, CI_TOOL):
        checked = _when((step.output or {}).get("checked_at"))
        if (checked is None or checked <= now - every) and _resume(store, queue, run.id, step.id, "poll"):
            woken.append(step.id)
    return woken


def _resume(store: Store, queue: WorkQueue, run_id: str, step_id: str, reason: str) -> bool:
    try:
        progress = records.resume_step(store, step_id, reason)
    except TransitionError:  # the run was cancelled meanwhile
        return False
    if not progress.enqueue:
        return False
    log.info("CI step resumed (%s)", reason, extra=logs.fields(run_id=run_id, step_id=step_id))
    enqueue_progress(store, queue, progress, run_id)
    return True


def _when(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None
