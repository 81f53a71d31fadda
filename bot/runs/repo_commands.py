"""Run a repository's own commands for a step (gates, `run_gate`, setup).

One place decides what such a command sees, so a gate step, the model's `run_gate` and a repair round judge the
code the same way. Handlers reach it through their context (`StepContext.commands`, a `StepCommands`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path

from bot.runs import setup_cache
from bot.runs.contract import SETUP_DIR_VARIABLE, GateRun, RetryableError, StepContext, StepFailed, gate_timeout
from bot.workspace.command_result import CommandResult
from bot.workspace.git import GitError
from bot.workspace.sandbox import SandboxUnavailable, WorkspaceTampered
from bot.workspace.worktrees import Worktree


@dataclass(frozen=True)
class StepCommands:
    """`StepContext.commands` for one step: its repository commands in its worktree and sandbox.

    `base_checkout` makes a checkout of the run's base commit (`RunWorkspaces.base_checkout`), where setup runs.
    """

    ctx: StepContext
    base_checkout: Callable[[], AbstractAsyncContextManager[Worktree]] | None = None

    async def gate(self, command: str, *, timeout_s: float) -> CommandResult:
        return await run_gate_command(self.ctx, command, timeout_s=timeout_s)

    async def recheck(self, deadline: float) -> GateRun | None:
        earlier = sorted((s for s in self.ctx.earlier.values() if s.tool.startswith("gate:")), key=lambda s: s.position)
        for command in [c for s in earlier if (c := self.ctx.config.gates.command_for(s.tool)) is not None]:
            timeout_s = gate_timeout(deadline)
            run = GateRun(command, await self.gate(command, timeout_s=timeout_s), timeout_s)
            if not run.ok:
                return run
        return None

    async def setup(self, commands: Sequence[str], directory: Path, *, deadline: float) -> GateRun | None:
        if self.base_checkout is None:
            raise StepFailed("setup runs only on the run's base commit, and this step has no checkout of it")
        env = _setup_env(self.ctx, directory)
        try:
            async with self.base_checkout() as base:
                for command in commands:
                    timeout_s = max(1.0, deadline - time.monotonic())
                    result = await _sandboxed(
                        self.ctx, command, timeout_s=timeout_s, env=env, setup=directory, base=base
                    )
                    if result.reached or result.refused:  # the audit trail: where setup went, as host:port
                        self.ctx.emit(
                            "setup.egress", {"reached": list(result.reached), "refused": list(result.refused)}
                        )
                    if not result.ok:
                        return GateRun(command, result, timeout_s)
        except GitError as exc:
            raise RetryableError(f"checking out the base commit for setup failed: {exc}") from None
        return None


async def run_gate_command(ctx: StepContext, command: str, *, timeout_s: float) -> CommandResult:
    """A configured check command in the run's worktree, in the sandbox, without network; with the run's setup
    directory read-only and its `bin/` first on PATH when the run has one."""
    directory = _setup_dir(ctx)
    if directory is None:
        return await _sandboxed(ctx, command, timeout_s=timeout_s)
    return await _sandboxed(ctx, command, timeout_s=timeout_s, setup=directory, env=_setup_env(ctx, directory))


def _setup_dir(ctx: StepContext) -> Path | None:
    """This worker's copy of the directory the run's `setup` step filled or reused (the engine unpacked it from the
    shared store if another worker made it); None when the run has no setup. Fails the step when it is missing:
    the commands would otherwise run without what they need and fail for a reason nobody could see."""
    key = setup_cache.run_setup_key(ctx.earlier)
    if key is None or ctx.setup_results is None:
        return None
    directory = ctx.setup_results.path(key)
    if setup_cache.done(directory) is None:
        raise StepFailed(setup_cache.missing(key))
    return directory


def _setup_env(ctx: StepContext, directory: Path) -> dict[str, str]:
    """What a command sees of the setup directory: its path, and its `bin/` first on PATH (then the toolchains)."""
    seen_at = ctx.sandbox.setup_path(directory)
    return {SETUP_DIR_VARIABLE: str(seen_at), "PATH": f"{seen_at / 'bin'}:{ctx.sandbox.toolchains.search_path}"}


async def _sandboxed(
    ctx: StepContext,
    command: str,
    *,
    timeout_s: float,
    env: Mapping[str, str] | None = None,
    setup: Path | None = None,
    base: Worktree | None = None,
) -> CommandResult:
    """A repository command in the run's worktree and sandbox, without network; a sandbox that cannot run it fails
    the step. A setup command runs in the `base` checkout instead, the one place with network (through the egress
    proxy, `bot.workspace.egress`; and `setup` writable): only the base's files ever run with network."""
    workspace = base or ctx.workspace
    if workspace is None:
        raise StepFailed("this step needs a workspace")
    try:
        return await ctx.sandbox.run(
            command,
            workspace,
            env_allowed=ctx.config.policy.env_allowed,
            timeout_s=timeout_s,
            network=base is not None,
            env=env,
            setup=setup,
            setup_writable=base is not None,
        )
    except (SandboxUnavailable, WorkspaceTampered) as exc:  # the message names the cause and what to do
        raise StepFailed(f"`{command}`: {exc}") from None
    except OSError as exc:  # the worktree is gone, or the host cannot start a process
        raise StepFailed(f"`{command}` could not be started: {exc.strerror or exc}") from None
