"""`gate:ci`: wait for the repository's own CI on the pushed head; the engine provides the look through the context."""

from __future__ import annotations

from bot.runs.contract import StepContext, StepFailed, StepResult

TOOLS = ("gate:ci",)


async def run(ctx: StepContext) -> StepResult:
    if ctx.ci is None:
        raise StepFailed("waiting for CI needs the GitHub App on this server")
    return await ctx.ci(ctx)
