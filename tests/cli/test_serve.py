"""`nofx serve` as a user starts it: a real process tree with an embedded Valkey server and SQLite."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bot.cli.serve import WORKER_NICENESS
from tests.support.payloads import load_payload, webhook_headers

SECRET = "serve-test-secret"


@pytest.fixture
def served() -> Iterator[tuple[str, Path, subprocess.Popen[bytes]]]:
    workdir = Path(tempfile.mkdtemp(prefix="nofx-serve-"))
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_URL", "DATABASE_URL", "GITHUB_", "NOFX_"))}
    env.update({"GITHUB_WEBHOOK_SECRET": SECRET, "PORT": str(port)})
    log = (workdir / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "serve", "--workers", "1"], cwd=workdir, env=env, stdout=log, stderr=log
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, proc, workdir / "serve.log")
        yield base, workdir, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


def test_serve_records_and_routes_a_delivery_with_embedded_defaults(
    served: tuple[str, Path, subprocess.Popen[bytes]],
) -> None:
    base, workdir, proc = served
    payload = load_payload("installation.created")
    body = json.dumps(payload).encode()

    response = httpx.post(f"{base}/webhooks", content=body, headers=webhook_headers("installation", body, SECRET))

    assert response.status_code == 202
    database = workdir / ".nofx" / "nofx.db"
    assert _wait_for(lambda: _installation_count(database) == 1), "the worker did not route the delivery"
    assert (workdir / ".nofx" / "valkey" / "valkey.sock").is_socket()
    assert httpx.get(f"{base}/readyz").json() == {"status": "ok", "database": "ok", "queue": "ok"}
    assert "nofx_webhook_deliveries_total" in httpx.get(f"{base}/metrics").text

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert _wait_for(lambda: not _valkey_running(workdir)), "the embedded Valkey outlived serve"


def test_serve_prints_the_setup_code_and_only_it_opens_the_setup_page(
    served: tuple[str, Path, subprocess.Popen[bytes]],
) -> None:
    base, workdir, _proc = served
    printed = re.search(r"(http://\S+/setup\?setup_code=[A-Za-z0-9_-]+)", (workdir / "serve.log").read_text())
    assert printed, "serve did not print where to register the App"

    assert httpx.get(f"{base}/setup").status_code == 403
    with httpx.Client(follow_redirects=True) as browser:
        page = browser.get(printed.group(1))
    assert page.status_code == 200 and "settings/apps/new?state=" in page.text


def _installation_count(database: Path) -> int:
    try:
        with sqlite3.connect(database) as conn:
            return conn.execute("SELECT count(*) FROM installation").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def _valkey_running(workdir: Path) -> bool:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    return any("valkey-server" in line and str(workdir) in line for line in out.splitlines())


def _wait_ready(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("serve did not become ready")


def _wait_for(condition: object, timeout_s: float = 20) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_workers_do_not_outlive_a_killed_serve(served: tuple[str, Path, subprocess.Popen[bytes]]) -> None:
    _base, workdir, proc = served
    workers = _worker_pids(workdir)
    assert workers, "serve started no worker"
    # and they yield the CPU to the web process, which answers GitHub
    assert {_niceness(pid) for pid in workers} == {_niceness(proc.pid) + WORKER_NICENESS}
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert _wait_for(lambda: not _worker_pids(workdir)), "workers outlived serve"


def _niceness(pid: int) -> int:
    return int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[16])


def _worker_pids(workdir: Path) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if b"worker" in cmdline and b"bot.cli" in cmdline and cwd == str(workdir):
            pids.append(int(entry.name))
    return pids


def test_serve_with_two_web_processes_records_deliveries_and_stops_them_all(app_key: tuple[str, str]) -> None:
    """NOFX_WEB_PROCESSES=2 with a registered App: a forked web process beside serve's own, on the same port."""
    workdir = Path(tempfile.mkdtemp(prefix="nofx-serve-"))
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_URL", "DATABASE_URL", "GITHUB_", "NOFX_"))}
    env.update(
        {
            "GITHUB_WEBHOOK_SECRET": SECRET,
            "GITHUB_APP_ID": "1",
            "GITHUB_PRIVATE_KEY": app_key[0],
            "GITHUB_API_URL": "http://127.0.0.1:1",  # nothing here calls GitHub; never the real one
            "NOFX_WEB_PROCESSES": "2",
            "PORT": str(port),
        }
    )
    base = f"http://127.0.0.1:{port}"
    with (workdir / "serve.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "serve", "--workers", "0"], cwd=workdir, env=env, stdout=log, stderr=log
        )
        try:
            _wait_ready(base, proc, workdir / "serve.log")
            web = _web_children(proc.pid)
            assert len(web) == 1, "serve forked no second web process"
            payload = load_payload("ping")
            body = json.dumps(payload).encode()
            for n in range(20):  # new connections: the kernel hands them to either process
                headers = webhook_headers("ping", body, SECRET, delivery_id=f"two-{n}")
                assert httpx.post(f"{base}/webhooks", content=body, headers=headers).status_code == 202
            with sqlite3.connect(workdir / ".nofx" / "nofx.db") as conn:
                assert conn.execute("SELECT count(*) FROM delivery WHERE id LIKE 'two-%'").fetchone()[0] == 20

            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
            assert _wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in web)), (
                "a web process outlived serve"
            )
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            shutil.rmtree(workdir, ignore_errors=True)


def _web_children(pid: int) -> list[int]:
    """serve's children forked to serve the web port: its own command line, unlike the workers' and Valkey's."""
    command = Path(f"/proc/{pid}/cmdline").read_bytes()
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children if Path(f"/proc/{c}/cmdline").read_bytes() == command]
