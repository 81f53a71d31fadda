"""Review the run's own diff before its pull request opens (`review.before_pr`, the "pair" pattern).

Findings at or above `review.fail_on` go to a repair round (`bot.runs.agent.repair`), then the diff is reviewed
again, within the run's `repair.max_attempts`; the step fails with the findings still open after the last one.
The gates come after this step, so they judge the repaired code.
"""

from __future__ import annotations

from typing import Any

from bot.review.analysis import analyse
from bot.review.findings import Finding, severity_at_least
from bot.runs import agent
from bot.runs.contract import StepContext, StepFailed, StepResult
from bot.runs.repo_commands import repairs_so_far
from bot.workspace.diffs import parse_git_diff

TOOLS = ("gate:llm_review",)


async def run(ctx: StepContext) -> StepResult:
    if ctx.workspace is None or ctx.llm is None:
        raise StepFailed("the review needs the run's workspace and a configured model")
    fail_on = ctx.config.review.fail_on
    repairs: list[dict[str, Any]] = []
    attempts_left = ctx.config.repair.max_attempts - repairs_so_far(ctx)
    failing = await _failing(ctx)
    while failing and len(repairs) < attempts_left:
        attempt = len(repairs) + 1
        ctx.emit("repair.started", {"attempt": attempt, "findings": len(failing)})
        try:
            round_ = await agent.repair(
                ctx,
                evidence=_describe(failing),
                source=f"the review (findings at or above `{fail_on}`)",
                attempt=attempt,
            )
        except agent.NoChange as exc:
            repairs.append({"attempt": attempt, "files": [], "passed": False, "note": str(exc)})
            break
        if ctx.checkpoint is not None:
            await ctx.checkpoint(f"repair {attempt}")
        failing = await _failing(ctx)
        repairs.append({"attempt": attempt, "files": round_.files, "passed": not failing})
    output: dict[str, Any] = {"findings": [f"{f.path}:{f.line} [{f.severity}] {f.title}" for f in failing]}
    if repairs:
        output["repairs"] = repairs
    if failing:
        raise StepFailed(
            f"the review found {len(failing)} problem(s) at or above `{fail_on}`:\n{_describe(failing)}", output
        )
    return StepResult(output=output, summary=f"no finding at or above `{fail_on}`")


async def _failing(ctx: StepContext) -> list[Finding]:
    """The findings on the run's current change that reach `review.fail_on`."""
    assert ctx.workspace is not None and ctx.llm is not None
    tree = ctx.workspace
    text = await tree.git("diff", "--no-color", "--no-ext-diff", tree.start_sha)
    for path in [p for p in (await tree.git("ls-files", "-z", "--others", "--exclude-standard")).split("\0") if p]:
        # a new file as git shows it (exit code 1 means "they differ"); binary ones say so and are skipped later
        text += await tree.git("diff", "--no-color", "--no-index", "--", "/dev/null", path, check=False)
    # StepLLM is the router as a step sees it (same `call`, usage charged to the step).
    analysis = await analyse(ctx.llm, parse_git_diff(text), ctx.config)  # type: ignore[arg-type]
    return [f for f in analysis.findings if severity_at_least(f.severity, ctx.config.review.fail_on)]


def _describe(findings: list[Finding]) -> str:
    return "\n".join(f"{f.path}:{f.line} [{f.severity}] {f.title}: {f.body}" for f in findings)
