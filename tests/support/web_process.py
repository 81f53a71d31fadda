"""`nofx web` as a real process on a free port, for tests that must kill it or run several of its processes."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

START_S = 60.0  # a liveness bound: the web imports everything before it answers, slowly on a busy machine


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def web_processes(pid: int) -> list[int]:
    """The web process and the processes it forked to serve the same port."""
    with contextlib.suppress(OSError):
        return [pid] + [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return []


@contextlib.contextmanager
def nofx_web(
    tmp_path: Path, env: dict[str, str], *, processes: int = 1
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Start `nofx web` with `env` over this process's environment; yield its base URL once all `processes` answer
    on it, and the process; stop it (if the test did not) on the way out. Its output goes to `web.log`."""
    port = free_port()
    full = {**os.environ, "NOFX_DATA_DIR": str(tmp_path / "data"), **env, "PORT": str(port)}
    full["NOFX_WEB_PROCESSES"] = str(processes)
    with (tmp_path / "web.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "web"], env=full, cwd=tmp_path, stdout=log, stderr=log
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + START_S
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    answered = httpx.get(f"{base}/healthz", timeout=1).status_code == 200
                    if answered and len(web_processes(process.pid)) == processes:
                        break
                if time.monotonic() > deadline or process.poll() is not None:
                    pytest.fail(f"nofx web did not start: {(tmp_path / 'web.log').read_text()[-2000:]}")
                time.sleep(0.1)
            yield base, process
        finally:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=30)
