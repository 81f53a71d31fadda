"""Run the repository's own check command (tests, linter, type checker) in the sandbox; its exit code is the verdict."""

from __future__ import annotations

import re
import signal
from typing import Any

from bot.runs.contract import StepContext, StepFailed, StepResult
from bot.workspace.sandbox import UNSAFE_NOTICE, CommandResult, SandboxUnavailable, WorkspaceTampered

TOOLS = ("gate:test", "gate:lint", "gate:typecheck")
TAIL_LINES = 30
OUTPUT_ARTIFACT = "output.log"


async def run(ctx: StepContext) -> StepResult:
    """Pass when the command exits 0 in time; otherwise fail the run with the output's last lines.

    The command is the repository's `gates.<kind>`, never an input of the plan: a plan chooses which gates
    run, not what they run.
    """
    kind = ctx.step.tool.removeprefix("gate:")
    command = getattr(ctx.config.gates, kind, None)
    if not isinstance(command, str) or not command.strip():
        raise StepFailed(f"this gate has no command to run; set `gates.{kind}` in .github/nofx.yml")
    if ctx.workspace is None:
        raise StepFailed("this step needs a workspace")
    try:
        result = await ctx.sandbox.run(
            command, ctx.workspace, env_allowed=ctx.config.policy.env_allowed, timeout_s=ctx.step.timeout_s
        )
    except (SandboxUnavailable, WorkspaceTampered) as exc:  # the message names the cause and what to do
        raise StepFailed(f"`{command}`: {exc}") from None
    except OSError as exc:  # the worktree is gone, or the host cannot start a process
        raise StepFailed(f"`{command}` could not be started: {exc.strerror or exc}") from None
    if ctx.artifacts is not None:
        ctx.artifacts.put(OUTPUT_ARTIFACT, result.output.encode("utf-8"))
    output = _output(command, result)
    ctx.emit(
        "gate.finished",
        {key: output[key] for key in ("command", "exit_code", "duration_s", "isolation", "truncated")}
        | {"tool": ctx.step.tool, "timed_out": result.timed_out},
    )
    if result.ok:
        return StepResult(
            output=output,
            summary=f"`{command}` passed in {result.duration_s:.1f} s ({_isolation(result)})",
        )
    raise StepFailed(_failure_message(command, result, ctx.step.timeout_s), output)


def _output(command: str, result: CommandResult) -> dict[str, Any]:
    return {
        "command": command,
        "exit_code": result.exit_code,
        "duration_s": round(result.duration_s, 2),
        "isolation": result.isolation,
        "output_tail": _unsafe(result) + result.tail(TAIL_LINES),
        "truncated": result.truncated,
    }


def _failure_message(command: str, result: CommandResult, timeout_s: float) -> str:
    """What the status comment and the check run show: the verdict, then the lines that explain it."""
    if result.timed_out:
        verdict = f"timed out after {timeout_s:g} s"
    elif result.over_disk:
        verdict = "was stopped for using more disk in the worktree than the sandbox allows"
    elif result.exit_code is not None and result.exit_code < 0:
        verdict = f"was killed by {_signal_name(-result.exit_code)}"
    else:
        verdict = f"failed with exit code {result.exit_code}"
    message = f"`{command}` {verdict} ({_isolation(result)})"
    tail = result.tail(TAIL_LINES)
    if not tail.strip():
        return message + "; it printed nothing"
    return f"{message}. Last {TAIL_LINES} lines of output:\n{_fence(tail)}"


def _isolation(result: CommandResult) -> str:
    if result.isolation == "none":
        return "isolation: none, the operator turned the sandbox off with NOFX_SANDBOX=none"
    return f"isolation: {result.isolation}"


def _unsafe(result: CommandResult) -> str:
    return f"{UNSAFE_NOTICE}\n" if result.isolation == "none" else ""


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _fence(text: str) -> str:
    """A Markdown code block that the output's own backticks cannot close early."""
    longest = max((len(ticks) for ticks in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}\n{text}\n{fence}"
