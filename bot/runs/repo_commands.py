"""Run a repository's own commands for a step (gates, `run_gate`, setup), and explain their failures.

One place decides what such a command sees, so a gate step, the model's `run_gate` and a repair round judge the
code the same way; and one place turns a failure into text for people and for the model.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path

from bot.runs.contract import StepContext, StepFailed
from bot.workspace.sandbox import UNSAFE_NOTICE, CommandResult, SandboxUnavailable, WorkspaceTampered

TAIL_LINES = 30
SETUP_DIR_VARIABLE = "NOFX_SETUP_DIR"
_NOT_FOUND = (
    re.compile(r"^(?:/bin/)?sh: \d+: (?P<program>[^:\s]+): not found$", re.MULTILINE),  # dash
    re.compile(r"^(?:.*: )?(?P<program>[^:\s]+): command not found$", re.MULTILINE),  # bash
    re.compile(r"can't open file '(?P<program>[^']+)'", re.MULTILINE),
)


async def run_gate_command(ctx: StepContext, command: str, *, timeout_s: float) -> CommandResult:
    """A configured check command in the run's worktree, in the sandbox, without network; with the run's setup
    directory read-only and its `bin/` first on PATH when the run has one."""
    directory = setup_dir(ctx)
    if directory is None:
        return await sandboxed(ctx, command, timeout_s=timeout_s)
    return await sandboxed(ctx, command, timeout_s=timeout_s, readonly=[directory], env=setup_env(ctx, directory))


def setup_dir(ctx: StepContext) -> Path | None:
    """The directory the run's `setup` step filled (or reused), if it ran and the directory is still there."""
    for step in ctx.earlier.values():
        output = step.output if isinstance(step.output, dict) else {}
        if step.tool == "setup" and isinstance(output.get("dir"), str) and Path(output["dir"]).is_dir():
            return Path(output["dir"])
    return None


def setup_env(ctx: StepContext, directory: Path) -> dict[str, str]:
    """What a command sees of the setup directory: its path, and its `bin/` first on PATH (then the toolchains)."""
    return {SETUP_DIR_VARIABLE: str(directory), "PATH": f"{directory / 'bin'}:{ctx.sandbox.toolchains.search_path}"}


async def sandboxed(
    ctx: StepContext,
    command: str,
    *,
    timeout_s: float,
    network: bool = False,
    writable: Sequence[Path] = (),
    readonly: Sequence[Path] = (),
    env: Mapping[str, str] | None = None,
) -> CommandResult:
    """A repository command in the run's worktree and sandbox; a sandbox that cannot run it fails the step."""
    if ctx.workspace is None:
        raise StepFailed("this step needs a workspace")
    try:
        return await ctx.sandbox.run(
            command,
            ctx.workspace,
            env_allowed=ctx.config.policy.env_allowed,
            timeout_s=timeout_s,
            network=network,
            writable=writable,
            readonly=readonly,
            env=env,
        )
    except (SandboxUnavailable, WorkspaceTampered) as exc:  # the message names the cause and what to do
        raise StepFailed(f"`{command}`: {exc}") from None
    except OSError as exc:  # the worktree is gone, or the host cannot start a process
        raise StepFailed(f"`{command}` could not be started: {exc.strerror or exc}") from None


def repairs_so_far(ctx: StepContext) -> int:
    """Repair rounds the run's earlier steps used: `repair.max_attempts` bounds the run, not each step."""
    outputs = [step.output for step in ctx.earlier.values() if isinstance(step.output, dict)]
    return sum(len(output["repairs"]) for output in outputs if isinstance(output.get("repairs"), list))


def missing_program(result: CommandResult) -> str | None:
    """For exit code 127: which program was not found, and how an operator makes it available."""
    if result.exit_code != 127:
        return None
    found = next((m.group("program") for p in _NOT_FOUND if (m := p.search(result.output))), None)
    what = f"`{found}` was not found" if found else "a program was not found"
    return (
        f"{what} in the sandbox (exit code 127). Sandboxed commands see the system directories, the directories on "
        "nofx's own PATH and those in NOFX_SANDBOX_PATHS, read-only: install the program there (or add its "
        "directory to NOFX_SANDBOX_PATHS on the nofx server), or install it with `setup` in .github/nofx.yml."
    )


def verdict(command: str, result: CommandResult, timeout_s: float) -> str:
    """How the command ended, in one sentence, with the hint for a missing program: the same words for a gate
    step's failure and for the model's `run_gate` answer."""
    if result.ok:
        return f"`{command}` passed ({isolation(result)})"
    if result.timed_out:
        how = f"timed out after {timeout_s:g} s"
    elif result.over_disk:
        how = "was stopped for using more disk in the worktree than the sandbox allows"
    elif result.exit_code is not None and result.exit_code < 0:
        how = f"was killed by {_signal_name(-result.exit_code)}"
    else:
        how = f"failed with exit code {result.exit_code}"
    message = f"`{command}` {how} ({isolation(result)})"
    hint = missing_program(result)
    return f"{message}. {hint}" if hint else message


def describe_failure(command: str, result: CommandResult, timeout_s: float, *, lines: int = TAIL_LINES) -> str:
    """The verdict, then the last lines of output as plain text (each surface fences it once, itself)."""
    message = verdict(command, result, timeout_s)
    tail = result.tail(lines)
    if not tail.strip():
        return message + "; it printed nothing"
    return f"{message}. Last {lines} lines of output:\n{tail}"


def isolation(result: CommandResult) -> str:
    """How the command was isolated, in words for the step output and the comment."""
    if result.isolation == "none":
        return "isolation: none, the operator turned the sandbox off with NOFX_SANDBOX=none"
    return f"isolation: {result.isolation}"


def unsafe_notice(result: CommandResult) -> str:
    """The warning that leads the output of a command that ran without a sandbox."""
    return f"{UNSAFE_NOTICE}\n" if result.isolation == "none" else ""


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
