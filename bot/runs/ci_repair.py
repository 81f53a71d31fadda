"""A repair round for a CI failure, the same way a failing local gate is repaired (`bot.runs.agent.repair`): the model
gets what CI reported and the current diff, the run's own gates check its edits, and the change is committed and
pushed to the same branch, where CI runs again.

Rounds are bounded by `ci.max_repairs` over the step (a round whose edits the local gates reject counts, and its
failure becomes the next round's evidence). A push refused because someone else pushed hands the branch over.
"""

from __future__ import annotations

import time
from typing import Any

from bot.runs import agent
from bot.runs.contract import MAX_EVIDENCE_LINES, NoChange, StepContext, StepFailed
from bot.workspace.git import GitError


class HandedOver(Exception):
    """The branch moved under nofx (someone else pushed): it stops repairing."""

    def __init__(self, tip: str) -> None:
        super().__init__(tip)
        self.tip = tip


async def repair(ctx: StepContext, state: dict[str, Any], *, evidence: str, check: str) -> str | None:
    """Repair rounds until the run's gates pass the change; push it and return the new head, or None when no round
    is left (or the model changed nothing). Each round is recorded in `state["repairs"]` as the status comment
    lists them: `{attempt, files, passed, head_sha?}` (`passed` None until CI has judged the pushed head)."""
    rounds: list[dict[str, Any]] = state["repairs"]
    if ctx.llm is None or ctx.workspace is None or ctx.commands is None:
        return None
    source = f"the repository's CI check `{check}`"
    deadline = time.monotonic() + ctx.step.timeout_s
    await _on_pushed_head(ctx, state)
    unpushed: list[str] = []  # files of rounds whose edits the gates rejected: still in the worktree
    while len(rounds) < ctx.config.ci.max_repairs:
        attempt = len(rounds) + 1
        ctx.emit("repair.started", {"attempt": attempt, "source": source})
        try:
            round_ = await agent.repair(ctx, evidence=evidence, source=source, attempt=attempt, deadline=deadline)
        except NoChange as exc:  # another round would see the same failure
            rounds.append({"attempt": attempt, "files": [], "passed": False, "note": str(exc)})
            return None
        if ctx.checkpoint is not None:
            await ctx.checkpoint(f"CI repair {attempt}")
        unpushed = sorted({*unpushed, *round_.files})
        rejected = await ctx.commands.recheck(deadline)
        if rejected is not None:
            rounds.append({"attempt": attempt, "files": round_.files, "passed": False, "command": rejected.command})
            ctx.emit("repair.finished", rounds[-1])
            evidence = rejected.describe_failure(lines=MAX_EVIDENCE_LINES)
            source = f"the check `{rejected.command}`, after a repair of CI check `{check}`"
            continue
        head = await _push(ctx, state, unpushed, check)
        rounds.append({"attempt": attempt, "files": round_.files, "passed": None, "head_sha": head})
        ctx.emit("repair.finished", rounds[-1])
        return head
    return None


async def _on_pushed_head(ctx: StepContext, state: dict[str, Any]) -> None:
    """Put the worktree's HEAD on the commit CI judged, keeping its files: a worktree rebuilt on another worker
    starts at the run's start commit with the last checkpoint's files, and a repair commit must follow the push."""
    assert ctx.workspace is not None and ctx.git_token is not None
    if await ctx.workspace.head_sha() == state["head_sha"]:
        return
    refspec = f"refs/heads/{state['branch']}"
    try:
        await ctx.workspace.git("fetch", "--quiet", ctx.workspace.clone_url, refspec, token=await ctx.git_token())
        await ctx.workspace.git("reset", "--quiet", "--mixed", state["head_sha"])
    except GitError as exc:
        raise StepFailed(f"the worktree could not be put on the commit CI ran on: {exc}", state) from None


async def _push(ctx: StepContext, state: dict[str, Any], files: list[str], check: str) -> str:
    """Commit the repaired files as the App's bot and push them (never forced) to the run's branch."""
    assert ctx.workspace is not None and ctx.git_token is not None and ctx.author is not None
    name, email = await ctx.author()
    try:
        head = await ctx.workspace.commit_all(
            _message(ctx, state, check), author_name=name, author_email=email, paths=files
        )
        if head is None:
            raise StepFailed("the repair left no change to push", state)
        await ctx.workspace.push(await ctx.git_token())
    except GitError as exc:
        listed = await ctx.workspace.git(
            "ls-remote", ctx.workspace.clone_url, f"refs/heads/{state['branch']}", token=await ctx.git_token()
        )
        tip = listed.split()[0] if listed.strip() else ""
        if tip and tip not in state["pushed"]:
            raise HandedOver(tip) from None
        raise StepFailed(f"pushing the repair failed: {exc}", state) from None
    return head


def _message(ctx: StepContext, state: dict[str, Any], check: str) -> str:
    """The repair commit's message in the run's git mode; the requester is credited as in the first commit."""
    number = ctx.run.thread_number
    if ctx.config.git_mode == "hidden":
        subject = f"Fix what the checks found (#{number})"
    else:
        subject = f"Fix the failing CI check {check} (#{number})"
    lines = [subject[:72], ""]
    if ctx.config.git_mode == "advanced":
        lines += [f"Run {ctx.run.id}, repair of CI on {str(state.get('head_sha', ''))[:7]}.", ""]
    return "\n".join(lines)
