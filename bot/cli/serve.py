"""`nofx serve`: the embedded queue, supervised worker processes and the web server in one tree."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace

from starlette.applications import Starlette

from bot.cli.web_server import WebProcesses
from bot.queue import die_with_parent, start_embedded_valkey
from bot.settings import Settings
from bot.store import Store
from bot.web.guards import setup_url
from bot.web.webhook_proxy import ChannelRelay, relay_target

log = logging.getLogger(__name__)
RESTART_BACKOFF_S = (1, 2, 5, 10, 30)
STOP_GRACE_S = 10
HEALTHY_AFTER_S = 60  # a worker that ran this long resets its restart backoff
# On one machine a burst of deliveries and their routing compete for the CPU: GitHub gives each delivery 10 s
# to be answered, routing has no deadline and catches up after the burst, so the workers run at a lower priority.
WORKER_NICENESS = 10


def serve(settings: Settings, *, host: str, workers: int) -> int:
    """Run until SIGINT/SIGTERM; a worker that dies is restarted with backoff."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(settings.database_url)
    store.create_all()
    store.dispose()  # the web processes fork next: they hold no connection of ours
    valkey = None
    if not settings.redis_url:
        valkey = start_embedded_valkey(settings.data_dir)
        settings = replace(settings, redis_url=valkey.url)
        log.info("embedded Valkey started on %s (password in %s)", valkey.socket, valkey.socket.parent / "password")
    web = WebProcesses(settings, host)
    web.start()  # forks the other web processes before this one starts threads
    pool = WorkerPool(settings, size=max(workers, 0))
    pool.start()
    relay = None
    if settings.webhook_proxy_url:
        relay = ChannelRelay(settings.webhook_proxy_url, relay_target(host, settings.port))
        relay.start()
        log.info("relaying deliveries from the webhook proxy channel (WEBHOOK_PROXY_URL)")
    try:
        app = web.app()
        announce_setup_code(app, settings, host)
        log.info("serving on http://%s:%s", host, settings.port)
        # uvicorn re-raises the signal that stopped it once it has shut down; a no-op handler
        # underneath lets that happen without killing us before the workers and Valkey stop.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda _sig, _frame: None)
        code = web.serve(app)
    finally:
        if relay is not None:
            relay.stop.set()
        pool.stop()
        if valkey is not None:
            valkey.stop()
    return code


def announce_setup_code(app: Starlette, settings: Settings, host: str) -> None:
    """Print where to register the App, with the setup code, as Jupyter prints its token (stderr, not the logs)."""
    code = app.state.setup_code
    if not code:
        return
    local = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104 (a wildcard is not an address to open)
    base = settings.public_url or f"http://{local}:{settings.port}"
    print(
        "nofx: the GitHub App is not registered yet. To register it, open\n"
        f"    {setup_url(base, code)}\n"
        "(the setup code works until the App is registered and changes at every start)",
        file=sys.stderr,
        flush=True,
    )


def _worker_child() -> None:
    """In a worker child before it runs: it dies with `serve`, and yields the CPU to the web process."""
    die_with_parent()
    os.nice(WORKER_NICENESS)


class WorkerPool:
    """`nofx worker` child processes, restarted when they exit, stopped warm on shutdown."""

    def __init__(self, settings: Settings, size: int) -> None:
        self._env = {
            **os.environ,
            "REDIS_URL": settings.redis_url or "",
            "DATABASE_URL": settings.database_url,
            "NOFX_DATA_DIR": str(settings.data_dir),
        }
        self._procs: list[subprocess.Popen[bytes] | None] = [None] * size
        self._started = [0.0] * size
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="worker-supervisor", daemon=True)

    def start(self) -> None:
        for slot in range(len(self._procs)):
            self._spawn(slot)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        live = [p for p in self._procs if p is not None and p.poll() is None]
        for proc in live:
            proc.send_signal(signal.SIGTERM)  # RQ finishes the current job, then exits
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in live:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _spawn(self, slot: int) -> None:
        self._procs[slot] = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "worker"], env=self._env, preexec_fn=_worker_child
        )
        self._started[slot] = time.monotonic()

    def _supervise(self) -> None:
        failures = [0] * len(self._procs)
        while not self._stopping.wait(1.0):
            for slot, proc in enumerate(self._procs):
                if proc is None or proc.poll() is None:
                    continue
                if time.monotonic() - self._started[slot] > HEALTHY_AFTER_S:
                    failures[slot] = 0
                delay = RESTART_BACKOFF_S[min(failures[slot], len(RESTART_BACKOFF_S) - 1)]
                log.warning("worker exited with %s; restarting in %ss", proc.returncode, delay)
                failures[slot] += 1
                if self._stopping.wait(delay):
                    return
                self._spawn(slot)
