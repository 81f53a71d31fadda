"""After a run changed: enqueue the steps that became ready and ask for the run to be shown on GitHub.

Only enqueues, so the web process (the runs API) may call it as well as the workers.
"""

from __future__ import annotations

from bot.queue import WorkQueue
from bot.runs import queries, records, report
from bot.store import Store


def enqueue_progress(store: Store, queue: WorkQueue, progress: records.Progress, run_id: str) -> None:
    """Queue each ready step's next attempt, a publish of every run that moved, and the cleanup of a finished one."""
    for step_id in progress.enqueue:
        step = queries.get_step(store, step_id)
        if step is not None:
            queue.enqueue_step(step.id, step.attempts + 1, step.timeout_s)
    for started in progress.started_runs:
        report.request_publish(queue, started)
    report.request_publish(queue, run_id)
    if progress.run_status in records.TERMINAL_RUN:
        queue.enqueue_cleanup()
