"""A person decides: the run waits until `/nofx approve` or `/nofx reject` (or the check run's buttons)."""

from __future__ import annotations

from bot.runs.contract import StepContext, StepResult

TOOLS = ("manual:approval",)


async def run(ctx: StepContext) -> StepResult:
    before = ctx.inputs.get("before")
    prompt = f"Approve to continue with `{before}`." if before else "Approve to continue."
    ctx.emit("approval.requested", {"before": before})
    return StepResult(output={"prompt": prompt, "before": before}, summary="waiting for approval", wait=True)
