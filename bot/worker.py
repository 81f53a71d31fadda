"""The worker process: runs RQ jobs and sweeps deliveries the queue never received."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from rq import SimpleWorker

from bot import deliveries, identity, jobs
from bot.runtime import Runtime

log = logging.getLogger(__name__)
SWEEP_EVERY_S = 15.0
STALE_AFTER = timedelta(seconds=30)


def run_worker(runtime: Runtime, *, burst: bool = False, max_jobs: int | None = None) -> None:
    """Serve jobs until stopped. Jobs run in this process so token caches and the loop stay warm."""
    jobs.use_runtime(runtime)
    runtime.store.create_all()
    _refresh_identity(runtime)
    stop = threading.Event()
    if not burst:
        threading.Thread(target=_sweep_forever, args=(runtime, stop), name="sweeper", daemon=True).start()
    worker = SimpleWorker([runtime.queue.queue], connection=runtime.queue.redis)
    try:
        worker.work(burst=burst, max_jobs=max_jobs, logging_level="WARNING")
    finally:
        stop.set()


def sweep(runtime: Runtime) -> list[str]:
    """Enqueue deliveries that were recorded while the queue was down; returns their ids."""
    stale = deliveries.stale_received(runtime.store, STALE_AFTER)
    for delivery_id in stale:
        deliveries.enqueue(runtime.store, runtime.queue, delivery_id)
        log.info("re-enqueued a delivery the queue never received", extra={"fields": {"delivery_id": delivery_id}})
    return stale


def _sweep_forever(runtime: Runtime, stop: threading.Event) -> None:
    while not stop.wait(SWEEP_EVERY_S):
        try:
            sweep(runtime)
        except Exception:  # the sweeper must outlive a database or queue hiccup
            log.exception("delivery sweep failed; trying again in %ss", SWEEP_EVERY_S)


def _refresh_identity(runtime: Runtime) -> None:
    if runtime.github is None:
        log.warning("GitHub App not configured: open the web page to register it")
        return
    try:
        app = runtime.run(identity.refresh(runtime.github, runtime.store))
        log.info("running as GitHub App %s", app.slug)
    except Exception:  # a worker still serves installation events without it; retried next start
        log.exception("could not fetch the App's identity from GitHub")
