"""Ask the model for the change; store its edits as an artifact that `workspace:write` applies.

The model works like an engineer (search, read, edit, run a gate) through the context's `model`; its edits are undone
here again, so generating and applying stay two steps: a retried apply never pays for generation again and a
person can read exactly what will be written.
"""

from __future__ import annotations

import json

from bot.runs.contract import EDITS_ARTIFACT, StepContext, StepFailed, StepResult

TOOLS = ("codegen",)


async def run(ctx: StepContext) -> StepResult:
    if ctx.artifacts is None:
        raise StepFailed("code generation needs the run's artifacts")
    if ctx.model is None:
        raise StepFailed("this step needs a workspace and a configured model (ANTHROPIC_API_KEY or OPENAI_API_KEY)")
    result = await ctx.model.generate(str(ctx.inputs.get("request") or ctx.run.request))
    ctx.artifacts.put(EDITS_ARTIFACT, json.dumps([e.to_dict() for e in result.edits], indent=1).encode())
    return StepResult(
        output={
            "files": result.files,
            "edits": len(result.edits),
            "turns": result.turns,
            "change_summary": result.summary,
        },
        summary=f"{len(result.edits)} edit(s) to {len(result.files)} file(s) in {result.turns} turn(s)",
    )
