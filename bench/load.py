"""Many installations at once: `nofx web` and two `nofx worker`s, each worker with a data dir of its own.

50 installations (one repository each) send 4 `/nofx add …` comments each, all at once, signed as GitHub signs
them. GitHub is the OpenAPI-checking double, the repositories are real bare repositories over git smart HTTP,
the model is a scripted local server (one code-generation answer per run), the gate is `true`. The database is
PostgreSQL when one answers (`--postgres-url`, a schema of its own), else SQLite; the queue is `--redis-url`,
else an embedded Valkey.

Prints the 👀 latency (delivery posted → reaction created on GitHub) p50/p95/max, runs per minute and the load
average (the numbers mean little on a busy machine), and checks that every run completed with exactly one pull
request and one status comment per issue.

    .venv/bin/python bench/load.py [--installations 50] [--commands 4] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, make_url, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.queue import start_embedded_valkey
from tests.support.git_server import GitServer
from tests.support.github_double import AppKey, GitHubDouble, app_key
from tests.support.github_resources import Call
from tests.support.llm_double import AnthropicDouble
from tests.support.payloads import load_payload, webhook_headers

CONFIG = "gates:\n  test: 'true'\npolicy:\n  require_approval_before: []\n"
CART = "def total(prices):\n    return sum(prices)\n"
REACTIONS = "/repos/{owner}/{repo}/issues/comments/{comment_id}/reactions"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--installations", type=int, default=50)
    parser.add_argument("--commands", type=int, default=4, help="comments per installation, sent at once")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("NOFX_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
    )
    parser.add_argument("--redis-url", help="a Redis URL shared by the processes (default: an embedded Valkey)")
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="nofx-load-"))
    key = app_key()
    llm = AnthropicDouble().start()
    github = GitHubDouble(app_id=4242, public_key_pem=key.public_pem, check_on_exit=False).start()
    git = GitServer(root / "served", accept_token=github.accepts_token).start()
    valkey = None if args.redis_url else start_embedded_valkey(root / "queue")
    redis_url = args.redis_url or (valkey.url if valkey else "")
    database_url, drop = _database(args.postgres_url, root)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        acked: dict[int, float] = {}
        doubles_cpu: list[float] = []  # this process's CPU (the doubles, the sender) at each 👀
        lock = threading.Lock()

        def record_ack(call: Call) -> None:
            with lock:
                acked.setdefault(int(call.path_params["comment_id"]), time.monotonic())
                doubles_cpu.append(time.process_time())

        github.handler("POST", REACTIONS, record_ack)  # returns None: the double then answers as usual
        payloads = _repositories(args, github, git)
        for _ in range(len(payloads) * 2):  # one answer per run (plus slack): write the file, then finish
            llm.tool_calls(
                [("write_file", {"path": "cart.py", "content": CART}), ("finish", {"summary": "Adds a cart."})]
            )

        base, secret = _start_nofx(
            processes,
            root,
            args.workers,
            database_url=database_url,
            redis_url=redis_url,
            key=key,
            github=github,
            llm=llm,
        )
        logs = root / "logs"

        posted: dict[int, float] = {}
        load_before = os.getloadavg()[0]
        started, cpu_started = time.monotonic(), time.process_time()
        with httpx.Client(base_url=base, timeout=30) as client, ThreadPoolExecutor(32) as pool:

            def send(payload: dict[str, Any]) -> None:
                body = json.dumps(payload).encode()
                posted[payload["comment"]["id"]] = time.monotonic()
                response = client.post(
                    "/webhooks", content=body, headers=webhook_headers("issue_comment", body, secret)
                )
                assert response.status_code == 202, response.text

            list(pool.map(send, payloads))
        sent = time.monotonic() - started
        engine = create_engine(database_url)
        finished, statuses = _wait_for_runs(engine, len(payloads), args.timeout)
        engine.dispose()
        elapsed = finished - started

        latencies = sorted(acked[c] - posted[c] for c in posted if c in acked)
        pulls = Counter(
            (c.path_params["owner"], c.json["head"]) for c in github.calls("POST", "/repos/{owner}/{repo}/pulls")
        )
        comments = Counter(
            (c.path_params["owner"], c.path_params["issue_number"])
            for c in github.calls("POST", "/repos/{owner}/{repo}/issues/{issue_number}/comments")
        )
        print(
            f"installations {args.installations} x commands {args.commands} = {len(payloads)} runs, {args.workers} workers"
        )
        print(f"database {make_url(database_url).get_backend_name()}, deliveries posted in {sent:.2f} s")
        print(f"load average (1 min) {load_before:.1f} when posting, {os.getloadavg()[0]:.1f} at the end, "
              f"on {os.cpu_count()} CPUs: numbers from a busy machine are not nofx's")  # fmt: skip
        print(f"runs by status: {dict(statuses)}")
        print(f"👀 acknowledged {len(latencies)}/{len(payloads)}: p50 {_pct(latencies, 50):.3f} s, "
              f"p95 {_pct(latencies, 95):.3f} s, max {latencies[-1] if latencies else float('nan'):.3f} s")  # fmt: skip
        print(f"all runs finished in {elapsed:.1f} s: {len(payloads) / elapsed * 60:.1f} runs/minute")
        print(f"pull requests {sum(pulls.values())} (duplicates {sum(n - 1 for n in pulls.values())}), "
              f"status comments {sum(comments.values())} (duplicates {sum(n - 1 for n in comments.values())})")  # fmt: skip
        print(f"model calls {len(llm.requests)}, GitHub calls {len(github.calls())}, logs in {logs}")
        # The doubles share the machine's cores with nofx: their CPU is time nofx could not have.
        burst = max(doubles_cpu, default=cpu_started) - cpu_started
        print(f"CPU of this process (GitHub, git and model doubles): {burst:.1f} s until the last 👀, "
              f"{time.process_time() - cpu_started:.1f} s in all")  # fmt: skip
    finally:
        _stop(processes)
        drop()
        git.stop()
        github.stop()
        llm.stop()
        if valkey is not None:
            valkey.stop()


def _repositories(args: argparse.Namespace, github: GitHubDouble, git: GitServer) -> list[dict[str, Any]]:
    """One repository per installation, and the comments that ask each for a cart."""
    payloads = []
    comment_id = 5_000_000
    for i in range(args.installations):
        owner, repo, installation = f"org{i}", "shop", 7000 + i
        git.create_repo(owner, repo, {"README.md": "# shop\n"}, default_branch="main")
        github.branches[(owner, repo, "main")] = git.git(owner, repo, "rev-parse", "main").strip()
        github.files[(owner, repo, ".github/nofx.yml", None)] = CONFIG
        github.add_installation(installation, account=owner)
        github.repository_ids[repository_id := 90_000 + i] = f"{owner}/{repo}"  # step tokens name it by id
        for number in range(1, args.commands + 1):
            comment_id += 1
            payload = load_payload("issue_comment.created", comment__body="/nofx add a cart")
            payload["installation"] = {"id": installation}
            payload["comment"]["id"] = comment_id
            payload["issue"]["number"] = number
            repository = payload["repository"]
            repository.update(
                id=repository_id, name=repo, full_name=f"{owner}/{repo}", clone_url=git.url_for(owner, repo)
            )
            repository["default_branch"] = "main"
            repository["owner"] = {**repository["owner"], "login": owner}
            payloads.append(payload)
    return payloads


def _database(postgres_url: str, root: Path) -> tuple[str, Any]:
    """A schema of our own on PostgreSQL when it answers, else SQLite under `root`."""
    schema = f"nofx_load_{secrets.token_hex(4)}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
    except Exception:
        admin.dispose()
        return f"sqlite:///{root / 'nofx.db'}", lambda: None
    url = make_url(postgres_url).update_query_dict({"options": f"-csearch_path={schema}"})

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()

    return url.render_as_string(hide_password=False), drop


def _wait_for_runs(engine: Any, expected: int, timeout_s: float) -> tuple[float, Counter[str]]:
    deadline = time.monotonic() + timeout_s
    statuses: Counter[str] = Counter()
    while time.monotonic() < deadline:
        try:
            with engine.connect() as conn:
                statuses = Counter(dict(conn.execute(text("SELECT status, count(*) FROM run GROUP BY status")).all()))
        except Exception:  # the table appears when the first worker starts
            statuses = Counter()
        done = sum(statuses[s] for s in ("succeeded", "failed", "cancelled"))
        if done >= expected:
            return time.monotonic(), statuses
        time.sleep(0.25)
    raise SystemExit(f"not all runs finished within {timeout_s} s: {dict(statuses)}")


def _start_nofx(
    processes: list[subprocess.Popen[bytes]],
    root: Path,
    workers: int,
    *,
    database_url: str,
    redis_url: str,
    key: AppKey,
    github: GitHubDouble,
    llm: AnthropicDouble,
) -> tuple[str, str]:
    """`nofx web` and `workers` x `nofx worker` as processes (added to `processes`, for the caller to `_stop`), on the
    doubles and with none of the caller's GitHub, NOFX or model variables; logs in `root/logs`. Once all are ready
    and past their start-up tasks: the web's base URL and the webhook secret."""
    secret = secrets.token_hex(16)
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "NOFX_", "ANTHROPIC_", "OPENAI_"))},
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "GITHUB_APP_ID": "4242",
        "GITHUB_PRIVATE_KEY": key.private_pem,
        "GITHUB_WEBHOOK_SECRET": secret,
        "GITHUB_API_URL": github.base_url,
        "ANTHROPIC_API_KEY": llm.api_key,
        "ANTHROPIC_BASE_URL": llm.base_url,
        "PORT": str(port),
    }
    logs = root / "logs"
    logs.mkdir()
    command = [sys.executable, "-m", "bot.cli"]
    processes.append(_spawn([*command, "web"], {**env, "NOFX_DATA_DIR": str(root / "web")}, logs / "web.log"))
    for n in range(workers):
        data = {**env, "NOFX_DATA_DIR": str(root / f"worker-{n}")}
        processes.append(_spawn([*command, "worker"], data, logs / f"worker-{n}.log"))
    base = f"http://127.0.0.1:{port}"
    _wait_ready(base, redis_url, workers=workers * 2)  # each worker: a work lane and a dispatch lane
    time.sleep(2)  # the workers' start-up tasks (installation sync, recovery)
    return base, secret


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def _spawn(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("wb")
    return subprocess.Popen(command, env=env, stdout=handle, stderr=handle, cwd=log.parent)


def _wait_ready(base: str, redis_url: str, workers: int) -> None:
    """The web answers /readyz and every worker lane has registered with RQ (so 👀 measures nofx, not start-up)."""
    from redis import Redis
    from rq import Worker

    redis = Redis.from_url(redis_url)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            ready = httpx.get(f"{base}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            ready = False
        if ready and Worker.count(connection=redis) >= workers:
            return
        time.sleep(0.2)
    raise SystemExit("nofx web or the workers did not become ready")


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _pct(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[int(pct) - 1] if len(values) > 1 else values[0]


if __name__ == "__main__":
    main()
