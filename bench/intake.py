"""Webhook intake beside Probot: the same signed delivery, the same load, deliveries/s, p50, p99 and the ratio.

Each target is started in a temporary directory and loaded by `wrk` (Debian's package) from a separate
process: `--connections` connections for `--duration` seconds after a `--warmup`, every request a unique
`X-GitHub-Delivery` id. Targets:

- `probot`: Probot 13 with a no-op app (installed with npm into `bench/.cache/probot` on first use),
- `sqlite`: `nofx web` on SQLite and Redis,
- `postgres`: `nofx web` on PostgreSQL (`--postgres-url`, a schema of its own) and Redis,
- `postgres-json`: the same on a delivery table an older nofx made (a json payload column; not in the default list),
- `serve`: `nofx serve` (web, two workers and the embedded Valkey on this machine).

For nofx it also checks that every delivery answered 202 was recorded (`lost` must be 0) and samples the
web processes' memory (`--web-processes` of them, NOFX_WEB_PROCESSES): the largest sum of their RSS, which counts
the pages forked processes share once per process, and of their PSS, which splits those between them. CPU per
delivery is also summed over the web processes (the workers and Valkey of `serve` are not counted); on PostgreSQL,
the CPU of this machine's PostgreSQL processes per delivery is shown beside it, and for every target the machine's
idle CPU while the load ran (idle cores mean the target waited, not worked).

This machine's speed drifts by 10-30% from one minute to the next (Probot alone measured 4,100 to 6,450 deliveries/s
within an hour): `--rounds N` runs the targets N times in turn and reports the median of each round's ratio.

Usage: .venv/bin/python bench/intake.py [--targets probot,sqlite,postgres,serve] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import create_engine, text

BENCH = Path(__file__).resolve().parent
FIXTURE = BENCH.parent / "tests" / "fixtures" / "webhooks" / "issue_comment.created.json"
PROBOT_VERSION = "13.4.7"
PROBOT_DIR = BENCH / ".cache" / "probot"
INSTALLATION_ID = 1  # the fixture's installation

WRK_SCRIPT = """
local counter = 0
local threads = {}
local body = nil

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  prefix = args[1] .. "-" .. tid .. "-"
  local f = io.open(args[2], "rb"); body = f:read("*a"); f:close()
  headers = {
    ["Content-Type"] = "application/json",
    ["X-GitHub-Event"] = "issue_comment",
    ["X-Hub-Signature-256"] = args[3],
    ["User-Agent"] = "GitHub-Hookshot/bench",
  }
  accepted = 0
  refused = 0
end

function request()
  counter = counter + 1
  headers["X-GitHub-Delivery"] = prefix .. counter
  return wrk.format("POST", args_path, headers, body)
end

function response(status, hdrs, resp)
  if status == 202 or status == 200 then accepted = accepted + 1 else refused = refused + 1 end
end

function done(summary, latency, requests)
  local ok, bad = 0, 0
  for _, t in ipairs(threads) do ok = ok + t:get("accepted"); bad = bad + t:get("refused") end
  io.write(string.format("RESULT requests=%d seconds=%.3f p50_us=%d p99_us=%d accepted=%d refused=%d errors=%d\\n",
    summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(99), ok, bad,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status + summary.errors.timeout))
end
"""


@dataclass
class Result:
    target: str
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    accepted: int
    refused: int
    errors: int
    recorded: int | None = None
    rss_mb: float | None = None  # the web processes' resident sets added up (shared pages counted in each)
    pss_mb: float | None = None  # their proportional set sizes added up (shared pages split between them)
    processes: int = 1
    cpu_us: float | None = None  # CPU time of the server process per request (user + system)
    batch: float | None = None  # deliveries per group commit, on average (nofx's /metrics)
    db_cpu_us: float | None = None  # CPU time of this machine's PostgreSQL server processes per request
    idle_cores: float | None = None  # the machine's idle CPU while the load ran, in cores

    @property
    def lost(self) -> int | None:
        """Answered 202 but not recorded. More recorded than accepted is not a loss: requests still in flight
        when wrk stopped counting were recorded after."""
        return None if self.recorded is None else max(self.accepted - self.recorded, 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", default="probot,sqlite,postgres,serve")
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--web-processes", type=int, default=1, help="NOFX_WEB_PROCESSES (nofx's default: 1)")
    parser.add_argument(
        "--rounds", type=int, default=1, help="run the targets this many times, in turn; the summary takes medians"
    )
    parser.add_argument("--redis-url", default=os.environ.get("NOFX_BENCH_REDIS_URL", "redis://127.0.0.1:6379/12"))
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("NOFX_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk")

    secret = secrets.token_hex(16)
    body = json.dumps(json.loads(FIXTURE.read_text())).encode()
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="nofx-bench-") as tmp:
        body_file = Path(tmp) / "body.json"
        body_file.write_bytes(body)
        script = Path(tmp) / "load.lua"
        script.write_text(WRK_SCRIPT)
        load = _Load(args, script, body_file, signature)
        targets = [t.strip() for t in args.targets.split(",") if t.strip()]
        for round_ in range(args.rounds):
            for target in targets:
                starter = {
                    "probot": _probot,
                    "sqlite": _nofx_web,
                    "postgres": _nofx_web,
                    "postgres-json": _nofx_web,
                    "serve": _nofx_serve,
                }[target]
                workdir = Path(tmp) / f"{target}-{round_}"
                with starter(target, workdir, secret, args) as (url, pid, count_recorded):
                    result = load.run(target, url, pid)
                    if count_recorded is not None:
                        result.recorded = count_recorded(load.prefix)
                results.append(result)
                print(_line(result), flush=True)
    _summary(results, body, args)


class _Load:
    def __init__(self, args: argparse.Namespace, script: Path, body_file: Path, signature: str) -> None:
        self.args = args
        self.script = script
        self.body_file = body_file
        self.signature = signature
        self.prefix = ""

    def run(self, target: str, url: str, pid: int) -> Result:
        self._wrk(url, self.args.warmup, f"warm-{uuid.uuid4().hex[:8]}")
        self.prefix = f"bench-{uuid.uuid4().hex[:8]}"
        pids = _web_processes(pid)
        rss = _MemorySampler(pids)
        cpu_before = sum(_cpu_seconds(p) for p in pids)
        db_before = _cpu_by_command("postgres") if target.startswith("postgres") else None
        idle_before = _idle_seconds()
        # /metrics counts the process that answers it: deliveries per commit only when that is all of them
        batches_before = _batches(url) if len(pids) == 1 else None
        with rss:
            out = self._wrk(url, self.args.duration, self.prefix)
        cpu = sum(_cpu_seconds(p) for p in pids) - cpu_before
        idle = _idle_seconds() - idle_before
        db_cpu = None if db_before is None else _cpu_delta(db_before, _cpu_by_command("postgres"))
        batches_after = _batches(url) if len(pids) == 1 else None
        fields = dict(kv.split("=") for kv in re.search(r"RESULT (.*)", out).group(1).split())  # type: ignore[union-attr]
        return Result(
            target=target,
            requests_per_s=int(fields["requests"]) / float(fields["seconds"]),
            p50_ms=int(fields["p50_us"]) / 1000,
            p99_ms=int(fields["p99_us"]) / 1000,
            accepted=int(fields["accepted"]),
            refused=int(fields["refused"]),
            errors=int(fields["errors"]),
            rss_mb=rss.max_rss_mb,
            pss_mb=rss.max_pss_mb,
            processes=len(pids),
            cpu_us=cpu * 1e6 / max(int(fields["requests"]), 1),
            batch=_mean_batch(batches_before, batches_after),
            db_cpu_us=None if not db_cpu else db_cpu * 1e6 / max(int(fields["requests"]), 1),
            idle_cores=idle / float(fields["seconds"]),
        )

    def _wrk(self, url: str, seconds: int, prefix: str) -> str:
        base, path = url.split("/", 3)[:3], "/" + url.split("/", 3)[3]
        script = self.script.read_text().replace("args_path", json.dumps(path))
        local = self.script.with_suffix(".run.lua")
        local.write_text(script)
        command = ["wrk", "-t", str(self.args.threads), "-c", str(self.args.connections), "-d", f"{seconds}s"]
        command += ["-s", str(local), "/".join(base), "--", prefix, str(self.body_file), self.signature]
        return subprocess.run(command, capture_output=True, text=True, check=True, timeout=seconds + 60).stdout


class _MemorySampler:
    """The largest sums of the web processes' RSS and PSS while the load runs (sampled every 100 ms)."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.max_rss_mb = 0.0
        self.max_pss_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> _MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(0.1):
            with contextlib.suppress(OSError, ValueError):
                rss = pss = 0
                for pid in self.pids:
                    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                        name, _, value = line.partition(":")
                        if name == "Rss":
                            rss += int(value.split()[0])
                        elif name == "Pss":
                            pss += int(value.split()[0])
                self.max_rss_mb = max(self.max_rss_mb, rss / 1024)
                self.max_pss_mb = max(self.max_pss_mb, pss / 1024)


def _web_processes(pid: int) -> list[int]:
    """The process and its children forked to serve the same port (same command line): not `serve`'s workers or
    Valkey, nor Probot's."""
    command = Path(f"/proc/{pid}/cmdline").read_bytes()
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid] + [int(c) for c in children if Path(f"/proc/{c}/cmdline").read_bytes() == command]


def _batches(url: str) -> tuple[float, float] | None:
    """Deliveries and group commits so far, from nofx's /metrics (None for Probot)."""
    if not url.endswith("/webhooks"):
        return None
    text = httpx.get(url.removesuffix("/webhooks") + "/metrics", timeout=10).text
    found = dict(re.findall(r"^nofx_webhook_intake_batch_deliveries_(sum|count) (\S+)$", text, re.MULTILINE))
    return float(found.get("sum", 0)), float(found.get("count", 0))


def _mean_batch(before: tuple[float, float] | None, after: tuple[float, float] | None) -> float | None:
    if before is None or after is None or after[1] == before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat fields 14 and 15, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_by_command(command: str) -> dict[int, float]:
    """CPU time so far of each process of this machine whose command name is `command` (PostgreSQL's server and
    backends are all `postgres`)."""
    found: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == command:
                    found[int(entry.name)] = _cpu_seconds(int(entry.name))
    return found


def _cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU used between the two samples: a process started meanwhile (a backend for a new connection) counts whole."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


def _idle_seconds() -> float:
    """The machine's idle CPU time so far, all cores added up (/proc/stat's `cpu` line, idle + iowait)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return (int(fields[4]) + int(fields[5])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def _probot(_target: str, workdir: Path, secret: str, _args: argparse.Namespace) -> Iterator[tuple[str, int, None]]:
    _install_probot()
    workdir.mkdir(parents=True)
    port = _free_port()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(workdir),
        "NODE_ENV": "production",
        "APP_ID": "1",
        "PRIVATE_KEY": _private_key(),
        "WEBHOOK_SECRET": secret,
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "NODE_PATH": str(PROBOT_DIR / "node_modules"),
    }
    app = BENCH / "probot_noop.js"
    with _process(["node", str(app)], env=env, cwd=PROBOT_DIR, log=workdir / "probot.log") as process:
        _wait_http(f"http://127.0.0.1:{port}/", accept_any=True)
        yield f"http://127.0.0.1:{port}/api/github/webhooks", process.pid, None


@contextlib.contextmanager
def _nofx_web(target: str, workdir: Path, secret: str, args: argparse.Namespace) -> Iterator[tuple[str, int, object]]:
    workdir.mkdir(parents=True)
    port = _free_port()
    with contextlib.ExitStack() as stack:
        if target.startswith("postgres"):
            database_url = stack.enter_context(_postgres_schema(args.postgres_url))
        else:
            database_url = f"sqlite:///{workdir}/nofx.db"
        redis_url = stack.enter_context(_redis(args.redis_url, workdir))
        _seed_installation(database_url)
        if target == "postgres-json":
            _payload_as_json(database_url)
        env = {**_nofx_env(workdir, secret, port, args), "DATABASE_URL": database_url, "REDIS_URL": redis_url}
        process = stack.enter_context(
            _process([sys.executable, "-m", "bot.cli", "web"], env=env, cwd=workdir, log=workdir / "web.log")
        )
        _wait_http(f"http://127.0.0.1:{port}/readyz")
        yield f"http://127.0.0.1:{port}/webhooks", process.pid, lambda prefix: _count(database_url, prefix)


@contextlib.contextmanager
def _nofx_serve(
    _target: str, workdir: Path, secret: str, args: argparse.Namespace
) -> Iterator[tuple[str, int, object]]:
    workdir.mkdir(parents=True)
    port = _free_port()
    database_url = f"sqlite:///{workdir}/data/nofx.db"
    _seed_installation(database_url)
    env = _nofx_env(workdir, secret, port, args)
    command = [sys.executable, "-m", "bot.cli", "serve", "--workers", "2"]
    with _process(command, env=env, cwd=workdir, log=workdir / "serve.log") as process:
        _wait_http(f"http://127.0.0.1:{port}/readyz")
        yield f"http://127.0.0.1:{port}/webhooks", process.pid, lambda prefix: _count(database_url, prefix)


def _nofx_env(workdir: Path, secret: str, port: int, args: argparse.Namespace) -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "LC_ALL")
    return {
        **{k: v for k, v in os.environ.items() if k in keep},
        "NOFX_DATA_DIR": str(workdir / "data"),
        "GITHUB_WEBHOOK_SECRET": secret,
        "GITHUB_APP_ID": "1",
        "GITHUB_PRIVATE_KEY": _private_key(),  # a registered App: several web processes serve only then
        "NOFX_WEB_PROCESSES": str(args.web_processes),
        "PORT": str(port),
    }


def _private_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _seed_installation(database_url: str) -> None:
    """The fixture's installation is known, so every delivery takes the full path (recorded and enqueued)."""
    from bot.models import Installation
    from bot.store import Store

    store = Store(database_url)
    store.create_all()
    with store.session() as session:
        if session.get(Installation, INSTALLATION_ID) is None:
            session.add(Installation(id=INSTALLATION_ID, account_login="Codertocat"))
    store.dispose()


def _payload_as_json(database_url: str) -> None:
    """The delivery table as an older nofx made it: its payload column is json, which PostgreSQL parses to store."""
    engine = create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE delivery ALTER COLUMN payload TYPE json USING payload::json"))
    engine.dispose()


def _count(database_url: str, prefix: str) -> int:
    engine = create_engine(database_url)
    with engine.connect() as conn:
        count = conn.execute(text("SELECT count(*) FROM delivery WHERE id LIKE :p"), {"p": prefix + "%"}).scalar_one()
    engine.dispose()
    return int(count)


@contextlib.contextmanager
def _postgres_schema(url: str) -> Iterator[str]:
    schema = f"nofx_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    sep = "&" if "?" in url else "?"
    try:
        yield f"{url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@contextlib.contextmanager
def _redis(url: str, workdir: Path) -> Iterator[str]:
    """The named Redis when it answers (its database is flushed), else an embedded Valkey of our own."""
    from redis import Redis
    from redis.exceptions import RedisError

    try:
        Redis.from_url(url, socket_connect_timeout=1).flushdb()
        yield url
        return
    except RedisError:
        pass
    from bot.queue import start_embedded_valkey

    server = start_embedded_valkey(workdir / "valkey-data")
    try:
        yield server.url
    finally:
        server.stop()


@contextlib.contextmanager
def _process(command: list[str], *, env: dict[str, str], cwd: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _install_probot() -> None:
    if (PROBOT_DIR / "node_modules" / "probot" / "package.json").exists():
        return
    PROBOT_DIR.mkdir(parents=True, exist_ok=True)
    (PROBOT_DIR / "package.json").write_text('{"private": true}\n')
    subprocess.run(
        ["npm", "install", "--silent", "--no-audit", "--no-fund", f"probot@{PROBOT_VERSION}"],
        cwd=PROBOT_DIR,
        check=True,
        timeout=600,
    )


def _wait_http(url: str, *, accept_any: bool = False) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if accept_any or httpx.get(url, timeout=1).status_code == 200:
                httpx.get(url, timeout=1)
                return
        time.sleep(0.2)
    raise SystemExit(f"{url} did not answer in 60 s")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _line(r: Result) -> str:
    recorded = "" if r.recorded is None else f"  recorded {r.recorded} of {r.accepted} accepted (lost {r.lost})"
    rss = "" if r.rss_mb is None else f"  RSS max {r.rss_mb:.0f} MB"
    rss += "" if r.pss_mb is None else f" (PSS {r.pss_mb:.0f} MB, {r.processes} process(es))"
    cpu = "" if r.cpu_us is None else f"  CPU {r.cpu_us:.0f} us/delivery"
    cpu += "" if r.db_cpu_us is None else f" (+ PostgreSQL {r.db_cpu_us:.0f} us)"
    cpu += "" if r.batch is None else f"  {r.batch:.1f} deliveries/commit"
    cpu += "" if r.idle_cores is None else f"  machine idle {r.idle_cores:.2f} cores"
    return (
        f"{r.target:<9} {r.requests_per_s:8,.0f} deliveries/s  p50 {r.p50_ms:6.1f} ms  p99 {r.p99_ms:6.1f} ms"
        f"  refused {r.refused} errors {r.errors}{recorded}{rss}{cpu}"
    )


def _summary(results: list[Result], body: bytes, args: argparse.Namespace) -> None:
    print(
        f"\nsame signed issue_comment delivery ({len(body) / 1024:.1f} KB), wrk {args.connections} connections, "
        f"{args.threads} threads, {args.duration} s after a {args.warmup} s warm-up, {os.cpu_count()} cores"
    )
    rounds = [results[i : i + len(results) // args.rounds] for i in range(0, len(results), len(results) // args.rounds)]
    for target in dict.fromkeys(r.target for r in results):
        if target == "probot" or not any(r.target == "probot" for r in results):
            continue
        ratios = [
            (ours.requests_per_s / peer.requests_per_s, ours.p99_ms / peer.p99_ms)
            for ours, peer in (_pair(one_round, target) for one_round in rounds)
        ]
        each = ", ".join(f"{speed:.2f}x" for speed, _ in ratios)
        print(
            f"{target:<9} vs probot: {statistics.median(s for s, _ in ratios):.2f}x deliveries/s, "
            f"p99 {statistics.median(p for _, p in ratios):.2f}x"
            + (f" (medians of {len(ratios)} rounds, each round's deliveries/s: {each})" if len(ratios) > 1 else "")
        )


def _pair(one_round: list[Result], target: str) -> tuple[Result, Result]:
    """The target's result and Probot's, from the same round: the machine's speed drifts between rounds."""
    by_target = {r.target: r for r in one_round}
    return by_target[target], by_target["probot"]


if __name__ == "__main__":
    main()
