"""Run the repository's own check command (tests, linter, type checker) in the sandbox; its exit code is the verdict."""

from __future__ import annotations

import re
import signal
from typing import Any

from bot.runs.contract import StepContext, StepFailed, StepResult
from bot.workspace.sandbox import CommandResult, run_command

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
        result = await run_command(
            command,
            cwd=ctx.workspace.path,
            env_allowed=ctx.config.policy.env_allowed,
            timeout_s=ctx.step.timeout_s,
        )
    except OSError as exc:  # the worktree is gone, or the host cannot start a process
        raise StepFailed(f"`{command}` could not be started: {exc}") from None
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
            summary=f"`{command}` passed in {result.duration_s:.1f} s (isolation: {result.isolation})",
        )
    raise StepFailed(_failure_message(command, result, ctx.step.timeout_s), output)


def _output(command: str, result: CommandResult) -> dict[str, Any]:
    return {
        "command": command,
        "exit_code": result.exit_code,
        "duration_s": round(result.duration_s, 2),
        "isolation": result.isolation,
        "output_tail": result.tail(TAIL_LINES),
        "truncated": result.truncated,
    }


def _failure_message(command: str, result: CommandResult, timeout_s: float) -> str:
    """What the status comment and the check run show: the verdict, then the lines that explain it."""
    if result.timed_out:
        verdict = f"timed out after {timeout_s:g} s"
    elif result.exit_code is not None and result.exit_code < 0:
        verdict = f"was killed by {_signal_name(-result.exit_code)}"
    else:
        verdict = f"failed with exit code {result.exit_code}"
    message = f"`{command}` {verdict} (isolation: {result.isolation})"
    tail = result.tail(TAIL_LINES)
    if not tail.strip():
        return message + "; it printed nothing"
    return f"{message}. Last {TAIL_LINES} lines of output:\n{_fence(tail)}"


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
