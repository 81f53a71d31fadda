"""Comment → pull request on a warm mirror: how long nofx itself takes, with the model's time taken out.

`nofx web` and one `nofx worker` (real processes, a data dir each, SQLite, an embedded Valkey unless `--redis-url`)
receive `/nofx add greet()` comments signed as GitHub signs them. GitHub is the OpenAPI-checking double, the
repository is a real bare repository over git smart HTTP, and the model is the scripted double, which answers at
once (one code-generation turn: two files, then finish), so what is measured is nofx: intake, planning, the queue,
the workspace, `setup`, the sandboxed gate, the push and the pull request.

The repository's `setup` makes a venv and installs a wheel from the repository with `pip --no-index` (no internet);
its test gate imports that package. A first run clones the mirror (not counted). Then `--cold` runs each change
`requirements.txt` (a new setup cache key: setup runs), and `--warm` runs reuse the setup (the cache hit).

Printed per run and as medians: total (comment posted → pull request created on GitHub) and the phases, taken from
the steps' start and finish times in the database: intake→dispatch (comment posted → first step started), setup,
codegen (generate + apply), gates, git_pr, and hand-offs (the queue between steps). Target: warm total ≤ 5 s.

    .venv/bin/python bench/agent.py [--cold 3] [--warm 7]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.load import _start_nofx, _stop
from bot.queue import start_embedded_valkey
from tests.runs.test_setup_flow import GREET, TEST_GREET, wheel
from tests.support.git_server import GitServer
from tests.support.github_double import GitHubDouble, app_key
from tests.support.github_resources import Call
from tests.support.llm_double import AnthropicDouble
from tests.support.payloads import load_payload, webhook_headers

OWNER, REPO, INSTALLATION = "bench", "shop", 9100
CONFIG = """\
setup:
  - python3 -m venv --without-pip "$NOFX_SETUP_DIR"
  - /usr/bin/python3 -m pip --python "$NOFX_SETUP_DIR/bin/python" install -q --no-index --find-links wheels greeting
setup_cache_key: [requirements.txt]
gates:
  test: python3 -m unittest -q
"""
PHASES = ("intake→dispatch", "setup", "codegen", "gates", "git_pr", "hand-offs")
STEP_PHASE = {
    "setup": "setup",
    "codegen": "codegen",
    "workspace:write": "codegen",
    "gate:test": "gates",
    "git_pr": "git_pr",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", type=int, default=3, help="runs whose setup runs (a new cache key each)")
    parser.add_argument("--warm", type=int, default=7, help="runs that reuse the setup")
    parser.add_argument("--redis-url", help="a Redis URL shared by the processes (default: an embedded Valkey)")
    parser.add_argument("--timeout", type=float, default=60, help="seconds one run may take")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="nofx-bench-agent-"))
    key = app_key()
    llm = AnthropicDouble().start()
    github = GitHubDouble(app_id=4242, public_key_pem=key.public_pem, check_on_exit=False).start()
    git = GitServer(root / "served", accept_token=github.accepts_token).start()
    valkey = None if args.redis_url else start_embedded_valkey(root / "queue")
    redis_url = args.redis_url or (valkey.url if valkey else "")
    if args.redis_url:  # a database of the queue server nobody else uses in a bench; its jobs are ours alone
        from redis import Redis

        Redis.from_url(redis_url).flushdb()
    database_url = f"sqlite:///{root / 'nofx.db'}"
    processes: list[subprocess.Popen[bytes]] = []
    try:
        pulls: dict[str, float] = {}
        lock = threading.Lock()

        def record_pull(call: Call) -> None:
            with lock:
                pulls.setdefault(call.json["head"], time.time())

        github.handler("POST", "/repos/{owner}/{repo}/pulls", record_pull)  # None: the double answers as usual
        payload = _repository(github, git)
        base, secret = _start_nofx(
            processes, root, 1, database_url=database_url, redis_url=redis_url, key=key, github=github, llm=llm
        )
        logs = root / "logs"
        engine = create_engine(database_url)

        def one(number: int, kind: str) -> dict[str, float]:
            if kind == "cold":  # a new requirements.txt: a new setup cache key
                _push(git, github, {"requirements.txt": f"greeting  # {number}\n"})
            llm.tool_calls(
                [
                    ("write_file", {"path": f"greet_{number}.py", "content": GREET}),
                    ("write_file", {"path": f"test_greet_{number}.py", "content": _test(number)}),
                    ("finish", {"summary": "Greets."}),
                ]
            )
            return _measure(engine, base, secret, payload, number, kind, pulls, args.timeout)

        started = time.monotonic()
        first = one(1, "first")
        runs = [("cold", one(2 + n, "cold")) for n in range(args.cold)]
        runs += [("warm", one(2 + args.cold + n, "warm")) for n in range(args.warm)]
        elapsed = time.monotonic() - started
        engine.dispose()
        _report(first, runs, elapsed, len(llm.requests), len(github.calls()), logs)
    finally:
        _stop(processes)
        git.stop()
        github.stop()
        llm.stop()
        if valkey is not None:
            valkey.stop()


def _repository(github: GitHubDouble, git: GitServer) -> dict[str, Any]:
    """The repository (a wheel, its requirements, the config) and the payload template of a comment on it."""
    git.create_repo(OWNER, REPO, {"README.md": "# shop\n"}, default_branch="main")
    payload = load_payload("issue_comment.created", comment__body="/nofx add greet()")
    github.repository_ids[payload["repository"]["id"]] = f"{OWNER}/{REPO}"
    github.add_installation(INSTALLATION, account=OWNER)
    payload["installation"] = {"id": INSTALLATION}
    repository = payload["repository"]
    repository.update(name=REPO, full_name=f"{OWNER}/{REPO}", clone_url=git.url_for(OWNER, REPO), default_branch="main")
    repository["owner"] = {**repository["owner"], "login": OWNER}
    github.files[(OWNER, REPO, ".github/nofx.yml", None)] = CONFIG
    whl = "wheels/greeting-1.0-py3-none-any.whl"
    git.commit_many(OWNER, REPO, {whl: wheel(), "requirements.txt": "greeting\n", ".github/nofx.yml": CONFIG})
    _push(git, github, {})
    return payload


def _push(git: GitServer, github: GitHubDouble, files: dict[str, str | bytes]) -> None:
    """A new commit on main (when `files`), and GitHub's idea of the branch's head."""
    if files:
        git.commit_many(OWNER, REPO, files)
    github.branches[(OWNER, REPO, "main")] = git.git(OWNER, REPO, "rev-parse", "main").strip()


def _test(number: int) -> str:
    return TEST_GREET.replace("from greet", f"from greet_{number}").replace("GreetTest", f"Greet{number}Test")


def _measure(
    engine: Any,
    base: str,
    secret: str,
    template: dict[str, Any],
    number: int,
    kind: str,
    pulls: dict[str, float],
    timeout_s: float,
) -> dict[str, float]:
    """Post the comment on issue `number`, wait for its run to end, and take its phases from the database."""
    payload = json.loads(json.dumps(template))
    payload["issue"]["number"] = number
    payload["comment"]["id"] = 7_000_000 + number
    body = json.dumps(payload).encode()
    posted = time.time()
    response = httpx.post(f"{base}/webhooks", content=body, headers=webhook_headers("issue_comment", body, secret))
    assert response.status_code == 202, response.text
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            run = conn.execute(
                text("SELECT id, status, error, branch FROM run WHERE thread_number = :n"), {"n": number}
            ).first()
            if run is not None and run.status in ("succeeded", "failed", "cancelled"):
                steps = conn.execute(
                    text("SELECT tool, started_at, finished_at, output FROM step WHERE run_id = :r ORDER BY position"),
                    {"r": run.id},
                ).all()
                break
        time.sleep(0.05)
    else:
        raise SystemExit(f"run for issue #{number} did not finish within {timeout_s} s")
    if run.status != "succeeded" or run.branch not in pulls:
        raise SystemExit(f"run for issue #{number} {run.status}: {run.error}")
    [setup] = [json.loads(output) for tool, _, _, output in steps if tool == "setup"]
    if setup["cached"] != (kind == "warm"):
        raise SystemExit(f"run for issue #{number} was to be a {kind} setup, but its setup step said {setup}")
    return _phases(posted, pulls[run.branch], [(tool, _at(s), _at(f)) for tool, s, f, _ in steps])


def _phases(posted: float, pulled: float, steps: list[tuple[str, float | None, float | None]]) -> dict[str, float]:
    """Seconds per phase, up to the end of git_pr (the CI step after it waits for GitHub, not for nofx)."""
    phases = dict.fromkeys(PHASES, 0.0)
    ran = [(tool, s, f) for tool, s, f in steps if s is not None and f is not None]
    phases["intake→dispatch"] = ran[0][1] - posted
    previous_end = ran[0][1]
    for tool, begun, ended in ran:
        phases["hand-offs"] += max(0.0, begun - previous_end)
        phases[STEP_PHASE.get(tool, "hand-offs")] += ended - begun
        previous_end = ended
        if tool == "git_pr":
            break
    phases["total"] = pulled - posted
    return phases


def _at(value: Any) -> float | None:
    """A timestamp column as SQLite returns it (text, UTC) in seconds since the epoch."""
    if value is None:
        return None
    when = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def _report(
    first: dict[str, float],
    runs: list[tuple[str, dict[str, float]]],
    elapsed: float,
    model_calls: int,
    github_calls: int,
    logs: Path,
) -> None:
    columns = ("total", *PHASES)
    print(f"comment → pull request, seconds (model answers instantly; machine: {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f} at the end)")  # fmt: skip
    print("total: comment posted → pull request created on GitHub; phases from the steps' start and finish times:")
    print("intake→dispatch: comment posted → first step started; codegen: generate + apply; hand-offs: the queue")
    print("between steps. git_pr goes on a little after the pull request exists, so the phases may add up to more.")
    print(f"{'run':<26}" + "".join(f"{c:>17}" for c in columns))

    def row(label: str, values: dict[str, float]) -> None:
        print(f"{label:<26}" + "".join(f"{values[c]:>17.2f}" for c in columns))

    row("first (clone, cold setup)", first)
    for n, (kind, values) in enumerate(runs, 1):
        row(f"{n}: {kind} setup", values)
    for kind in ("cold", "warm"):
        chosen = [values for k, values in runs if k == kind]
        if chosen:
            median = {c: statistics.median(v[c] for v in chosen) for c in columns}
            row(f"median {kind} ({len(chosen)} runs)", median)
    warm = [values["total"] for kind, values in runs if kind == "warm"]
    if warm:
        verdict = "met" if statistics.median(warm) <= 5.0 else "NOT met"
        print(f"target warm total ≤ 5 s: {verdict} (median {statistics.median(warm):.2f} s)")
    print(
        f"{len(runs) + 1} runs in {elapsed:.1f} s; model calls {model_calls}, GitHub calls {github_calls}; logs {logs}"
    )


if __name__ == "__main__":
    main()
