"""What a worker does once when it starts, beside serving jobs: learn the installations GitHub knows, and have
GitHub redeliver what it sent while no worker was up."""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import timedelta

from bot import deliveries, logs
from bot.events import installations
from bot.github import recovery
from bot.github.client import GitHubApp
from bot.models import utcnow
from bot.worker.runtime import Runtime

log = logging.getLogger(__name__)
RECOVER_AT_MOST = timedelta(hours=6)  # after a longer outage, `nofx recover --since 3d` reaches further
RECOVERY_LOCK = "nofx:recovery"  # workers starting together: one of them asks GitHub
RECOVERY_LOCK_S = 300


def start_in_background(runtime: Runtime) -> threading.Thread | None:
    """Run the start-up tasks in a thread of their own, so dispatching begins at once; None without an App."""
    if runtime.github is None:
        return None
    thread = threading.Thread(target=run, args=(runtime,), name="startup", daemon=True)
    thread.start()
    return thread


def run(runtime: Runtime) -> None:
    """Each task on an event loop and GitHub client of this thread's own (the job loop is not shared)."""
    asyncio.run(_run(runtime))


async def _run(runtime: Runtime) -> None:
    async with GitHubApp.from_settings(runtime.settings, on_secret=runtime.redactor.add) as github:
        try:
            found, repositories = await installations.sync(runtime.store, github)
            log.info("installations synced", extra=logs.fields(installations=found, repositories=repositories))
        except Exception:  # deliveries still learn their installation one by one; retried next start
            log.exception("syncing installations from GitHub failed")
        if not runtime.queue.shared.claim(RECOVERY_LOCK, RECOVERY_LOCK_S):
            return
        since = max(deliveries.last_received(runtime.store) or utcnow(), utcnow() - RECOVER_AT_MOST)
        try:
            await recovery.recover(github, runtime.store, since - timedelta(minutes=1))
        except Exception:  # a worker serves jobs without it; `nofx recover` does it by hand
            log.exception("asking GitHub to redeliver missed deliveries failed")
