"""Review the run's own diff before its pull request opens (`review.before_pr`, the "pair" pattern).

Findings at or above `review.fail_on` go to a repair round (the context's `model.repair`), then the diff is reviewed
again, within the run's `repair.max_attempts`; the step fails with the findings still open after the last one.
The gates come after this step, so they judge the repaired code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bot.runs.contract import NoChange, ReviewFinding, StepContext, StepFailed, StepResult

TOOLS = ("gate:llm_review",)


async def run(ctx: StepContext) -> StepResult:
    if ctx.review is None or ctx.model is None:
        raise StepFailed("the review needs the run's workspace and a configured model")
    fail_on = ctx.config.review.fail_on
    repairs: list[dict[str, Any]] = []
    attempts_left = ctx.config.repair.max_attempts - ctx.repairs_so_far()
    failing = await ctx.review()
    while failing and len(repairs) < attempts_left:
        attempt = len(repairs) + 1
        ctx.emit("repair.started", {"attempt": attempt, "findings": len(failing)})
        try:
            round_ = await ctx.model.repair(
                evidence=_describe(failing),
                source=f"the review (findings at or above `{fail_on}`)",
                attempt=attempt,
            )
        except NoChange as exc:
            repairs.append({"attempt": attempt, "files": [], "passed": False, "note": str(exc)})
            break
        if ctx.checkpoint is not None:
            await ctx.checkpoint(f"repair {attempt}")
        failing = await ctx.review()
        repairs.append({"attempt": attempt, "files": round_.files, "passed": not failing})
    output: dict[str, Any] = {"findings": [f"{f.path}:{f.line} [{f.severity}] {f.title}" for f in failing]}
    if repairs:
        output["repairs"] = repairs
    if failing:
        raise StepFailed(
            f"the review found {len(failing)} problem(s) at or above `{fail_on}`:\n{_describe(failing)}", output
        )
    return StepResult(output=output, summary=f"no finding at or above `{fail_on}`")


def _describe(findings: Sequence[ReviewFinding]) -> str:
    return "\n".join(f"{f.path}:{f.line} [{f.severity}] {f.title}: {f.body}" for f in findings)
