"""Workspace preparation, cold (clone) against warm (fetch into the existing mirror), over real git smart HTTP.

Generates a repository with `--commits` commits and `--files` files through `git fast-import`, serves it with the
test suite's token-checking git server, and times `Workspaces.prepare` for a first run and a second one.
Usage: .venv/bin/python bench/workspace.py [--commits 10000] [--files 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.workspace.mirrors import Workspaces
    from tests.support.git_server import GitServer

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "ghs_" + secrets.token_hex(16)  # made per run: no credential-shaped string is committed
OWNER, REPO = "bench", "big"
WORDS = ["cart", "order", "price", "user", "session", "token", "item", "stock", "refund", "invoice", "shipping", "tax"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--commits", type=int, default=10_000)
    parser.add_argument("--files", type=int, default=5_000)
    parser.add_argument("--warm-runs", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    asyncio.run(bench(args.commits, args.files, args.warm_runs))


async def bench(commits: int, files: int, warm_runs: int) -> None:
    from bot.workspace.mirrors import Workspaces
    from tests.support.git_server import GitServer

    transfers = listen_for_transfers()
    with tempfile.TemporaryDirectory(prefix="nofx-bench-ws-") as tmp:
        served = Path(tmp) / "served"
        started = time.perf_counter()
        repo = generate(served / OWNER / f"{REPO}.git", commits=commits, files=files)
        generated = time.perf_counter() - started
        count = run(repo, "rev-list", "--count", "main").strip()
        tracked = len(run(repo, "ls-tree", "-r", "--name-only", "main").splitlines())
        print(f"repository: {count} commits, {tracked} files, {mib(repo)} packed (generated in {generated:.1f}s)")

        with GitServer(served) as server:
            server.add_token(TOKEN)
            workspaces = Workspaces(Path(tmp) / "data" / "workspaces")
            cold, checkout = await prepare_timed(workspaces, server, "cold")
            clone = transfers.pop()
            print(f"prepare cold: {cold:.2f}s (clone {clone:.2f}s, then a {checkout} checkout)")
            warm = []
            for n in range(warm_runs):
                server.commit(OWNER, REPO, {f"pkg00/new_{n}.py": "NEW = True\n"})  # something new to fetch
                warm.append((await prepare_timed(workspaces, server, f"warm-{n}"))[0])
            median, fetch = statistics.median(warm), statistics.median(transfers)
            print(f"prepare warm: {median:.2f}s median of {', '.join(f'{t:.2f}s' for t in warm)} (fetch {fetch:.2f}s)")
            print(f"cold/warm: {cold / median:.1f}x for prepare, {clone / fetch:.1f}x for clone against fetch")
            authorized = all(r.authorized for r in server.requests)
            mirror = workspaces.mirror_path(1, OWNER, REPO)
            print(f"mirror: {mib(mirror)}; {len(server.requests)} HTTP requests, all with the token: {authorized}")


async def prepare_timed(workspaces: Workspaces, server: GitServer, run_id: str) -> tuple[float, str]:
    """Seconds `prepare` took for a new run, and the size of its checkout (the worktree is kept: see below)."""
    from bot.workspace.worktrees import Checkout, branch_name

    async def token() -> str:
        return TOKEN

    # Flush earlier writes first: on a busy disk (or ext4 mounted with `discard`) their writeback, or the
    # trimming of a just-deleted checkout, would otherwise be charged to this checkout.
    os.sync()
    started = time.perf_counter()
    worktree = await workspaces.prepare(
        Checkout(
            installation_id=1,
            owner=OWNER,
            repo=REPO,
            clone_url=server.url_for(OWNER, REPO),
            token=token,
            run_id=run_id,
            branch=branch_name(1, f"{run_id} run"),
            base_ref="main",
        )
    )
    seconds = time.perf_counter() - started
    return seconds, mib(worktree.path)


def listen_for_transfers() -> list[float]:
    """The workspaces' own "cloned … in 1.23s" / "fetched … in 0.12s" log lines, to split network from checkout."""
    found: list[float] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            _, _, seconds = record.args  # type: ignore[misc]
            found.append(seconds)

    logger = logging.getLogger("bot.workspace.mirrors")
    logger.setLevel(logging.INFO)
    logger.addHandler(Collect())
    return found


def generate(repo: Path, *, commits: int, files: int) -> Path:
    """A bare repository: one commit adding `files` files, then small edits until `commits` commits exist."""
    repo.parent.mkdir(parents=True, exist_ok=True)
    run(None, "init", "--quiet", "--bare", "--initial-branch=main", str(repo))
    run(repo, "config", "http.receivepack", "true")
    rng = random.Random(42)
    paths = [f"pkg{i // 100:02d}/module_{i % 100:03d}.py" for i in range(files)]
    contents = {path: source(rng, path, 12) for path in paths}
    stream = io.BytesIO()
    when = 1_700_000_000
    for n in range(commits):
        if n == 0:
            changes = contents
        else:
            path = rng.choice(paths)
            contents[path] += f"    # change {n}: {' '.join(rng.choices(WORDS, k=6))}\n"
            changes = {path: contents[path]}
        message = f"Change {n}\n".encode()
        stream.write(b"commit refs/heads/main\n")
        stream.write(f"committer Bench <bench@example.test> {when + n * 60} +0000\n".encode())
        stream.write(b"data %d\n%s" % (len(message), message))
        for path, text in changes.items():
            data = text.encode()
            stream.write(b"M 100644 inline %s\ndata %d\n%s\n" % (path.encode(), len(data), data))
        stream.write(b"\n")
    run(repo, "fast-import", "--quiet", input=stream.getvalue())
    run(repo, "repack", "-a", "-d", "-q", "--depth=50", "--window=10")
    return repo


def source(rng: random.Random, path: str, lines: int) -> str:
    body = "".join(f"    {rng.choice(WORDS)}_{i} = {rng.randint(0, 10**6)}\n" for i in range(lines))
    return f'"""{path}"""\n\n\nclass {rng.choice(WORDS).title()}:\n{body}'


def run(repo: Path | None, *args: str, input: bytes | None = None) -> str:
    env = {"PATH": os.environ.get("PATH", os.defpath), "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
    command = ["git", *(["--git-dir", str(repo)] if repo else []), *args]
    return subprocess.run(command, input=input, capture_output=True, env=env, check=True).stdout.decode()


def mib(path: Path) -> str:
    """Disk usage, as `du` counts it."""
    used = sum(os.lstat(os.path.join(d, f)).st_blocks * 512 for d, _, names in os.walk(path) for f in names)
    return f"{used / 2**20:.1f} MiB"


if __name__ == "__main__":
    main()
