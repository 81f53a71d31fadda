"""What a worker does once when it starts, beside serving jobs: learn the installations GitHub knows."""

from __future__ import annotations

import asyncio
import logging
import threading

from bot import logs
from bot.events import installations
from bot.github.client import GitHubApp
from bot.worker.runtime import Runtime

log = logging.getLogger(__name__)


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
