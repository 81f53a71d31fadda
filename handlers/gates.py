"""Run the repository's own check command (tests, linter, type checker) in the sandbox; its exit code is the verdict.

When the check fails and the run has repair attempts left (`repair.max_attempts`, counted over the whole run), the
model gets the failure and the current diff (the context's `model.repair`), its edits are checkpointed, and the checks
that passed before run again with this one: the pull request only ever opens on a change every gate passed.
"""

from __future__ import annotations

import time
from typing import Any

from bot.runs.contract import (
    GATE_TIMEOUT_S,
    MAX_EVIDENCE_LINES,
    CommandResult,
    GateRun,
    NoChange,
    StepContext,
    StepFailed,
    StepResult,
    gate_timeout,
)

TOOLS = ("gate:test", "gate:lint", "gate:typecheck")
TAIL_LINES = 30
OUTPUT_ARTIFACT = "output.log"


async def run(ctx: StepContext) -> StepResult:
    """Pass when the command exits 0 in time (after repairs, if any); otherwise fail with the output's last lines.

    The command is the repository's `gates.<kind>`, never an input of the plan: a plan chooses which gates
    run, not what they run.
    """
    kind = ctx.step.tool.removeprefix("gate:")
    command = ctx.config.gates.command_for(ctx.step.tool)
    if command is None:
        raise StepFailed(f"this gate has no command to run; set `gates.{kind}` in .github/nofx.yml")
    if ctx.workspace is None or ctx.commands is None:
        raise StepFailed("this step needs a workspace")
    deadline = time.monotonic() + ctx.step.timeout_s
    first_timeout = min(float(ctx.step.timeout_s), GATE_TIMEOUT_S)
    checked = await _check(ctx, command, first_timeout, artifact=True)
    repairs: list[dict[str, Any]] = []
    attempts_left = ctx.config.repair.max_attempts - ctx.repairs_so_far()
    while not checked.ok and len(repairs) < attempts_left and ctx.model is not None:
        attempt = len(repairs) + 1
        ctx.emit("repair.started", {"attempt": attempt, "command": checked.command})
        evidence = checked.describe_failure(lines=MAX_EVIDENCE_LINES)
        try:
            round_ = await ctx.model.repair(
                evidence=evidence, source=f"the check `{checked.command}`", attempt=attempt, deadline=deadline
            )
        except NoChange as exc:  # the model changed nothing: another round would see the same failure
            repairs.append({"attempt": attempt, "files": [], "passed": False, "note": str(exc)})
            break
        if ctx.checkpoint is not None:
            await ctx.checkpoint(f"repair {attempt}")
        checked = await _recheck(ctx, command, deadline)
        repairs.append({"attempt": attempt, "files": round_.files, "passed": checked.ok, "command": checked.command})
        ctx.emit("repair.finished", repairs[-1])
    result = checked.result
    output = _output(checked.command, result) | ({"repairs": repairs} if repairs else {})
    ctx.emit(
        "gate.finished",
        {key: output[key] for key in ("command", "exit_code", "duration_s", "isolation", "truncated")}
        | {"tool": ctx.step.tool, "timed_out": result.timed_out, "repairs": len(repairs)},
    )
    if result.ok:
        repaired = f" after {len(repairs)} repair(s)" if repairs else ""
        return StepResult(
            output=output,
            summary=f"`{command}` passed{repaired} in {result.duration_s:.1f} s ({result.isolation_words()})",
        )
    message = checked.describe_failure(lines=TAIL_LINES)
    if repairs:
        message = f"still failing after {len(repairs)} repair attempt(s): {message}"
    raise StepFailed(message, output)


async def _check(ctx: StepContext, command: str, timeout_s: float, *, artifact: bool = False) -> GateRun:
    assert ctx.commands is not None
    result = await ctx.commands.gate(command, timeout_s=timeout_s)
    if artifact and ctx.artifacts is not None:
        ctx.artifacts.put(OUTPUT_ARTIFACT, result.output.encode("utf-8"))
    return GateRun(command, result, timeout_s)


async def _recheck(ctx: StepContext, command: str, deadline: float) -> GateRun:
    """After a repair: the gates that passed earlier in the run, then this one; the first failure, or the last pass."""
    assert ctx.commands is not None
    failed = await ctx.commands.recheck(deadline)
    if failed is not None:
        return failed
    return await _check(ctx, command, gate_timeout(deadline), artifact=True)


def _output(command: str, result: CommandResult) -> dict[str, Any]:
    return {
        "command": command,
        "exit_code": result.exit_code,
        "duration_s": round(result.duration_s, 2),
        "isolation": result.isolation,
        "output_tail": result.unsafe_notice() + result.tail(TAIL_LINES),
        "truncated": result.truncated,
    }
