"""Install what the repository's code needs (`setup` in .github/nofx.yml) before any model is paid.

The commands run from the repository root in a checkout of the run's base commit (never in the run's worktree),
in the sandbox with network (public hosts only, through the egress proxy of `bot.workspace.egress`) but no
secrets, and write their result into one directory, `$NOFX_SETUP_DIR` (a venv, `node_modules` via a prefix, a
toolchain): its `bin/` comes first on PATH for the gates and the model's `run_gate`,
which see it read-only and without network. Only the base's files run with network: a follow-up run's branch or a
resumed run's checkpoint may hold code the model wrote (an install script, a Makefile, a postinstall hook), and
the model follows text anyone can write. The directory is kept per repository and key (the commands and the base's
`setup_cache_key` files), so a later run whose base has the same manifests and lockfiles reuses it and skips
setup; the engine shares it with the other workers and evicts old keys.
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
        assert ctx.commands is not None
        failed = await ctx.commands.setup(commands, directory, deadline=started + ctx.step.timeout_s)
        if failed is not None:
            raise StepFailed(
                "setup " + failed.result.describe_failure(failed.command, failed.timeout_s),
                {"command": failed.command, "exit_code": failed.result.exit_code},
            )
        return {"duration_s": time.monotonic() - started, "commands": list(commands)}

    record, reused = await ctx.setup_results.reuse_or_make(key, install)
    output: dict[str, object] = {"key": key, "cached": reused, "commands": len(commands)}
    took = record.get("duration_s")
    output["duration_s"] = round(took, 2) if isinstance(took, int | float) else 0.0
    ctx.emit("setup.finished", {"key": key, "cached": reused, "duration_s": output["duration_s"]})
    changed = await _changed_key_files(ctx)
    if changed:  # the comment names them: the gates run against the base's dependencies
        output["changed_key_files"] = changed
    if reused:
        return StepResult(output=output, summary=f"reused the setup of an earlier run (key {key[:12]})")
    return StepResult(output=output, summary=f"{len(commands)} setup command(s) passed in {output['duration_s']} s")


async def _key(ctx: StepContext) -> str:
    """sha256 over the commands, how they are isolated (which decides where they see the directory) and the blob
    ids of the files `setup_cache_key` matches in the base commit, the tree the commands run on."""
    assert ctx.workspace is not None
    listing = await ctx.workspace.git("ls-tree", "-r", "-z", "--full-tree", ctx.workspace.base_sha)
    digest = hashlib.sha256(f"nofx setup v{KEY_VERSION}\0{SETUP_DIR_VARIABLE}\0{ctx.sandbox.isolation}\0".encode())
    for command in ctx.config.setup:
        digest.update(command.encode() + b"\0")
    for entry in sorted(e for e in listing.split("\0") if e):
        meta, _, path = entry.partition("\t")
        if ctx.config.keys_setup(path):
            digest.update(f"{path}\0{meta.split()[2]}\0".encode())
    return digest.hexdigest()[:32]


async def _changed_key_files(ctx: StepContext) -> list[str]:
    """The `setup_cache_key` files whose content in the run's worktree is not the base's (a follow-up run's branch
    or a resumed run's checkpoint changed a manifest): the gates run without what they add."""
    assert ctx.workspace is not None
    changed = await ctx.workspace.git("diff", "--name-only", "-z", "--no-renames", ctx.workspace.base_sha, "--")
    added = await ctx.workspace.git("ls-files", "--others", "--exclude-standard", "-z")
    return sorted({p for p in (changed + added).split("\0") if p and ctx.config.keys_setup(p)})
