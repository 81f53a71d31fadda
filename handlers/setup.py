"""Install what the repository's code needs (`setup` in .github/nofx.yml) before any model is paid.

The commands run from the repository root on the base commit, in the sandbox with network but no secrets, and
write their result into one directory, `$NOFX_SETUP_DIR` (a venv, `node_modules` via a prefix, a toolchain):
its `bin/` comes first on PATH for the gates and the model's `run_gate`, which see it read-only and without
network. The directory is kept per repository and key (the commands and the content of the `setup_cache_key`
files), so a later run whose manifests and lockfiles are unchanged reuses it and skips setup.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

from bot.runs.contract import SETUP_DIR_VARIABLE, StepContext, StepFailed, StepResult

TOOLS = ("setup",)
DONE_MARKER = ".nofx-setup.json"
KEY_VERSION = "1"


async def run(ctx: StepContext) -> StepResult:
    """Reuse the setup of an earlier run with the same key, or run the commands; a failure fails the run."""
    commands = ctx.config.setup
    if not commands:
        raise StepFailed("there is nothing to set up; add `setup` commands to .github/nofx.yml")
    if ctx.workspace is None or ctx.commands is None or ctx.setup_cache is None:
        raise StepFailed("setup needs the run's workspace and the worker's data dir")
    key = await _key(ctx)
    directory = ctx.setup_cache / key
    started = time.monotonic()
    async with _locked(directory.with_name(key + ".lock")):
        done = await asyncio.to_thread(_done, directory)
        if done is None:
            done = await _install(ctx, directory, started)
            reused = False
        else:
            reused = True
    output = {"key": key, "dir": str(directory), "cached": reused, "commands": len(commands)}
    took = done.get("duration_s")
    output["duration_s"] = round(took, 2) if isinstance(took, int | float) else 0.0
    ctx.emit("setup.finished", {"key": key, "cached": reused, "duration_s": output["duration_s"]})
    if reused:
        return StepResult(output=output, summary=f"reused the setup of an earlier run (key {key[:12]})")
    return StepResult(output=output, summary=f"{len(commands)} setup command(s) passed in {output['duration_s']} s")


async def _install(ctx: StepContext, directory: Path, started: float) -> dict[str, object]:
    """Run each command in order into a fresh directory; on failure the directory goes, so nothing half-made stays."""
    assert ctx.commands is not None
    await asyncio.to_thread(_fresh, directory)
    deadline = started + ctx.step.timeout_s
    for command in ctx.config.setup:
        timeout = max(1.0, deadline - time.monotonic())
        result = await ctx.commands.setup(command, directory, timeout_s=timeout)
        if not result.ok:
            await asyncio.to_thread(shutil.rmtree, directory, True)
            raise StepFailed(
                "setup " + result.describe_failure(command, timeout),
                {"command": command, "exit_code": result.exit_code},
            )
    done: dict[str, object] = {"duration_s": time.monotonic() - started, "commands": list(ctx.config.setup)}
    await asyncio.to_thread((directory / DONE_MARKER).write_text, json.dumps(done), "utf-8")
    return done


def _fresh(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)


def _done(directory: Path) -> dict[str, object] | None:
    """The record of a finished setup in `directory`, or None when there is none (or it is unreadable)."""
    try:
        done = json.loads((directory / DONE_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return done if isinstance(done, dict) else None


async def _key(ctx: StepContext) -> str:
    """sha256 over the commands and the blob ids of the tracked files `setup_cache_key` matches, at the base."""
    assert ctx.workspace is not None
    listing = await ctx.workspace.git("ls-files", "-s", "-z")
    digest = hashlib.sha256(f"nofx setup v{KEY_VERSION}\0{SETUP_DIR_VARIABLE}\0".encode())
    for command in ctx.config.setup:
        digest.update(command.encode() + b"\0")
    for entry in sorted(e for e in listing.split("\0") if e):
        meta, _, path = entry.partition("\t")
        if ctx.config.keys_setup(path):
            digest.update(f"{path}\0{meta.split()[1]}\0".encode())
    return digest.hexdigest()[:32]


@contextlib.asynccontextmanager
async def _locked(path: Path) -> AsyncIterator[None]:
    """An exclusive file lock across worker processes, so two runs of one repository never set up at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:  # closing the file releases the lock
        await asyncio.to_thread(fcntl.flock, handle.fileno(), fcntl.LOCK_EX)
        yield
