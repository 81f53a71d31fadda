"""Intake throughput: signed deliveries from a separate load process against a running `nofx serve`.

Prints deliveries/s, p50/p99 acknowledgement latency, and what was recorded and routed
(nothing lost, nothing duplicated). Usage: .venv/bin/python bench/intake.py [--deliveries N]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import multiprocessing
import os
import secrets
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "webhooks"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deliveries", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duplicates", type=float, default=0.05, help="share of deliveries sent twice")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    secret = secrets.token_hex(16)
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="nofx-bench-") as tmp:
        data = Path(tmp) / "data"
        env = {
            **{k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")},
            "NOFX_DATA_DIR": str(data),
            "GITHUB_WEBHOOK_SECRET": secret,
            "PORT": str(port),
        }
        server = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "serve", "--workers", str(args.workers)],
            env=env,
            cwd=tmp,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            _wait_ready(base)
            ids = [str(uuid.uuid4()) for _ in range(args.deliveries)]
            resend = ids[: int(len(ids) * args.duplicates)]
            with multiprocessing.get_context("spawn").Pool(1) as pool:
                latencies, statuses, elapsed = pool.apply(_load, (base, secret, ids + resend, args.concurrency))
            routed, recorded, by_status = _wait_routed(data / "nofx.db", len(ids), timeout_s=120)
        finally:
            server.terminate()
            server.wait(timeout=30)

    sent = len(ids) + len(resend)
    latencies.sort()
    print(f"deliveries sent       {sent} ({len(resend)} of them redeliveries), concurrency {args.concurrency}")
    print(f"answers               {dict(sorted(statuses.items()))}")
    print(f"throughput            {sent / elapsed:,.0f} deliveries/s")
    print(
        f"ack latency           p50 {_ms(statistics.median(latencies))}  p99 {_ms(latencies[int(0.99 * len(latencies))])}"
    )
    print(
        f"recorded (unique)     {recorded} of {len(ids)}  -> lost {len(ids) - recorded}, duplicated {recorded - len(ids)}"
    )
    print(f"routed by workers     {routed} of {len(ids)}  statuses {by_status}")


def _load(base: str, secret: str, ids: list[str], concurrency: int) -> tuple[list[float], dict[int, int], float]:
    """Runs in a separate process so the load generator does not share the server's CPU accounting."""
    payload = json.loads((FIXTURE / "installation_repositories.added.json").read_text())
    return asyncio.run(_send_all(base, secret, payload, ids, concurrency))


async def _send_all(
    base: str, secret: str, payload: dict, ids: list[str], concurrency: int
) -> tuple[list[float], dict[int, int], float]:
    body = json.dumps(payload).encode()
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    pending: asyncio.Queue[str] = asyncio.Queue()
    for delivery_id in ids:
        pending.put_nowait(delivery_id)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def sender(http: httpx.AsyncClient) -> None:
        while not pending.empty():
            delivery_id = pending.get_nowait()
            headers = {
                "Content-Type": "application/json",
                "X-GitHub-Event": "installation_repositories",
                "X-GitHub-Delivery": delivery_id,
                "X-Hub-Signature-256": signature,
                "User-Agent": "GitHub-Hookshot/bench",
            }
            started = time.perf_counter()
            response = await http.post("/webhooks", content=body, headers=headers)
            latencies.append(time.perf_counter() - started)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as http:
        await asyncio.gather(*(sender(http) for _ in range(concurrency)))
    return latencies, statuses, time.perf_counter() - started


def _wait_ready(base: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("nofx serve did not become ready in 30 s")


def _wait_routed(db: Path, expected: int, timeout_s: float) -> tuple[int, int, dict[str, int]]:
    deadline = time.monotonic() + timeout_s
    while True:
        with sqlite3.connect(db) as conn:
            rows = dict(conn.execute("SELECT status, count(*) FROM delivery GROUP BY status").fetchall())
        recorded = sum(rows.values())
        routed = rows.get("DONE", 0) + rows.get("done", 0)
        if routed >= expected or time.monotonic() > deadline:
            return routed, recorded, rows
        time.sleep(0.5)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    main()
