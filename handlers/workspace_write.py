"""Apply the edits a codegen step generated to the run's worktree: all or nothing, never outside it."""

from __future__ import annotations

import json

from bot.runs.contract import EDITS_ARTIFACT, ArtifactError, StepContext, StepFailed, StepResult
from bot.workspace.edits import Edit, EditError, apply, outside, touches_workflows

TOOLS = ("workspace:write",)


async def run(ctx: StepContext) -> StepResult:
    if ctx.workspace is None or ctx.artifacts is None:
        raise StepFailed("this step needs the run's workspace and artifacts")
    source = ctx.inputs.get("from_step", "generate")
    produced = ctx.earlier.get(source)
    if produced is None:
        raise StepFailed(f"the step {source!r} has not produced edits to apply")
    try:
        raw = json.loads(ctx.artifacts.read(EDITS_ARTIFACT, step_id=produced.id))
        edits = [Edit.from_dict(item) for item in raw]
    except (ArtifactError, EditError, ValueError) as exc:
        raise StepFailed(f"the edits of step {source!r} cannot be used: {exc}") from None
    limits = ctx.inputs.get("paths")
    if limits and (stray := outside(edits, [str(p) for p in limits])):
        raise StepFailed(
            "this plan may only change " + ", ".join(map(str, limits)) + "; the edits also change " + ", ".join(stray)
        )
    workflows = touches_workflows(edits)
    if workflows and not _approved_before(ctx):
        raise StepFailed(
            "the edits change CI workflows ("
            + ", ".join(workflows)
            + "); that needs a person's approval first: add `workspace:write` to "
            "`policy.require_approval_before` in .github/nofx.yml and retry"
        )
    try:
        written = apply(ctx.workspace.path, edits)
    except EditError as exc:
        raise StepFailed(str(exc)) from None
    ctx.emit("workspace.written", {"files": written})
    return StepResult(output={"files": written}, summary=f"{len(written)} file(s) written")


def _approved_before(ctx: StepContext) -> bool:
    """True if this step directly follows a manual approval granted for it."""
    return any(
        ctx.earlier[name].tool == "manual:approval" and ctx.earlier[name].output.get("before") == ctx.step.name
        for name in ctx.step.depends_on
        if name in ctx.earlier
    )
