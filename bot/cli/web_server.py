"""The processes that serve the web port: one, or several forked after the imports, sharing one listening socket.

One Python process answers 5,300-5,900 deliveries/s (bench/intake.py on 2 cores: 140-170 µs of CPU each for
uvicorn, the ASGI call, HMAC, JSON, the group commit's write and RPUSH). There a second process added nothing (the
other core was busy with the load, the database and Redis), but a machine with more cores to spare can use them
(`NOFX_WEB_PROCESSES`). The processes are forked once the code is imported (its pages stay shared) and before any
thread, connection or app exists: each builds its own app, so each has its own database connections and group
commit writer (on SQLite they take turns on a lock file, see `bot.web.sqlite_intake`; on PostgreSQL side by side)
and its own Redis connection. The kernel gives each new connection to whichever process accepts it first.

Each process freezes what it built before serving (`gc.freeze`): a full collection of the imported code and the app,
some 130,000 objects, took 70-80 ms, a pause in answering every delivery in flight; frozen, the collector looks only at
what came after.

Several only once the App is registered: the setup flow changes the settings of the one process that serves it.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import socket
import threading
import time
from typing import Any

import uvicorn

from bot.queue import die_with_parent
from bot.settings import Settings
from bot.store import Store
from bot.web.app import App, create_app
from bot.web.corked_http import CorkedHttpToolsProtocol

log = logging.getLogger(__name__)
STOP_GRACE_S = 15
WATCH_EVERY_S = 0.5


class WebProcesses:
    """Binds the port, forks the other serving processes (`start`), then serves in this one too (`serve`)."""

    def __init__(self, settings: Settings, host: str) -> None:
        self.settings = settings
        self.host = host
        self.count = settings.web_processes if settings.app_configured else 1
        if settings.web_processes > 1 and not settings.app_configured:
            log.info("one web process until the App is registered (NOFX_WEB_PROCESSES=%d)", settings.web_processes)
        self._socket: socket.socket | None = None
        self._children: list[int] = []
        self._stopping = threading.Event()
        self._lost = False  # another web process died

    def start(self) -> None:
        """Bind the port and fork the other processes; before any thread or connection of this one exists."""
        self._socket = _config(None, self.settings, self.host).bind_socket()
        if self.count == 1:
            return
        store = Store(self.settings.database_url)  # once, not raced by every process's create_app
        store.create_all()
        store.dispose()
        gc.freeze()  # the imported objects stay out of the collector's way, so their pages stay shared
        for _ in range(self.count - 1):
            pid = os.fork()
            if pid == 0:
                self._child()
            self._children.append(pid)
        log.info("%d web processes serve port %d", self.count, self.settings.port)

    def app(self) -> App:
        """This process's app (built after the fork: its connections are its own)."""
        return create_app(self.settings)

    def serve(self, app: App) -> int:
        """Serve until stopped (or until another web process dies: then all stop, as one process would)."""
        if self._socket is None:
            raise RuntimeError("WebProcesses.start() binds the socket first")
        server = uvicorn.Server(_config(app, self.settings, self.host))
        gc.freeze()
        if self._children:
            threading.Thread(target=self._watch, args=(server,), name="web-processes", daemon=True).start()
        try:
            server.run(sockets=[self._socket])
        finally:
            self.stop()
        return 1 if self._lost else 0

    def stop(self) -> None:
        """Stop the other processes: SIGTERM, and SIGKILL for one still running after the grace period."""
        self._stopping.set()
        for pid in self._children:
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for pid in self._children:
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(pid):
                _signal(pid, signal.SIGKILL)
                _reap(pid, block=True)
        self._children = []

    def _child(self) -> None:
        """A forked web process: serves until told to stop, and never returns into its parent's code."""
        code = 1
        try:
            die_with_parent()
            self._children = []
            assert self._socket is not None
            server = uvicorn.Server(_config(self.app(), self.settings, self.host))
            gc.freeze()
            server.run(sockets=[self._socket])
            code = 0
        except BaseException:
            log.exception("web process failed")
        finally:
            logging.shutdown()
            os._exit(code)

    def _watch(self, server: uvicorn.Server) -> None:
        while not self._stopping.wait(WATCH_EVERY_S):
            for pid in self._children:
                if not self._stopping.is_set() and not _alive(pid):
                    log.error("web process %d exited; stopping the web", pid)
                    self._lost = True
                    server.should_exit = True
                    return


def _config(app: Any, settings: Settings, host: str) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=settings.port,
        log_config=None,
        access_log=False,  # the app writes it (`bot.web.app.App`)
        http=CorkedHttpToolsProtocol,
        proxy_headers=True,
    )


def _alive(pid: int) -> bool:
    return not _reap(pid, block=False)


def _reap(pid: int, *, block: bool) -> bool:
    """True once the child has exited (it is reaped here)."""
    try:
        done, _status = os.waitpid(pid, 0 if block else os.WNOHANG)
    except ChildProcessError:
        return True
    return done == pid


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
