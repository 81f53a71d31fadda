"""The worker process: runs RQ jobs; its maintenance thread re-enqueues what the queue lost and reaps dead steps."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import FrameType

from rq import Queue, SimpleWorker
from rq.job import Job
from rq.worker import DequeueStrategy

from bot import deliveries, logs
from bot.github import identity
from bot.metrics import workers as worker_metrics
from bot.models import Step, StepStatus, utcnow
from bot.queue import DISPATCH_LANE, REVIEW_JOB_TIMEOUT_S, WORK_LANE, SharedState, dispatch_job_id, step_job_id
from bot.review.pass_records import restart_abandoned
from bot.runs import ci_wait, memory, queries, records
from bot.runs.transitions import TransitionError
from bot.worker import jobs, startup
from bot.worker.routing import RoutingThreads
from bot.worker.runtime import Runtime

log = logging.getLogger(__name__)
SWEEP_EVERY_S = 10.0
TRIM_SETUPS_EVERY_S = 600.0  # setup results are trimmed after each new setup; this catches the rest (a disk walk)
INTAKE_WAIT_S = 1.0  # how long one wait for intake ids blocks (under the queue client's 5 s socket timeout)
SCHEDULE_EVERY_S = 0.25  # delayed jobs (report coalescing, retry backoff) start at most this late
STALE_AFTER = timedelta(seconds=30)
# Routing a delivery takes seconds (its job times out after DISPATCH_TIMEOUT_S); longer means its worker died.
ABANDONED_AFTER = timedelta(minutes=10)
# A review pass's job is killed by RQ after REVIEW_JOB_TIMEOUT_S; still `running` well after that, its worker died.
ABANDONED_REVIEW_AFTER = timedelta(seconds=REVIEW_JOB_TIMEOUT_S + 120)
# A running step's heartbeat comes every 5 s; six missed beats mean its worker is gone (killed, crashed).
DEAD_STEP_AFTER = timedelta(seconds=30)
# A queued step whose RQ job vanished (Redis restarted without persistence) is enqueued again.
LOST_JOB_AFTER = timedelta(seconds=60)


class Worker(SimpleWorker):
    """RQ's in-process worker: steps and reviews in turn (a long review queue does not starve steps, nor steps
    reviews), deliveries and reports only when neither waits; records how long each job waited in its queue
    (`/metrics`). A run's status moves on while its steps keep this lane busy: the dispatch lane beside every
    work lane publishes it. `on_stop` is told at once when a stop is asked for (SIGTERM, SIGINT), before RQ
    waits for its current job: the routing threads stop taking deliveries meanwhile."""

    on_stop: Callable[[], None] | None = None
    before_job: Callable[[], None] | None = None  # the dispatch lane: acknowledging deliveries comes first

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        if self.on_stop is not None:
            self.on_stop()
        super().request_stop(signum, frame)  # type: ignore[no-untyped-call]

    def reorder_queues(self, reference_queue: Queue) -> None:
        work = [q for q in self._ordered_queues if q.name not in DISPATCH_LANE]
        dispatch = [q for q in self._ordered_queues if q.name in DISPATCH_LANE]
        if reference_queue in work:
            position = work.index(reference_queue)
            work = work[position + 1 :] + work[: position + 1]
        self._ordered_queues = work + dispatch

    def execute_job(self, job: Job, queue: Queue) -> None:
        if self.before_job is not None:
            self.before_job()
        if job.enqueued_at is not None:
            enqueued = job.enqueued_at if job.enqueued_at.tzinfo else job.enqueued_at.replace(tzinfo=UTC)
            worker_metrics.record_queue_wait(
                SharedState(self.connection), queue.name, (utcnow() - enqueued).total_seconds()
            )
        super().execute_job(job, queue)


def run_worker(
    runtime: Runtime,
    *,
    burst: bool = False,
    max_jobs: int | None = None,
    lane: tuple[str, ...] = WORK_LANE,
    maintenance: bool = True,
) -> None:
    """Serve the lane's queues until stopped. Jobs run in this process so token caches and the loop stay warm.

    The work lane takes steps and reviews in turn (round robin), and deliveries and reports when neither waits;
    the dispatch lane takes only deliveries and reports, and (unless in burst mode) routes the intake list's
    deliveries on threads of its own, many at once (`bot.worker.routing`). `maintenance` runs the start-up
    sync, the sweeper and the scheduler beside it (one lane per worker needs them), and the intake thread that
    turns intake ids into dispatch jobs while no dispatch lane is up to take them.
    """
    jobs.use_runtime(runtime)
    runtime.store.create_all()
    stop = threading.Event()
    if maintenance:
        _refresh_identity(runtime)
    if maintenance and not burst:
        startup.start_in_background(runtime)
        threading.Thread(target=_sweep_forever, args=(runtime, stop), name="sweeper", daemon=True).start()
        threading.Thread(target=_schedule_forever, args=(runtime, stop), name="scheduler", daemon=True).start()
        threading.Thread(target=_fan_out_forever, args=(runtime, stop), name="intake", daemon=True).start()
    elif maintenance:
        runtime.queue.fan_out_intake()  # a burst serves what is waiting, deliveries the web recorded included
    routing = RoutingThreads(runtime) if lane == DISPATCH_LANE and not burst else None
    if routing is not None:
        routing.start()
    worker = Worker(runtime.queue.lane(lane), connection=runtime.queue.redis)
    worker.on_stop = routing.stop_taking if routing is not None else None
    worker.before_job = routing.wait_for_acknowledgements if routing is not None else None
    try:
        # Not RQ's scheduler: it forks, and the fork keeps the worker's Redis sockets open after the worker
        # is killed, so the server goes on handing jobs to a dead reader. A thread moves due jobs instead.
        worker.work(
            burst=burst,
            max_jobs=max_jobs,
            logging_level="WARNING",
            with_scheduler=False,
            dequeue_strategy=DequeueStrategy.ROUND_ROBIN,
        )
    finally:
        stop.set()
        if routing is not None:
            routing.stop()  # after RQ's warm shutdown (SIGTERM): the deliveries being routed are finished


def sweep(runtime: Runtime) -> list[str]:
    """Enqueue deliveries that were recorded while the queue was down; returns their ids. Intake ids a killed
    dispatch lane held go back on the intake list first."""
    memory.purge_expired(runtime.store)
    for delivery_id in runtime.queue.reclaim_taken():
        log.warning(
            "delivery taken by a dispatch lane that stopped; back on the intake list",
            extra=logs.fields(delivery_id=delivery_id),
        )
    for delivery_id in deliveries.fail_abandoned(runtime.store, ABANDONED_AFTER):
        log.warning("delivery abandoned by its worker; marked failed", extra=logs.fields(delivery_id=delivery_id))
    for pass_id in restart_abandoned(runtime.store, runtime.queue, ABANDONED_REVIEW_AFTER):
        log.warning("review pass abandoned by its worker; queued again", extra=logs.fields(review_pass=pass_id))
    lost = [
        delivery_id
        for delivery_id in deliveries.stale_queued(runtime.store, LOST_JOB_AFTER)
        if not runtime.queue.job_exists(dispatch_job_id(delivery_id))
    ]
    if lost:  # still on the intake list (its workers are slow or down) or being routed is not lost
        waiting = set(runtime.queue.intake_waiting()) | set(runtime.queue.intake_taken())
        lost = [delivery_id for delivery_id in lost if delivery_id not in waiting]
    stale = deliveries.stale_received(runtime.store, STALE_AFTER) + lost
    for delivery_id in stale:
        deliveries.enqueue(runtime.store, runtime.queue, delivery_id)
        log.info("re-enqueued a delivery the queue never received", extra={"fields": {"delivery_id": delivery_id}})
    return stale


def reap(runtime: Runtime, *, dead_after: timedelta = DEAD_STEP_AFTER) -> list[str]:
    """Retry (or fail) steps whose worker died mid-step, and re-enqueue queued steps whose job is lost."""
    reaped: list[str] = []
    admitted = records.admit_waiting(runtime.store)  # normally done as runs end; this catches any left waiting
    if admitted.started_runs:
        runtime.engine.after(admitted, admitted.started_runs[0])
    now = utcnow()
    for step in queries.unfinished_steps(runtime.store):
        if step.status == StepStatus.running and (step.heartbeat_at or now) < now - dead_after:
            reaped.append(step.id)
            _reap_dead(runtime, step)
        elif (
            step.status == StepStatus.queued
            and _queued_since(runtime, step) < now - LOST_JOB_AFTER
            and not runtime.queue.job_exists(step_job_id(step.id, step.attempts + 1))
        ):
            reaped.append(step.id)
            log.warning("re-enqueued step %s: its job was lost", step.name, extra=logs.fields(step_id=step.id))
            runtime.engine.enqueue(step.id)
    return reaped


def _reap_dead(runtime: Runtime, step: Step) -> None:
    reason = "the worker running this step stopped (killed or crashed)"
    try:
        # A worker's death is not the step's failure: it runs once more even without retries; a second death fails it.
        if step.attempts <= step.retries + 1:
            records.requeue_step(runtime.store, step.id, reason)
            runtime.engine.enqueue(step.id)
            progress = records.advance(runtime.store, step.run_id)
        else:
            progress = records.fail_step(runtime.store, step.id, f"{reason}; no retries left")
    except TransitionError:  # it finished or was cancelled meanwhile
        return
    log.warning("reaped step %s of run %s: %s", step.name, step.run_id, reason)
    runtime.engine.after(progress, step.run_id)


def poll_ci(runtime: Runtime) -> list[str]:
    """Look at CI again for the `gate:ci` steps no webhook has woken for a while (a delivery can be lost)."""
    return ci_wait.poll_due(runtime.store, runtime.queue)


def _queued_since(runtime: Runtime, step: Step) -> datetime:
    return queries.last_event_time(runtime.store, step.id) or utcnow()


def _schedule_forever(runtime: Runtime, stop: threading.Event) -> None:
    while not stop.wait(SCHEDULE_EVERY_S):
        try:
            runtime.queue.enqueue_due()
        except Exception:  # the scheduler must outlive a queue hiccup
            log.exception("moving delayed jobs failed; trying again")


def _fan_out_forever(runtime: Runtime, stop: threading.Event) -> None:
    """Turn the ids the web puts on the intake list into dispatch jobs as they come (`IntakePusher`),
    while no dispatch lane is up to take them itself (one starting, or crashed, or a work lane run alone)."""
    while not stop.is_set():
        try:
            if runtime.queue.dispatch_lanes_alive():
                stop.wait(INTAKE_WAIT_S)
                continue
            runtime.queue.fan_out_intake(wait_s=INTAKE_WAIT_S)
        except Exception:  # must outlive a queue hiccup; the sweeper finds whatever this lost
            log.exception("turning intake ids into dispatch jobs failed; trying again")
            stop.wait(INTAKE_WAIT_S)


def _report_usage(runtime: Runtime) -> None:
    worker_metrics.report_usage(runtime.queue.shared)


def _trim_setups(runtime: Runtime) -> None:
    runtime.engine.trim_setups()


def _sweep_forever(runtime: Runtime, stop: threading.Event) -> None:
    trimmed = time.monotonic()
    while not stop.wait(SWEEP_EVERY_S):
        tasks = [sweep, reap, poll_ci, _report_usage]
        if time.monotonic() - trimmed >= TRIM_SETUPS_EVERY_S:
            trimmed = time.monotonic()
            tasks.append(_trim_setups)
        for task in tasks:
            try:
                task(runtime)
            except Exception:  # maintenance must outlive a database or queue hiccup
                log.exception("%s failed; trying again in %ss", task.__name__, SWEEP_EVERY_S)


def _refresh_identity(runtime: Runtime) -> None:
    if runtime.github is None:
        log.warning("GitHub App not configured: open the web page to register it")
        return
    try:
        app = runtime.run(identity.refresh(runtime.github, runtime.store))
        log.info("running as GitHub App %s", app.slug)
    except Exception:  # a worker still serves installation events without it; retried next start
        log.exception("could not fetch the App's identity from GitHub")
