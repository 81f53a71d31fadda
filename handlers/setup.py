"""Install what the repository's code needs (`setup` in .github/nofx.yml) before any model is paid.

The commands run from the repository root on the base commit, in the sandbox with network but no secrets, and
write their result into one directory, `$NOFX_SETUP_DIR` (a venv, `node_modules` via a prefix, a toolchain):
its `bin/` comes first on PATH for the gates and the model's `run_gate`, which see it read-only and without
network. The directory is kept per repository and key (the commands and the content of the `setup_cache_key`
files), so a later run whose manifests and lockfiles are unchanged reuses it and skips setup; the engine shares it
with the other workers and evicts old keys.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from bot.runs.contract import SETUP_DIR_VARIABLE, StepContext, StepFailed, StepResult

TOOLS = ("setup",)
KEY_VERSION = "2"  # 2: commands see the directory at the sandbox's fixed setup path


async def run(ctx: StepContext) -> StepResult:
    """Reuse the setup of an earlier run with the same key, or run the commands; a failure fails the run."""
    commands = ctx.config.setup
    if not commands:
        raise StepFailed("there is nothing to set up; add `setup` commands to .github/nofx.yml")
    if ctx.workspace is None or ctx.commands is None or ctx.setup_results is None:
        raise StepFailed("setup needs the run's workspace and the worker's data dir")
    key = await _key(ctx)
    started = time.monotonic()

    async def install(directory: Path) -> dict[str, object]:
        await _install(ctx, directory, started)
        return {"duration_s": time.monotonic() - started, "commands": list(commands)}

    record, reused = await ctx.setup_results.reuse_or_make(key, install)
    output: dict[str, object] = {"key": key, "cached": reused, "commands": len(commands)}
    took = record.get("duration_s")
    output["duration_s"] = round(took, 2) if isinstance(took, int | float) else 0.0
    ctx.emit("setup.finished", {"key": key, "cached": reused, "duration_s": output["duration_s"]})
    if reused:
        return StepResult(output=output, summary=f"reused the setup of an earlier run (key {key[:12]})")
    return StepResult(output=output, summary=f"{len(commands)} setup command(s) passed in {output['duration_s']} s")


async def _install(ctx: StepContext, directory: Path, started: float) -> None:
    """Run each command in order into the fresh directory; the first failure fails the step."""
    assert ctx.commands is not None
    deadline = started + ctx.step.timeout_s
    for command in ctx.config.setup:
        timeout = max(1.0, deadline - time.monotonic())
        result = await ctx.commands.setup(command, directory, timeout_s=timeout)
        if not result.ok:
            raise StepFailed(
                "setup " + result.describe_failure(command, timeout),
                {"command": command, "exit_code": result.exit_code},
            )


async def _key(ctx: StepContext) -> str:
    """sha256 over the commands, how they are isolated (which decides where they see the directory) and the blob
    ids of the tracked files `setup_cache_key` matches, at the base.

    A worktree whose files are not the base's (a follow-up run on its pull request's branch, a run resumed with a
    checkpoint's files) may hold code the commands run that no key file shows, written by the model or pushed to
    the branch: its result is the run's own (the run's id is in the key), never one a later run reuses."""
    assert ctx.workspace is not None
    listing = await ctx.workspace.git("ls-files", "-s", "-z")
    digest = hashlib.sha256(f"nofx setup v{KEY_VERSION}\0{SETUP_DIR_VARIABLE}\0{ctx.sandbox.isolation}\0".encode())
    changed = await ctx.workspace.git("diff", "--name-only", "-z", ctx.workspace.base_sha, "--")
    if changed or await ctx.workspace.git("ls-files", "--others", "-z"):
        digest.update(f"run {ctx.run.id}\0".encode())
    for command in ctx.config.setup:
        digest.update(command.encode() + b"\0")
    for entry in sorted(e for e in listing.split("\0") if e):
        meta, _, path = entry.partition("\t")
        if ctx.config.keys_setup(path):
            digest.update(f"{path}\0{meta.split()[1]}\0".encode())
    return digest.hexdigest()[:32]
