"""What the sandbox costs per command: `true` without isolation, in bwrap, and in bwrap with the git checks.

Builds a bare mirror with one linked worktree (as nofx lays them out) and times `run_command` N times each way.
Usage: .venv/bin/python bench/sandbox.py [--runs 30]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.workspace.isolation import GitLayout, probe  # noqa: E402
from bot.workspace.limits import process_limit  # noqa: E402
from bot.workspace.sandbox import run_command  # noqa: E402


def _git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def _worktree(root: Path) -> tuple[Path, GitLayout]:
    seed, mirror, worktree = root / "seed", root / "mirror.git", root / "worktrees" / "run1"
    seed.mkdir()
    _git("init", "-q", "-b", "main", cwd=seed)
    (seed / "a.txt").write_text("a\n")
    _git("add", "a.txt", cwd=seed)
    _git("-c", "user.name=b", "-c", "user.email=b@example.com", "commit", "-q", "-m", "a", cwd=seed)
    _git("clone", "-q", "--bare", str(seed), str(mirror), cwd=root)
    _git("worktree", "add", "-q", "-b", "run", str(worktree), cwd=mirror)
    return worktree, GitLayout(git_dir=mirror / "worktrees" / "run1", common_dir=mirror)


async def _time(runs: int, **kwargs: object) -> list[float]:
    durations = []
    for _ in range(runs):
        started = time.perf_counter()
        result = await run_command("true", timeout_s=30, **kwargs)  # type: ignore[arg-type]
        durations.append(time.perf_counter() - started)
        assert result.ok, result.output
    return durations


async def main(runs: int) -> None:
    found = probe()
    print(f"bwrap: {found.bwrap or 'missing'} ({'works' if found.ok else found.reason}); processes: {process_limit()}")
    with tempfile.TemporaryDirectory() as tmp:
        worktree, layout = _worktree(Path(tmp))
        cases: list[tuple[str, dict[str, object]]] = [("none", {"cwd": worktree, "isolation": "none"})]
        if found.ok:
            cases += [
                ("bwrap", {"cwd": worktree}),
                ("bwrap + git checks", {"cwd": worktree, "git": layout}),
            ]
        for name, kwargs in cases:
            durations = await _time(runs, **kwargs)
            print(
                f"{name:<20} median {statistics.median(durations) * 1000:7.1f} ms   "
                f"p90 {sorted(durations)[int(runs * 0.9) - 1] * 1000:7.1f} ms   ({runs} runs of `true`)"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    asyncio.run(main(parser.parse_args().runs))
