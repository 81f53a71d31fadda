"""`gate:ci`: the repository's own CI on the pushed head is the last gate; wait for it without holding a worker.

The engine hands `look` to the `gate:ci` handler through the step context (handlers reach nofx only through it).

Each execution looks once and returns: passed (the step succeeds), failed (evidence, then a repair round that pushes
a new commit and waits again, or the step fails after `ci.max_repairs`), needs a person or timed out (the step
fails and says so), or still pending (`wait`: the step parks, and a CI webhook or the poll in the workers'
maintenance thread resumes it). What it learnt is kept in the step's output, which the next execution reads.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from gidgethub import BadRequest, GitHubBroken
from gidgethub.abc import GitHubAPI

from bot.github import checks
from bot.models import utcnow
from bot.runs import ci_repair
from bot.runs.contract import RetryableError, StepContext, StepFailed, StepResult
from bot.workspace.git import GitError


async def look(ctx: StepContext) -> StepResult:
    """One look at CI on the watched head, and what follows from it (see the module docstring)."""
    if ctx.gh is None or ctx.workspace is None or ctx.git_token is None:
        raise StepFailed("waiting for CI needs the GitHub App and the run's workspace")
    owner, repo = ctx.run.repository.split("/", 1)
    state = dict(ctx.step.output or {})
    state.pop("summary", None)
    own = await _own_slug(ctx)
    now = utcnow()
    if "head_sha" not in state:
        started = await _start(ctx, ctx.gh, owner, repo, own, now)
        if isinstance(started, StepResult):
            return started
        state = started
    state["checked_at"] = now.isoformat()
    pushed_by_others = await _foreign_head(ctx, state)
    if pushed_by_others:
        return _handed_over(state, pushed_by_others)
    try:
        snapshot = await checks.read(ctx.gh, owner, repo, state["head_sha"], own_slug=own)
    except (GitHubBroken, BadRequest) as exc:  # GitHub hiccup or rate limit: the next poll looks again
        ctx.log.warning("reading CI failed, looking again later: %s", exc)
        return _wait(state, "waiting for CI (GitHub did not answer; trying again)")
    verdict = checks.judge(snapshot, state["required"])
    state.update(passed=list(verdict.passed), pending=list(verdict.pending))
    _judge_last_repair(state, verdict.state)
    if verdict.state == "passed":
        state.update(ci="passed", failing=[])
        repaired = f" after {len(state['repairs'])} repair(s)" if state["repairs"] else ""
        return StepResult(output=state, summary=f"CI passed on {state['head_sha'][:7]}{repaired}")
    if verdict.state == "needs_person":
        first = verdict.needs_person[0]
        state.update(ci="needs_person", failing=[_shown(first)])
        raise StepFailed(
            f"CI needs a person: `{first.name}` is waiting for approval ({first.url or 'see the pull request'}). "
            "Approve the workflow run, then `retry` this step.",
            state,
        )
    if verdict.state == "failed":
        return await _failed(ctx, owner, repo, snapshot, verdict, state)
    since = datetime.fromisoformat(state["since"])
    if now - since > timedelta(minutes=ctx.config.ci.timeout_min):
        state.update(ci="timed_out")
        raise StepFailed(
            f"CI did not finish within {ctx.config.ci.timeout_min} min on {state['head_sha'][:7]}; "
            f"still waiting for: {', '.join(verdict.pending)}",
            state,
        )
    done = len(verdict.passed)
    total = done + len(verdict.pending)
    return _wait(state, f"waiting for CI on {state['head_sha'][:7]}: {done} of {total} checks passed")


async def _start(
    ctx: StepContext, gh: GitHubAPI, owner: str, repo: str, own: str | None, now: datetime
) -> dict[str, Any] | StepResult:
    """The first look: which commit to watch, and which checks must pass (named, or those that ran on the base)."""
    pushed = next((s.output for s in ctx.earlier.values() if s.tool == "git_pr" and s.output.get("head_sha")), None)
    if pushed is None:
        raise StepFailed("there is no pushed commit to wait for: `gate:ci` must come after `git_pr`")
    assert ctx.workspace is not None
    config = ctx.config.ci
    required = list(config.checks)
    if not required:
        try:
            base = await checks.read(gh, owner, repo, ctx.workspace.base_sha, own_slug=own)
        except (GitHubBroken, BadRequest) as exc:  # the next poll starts again
            ctx.log.warning("reading the base commit's CI failed, looking again later: %s", exc)
            return StepResult(output={"checked_at": now.isoformat()}, summary="waiting for CI", wait=True)
        required = base.names
        if not required and config.wait is not True:
            return StepResult(
                output={"ci": "none", "head_sha": pushed["head_sha"], "required": []},
                summary=f"no CI ran on the base commit {ctx.workspace.base_sha[:7]}, so there is none to wait for",
            )
    head = await _latest_own_commit(ctx, pushed["head_sha"])
    return {
        "ci": "waiting",
        "head_sha": head,
        "branch": pushed.get("branch") or ctx.workspace.branch,
        "pull_request_url": pushed.get("pull_request_url"),
        "required": required,
        "pushed": sorted({pushed["head_sha"], head}),
        "repairs": [],
        "since": now.isoformat(),
    }


async def _latest_own_commit(ctx: StepContext, pushed: str) -> str:
    """What to watch: `git_pr`'s commit, or the worktree's HEAD when it follows that commit (a `retry` of this step
    after repairs pushed on top of it must not take nofx's own repair commits for someone else's)."""
    assert ctx.workspace is not None
    local = await ctx.workspace.head_sha()
    if local == pushed:
        return pushed
    try:
        follows = (await ctx.workspace.git("merge-base", pushed, local)).strip() == pushed
    except GitError:
        return pushed
    return local if follows else pushed


async def _failed(
    ctx: StepContext,
    owner: str,
    repo: str,
    snapshot: checks.Snapshot,
    verdict: checks.Verdict,
    state: dict[str, Any],
) -> StepResult:
    """Gather what the failing checks say; repair and wait again while repairs are left, else fail with it."""
    assert ctx.gh is not None
    first = verdict.failing[0]
    state.update(ci="failed", failing=[_shown(check) for check in verdict.failing[:5]])
    evidence = await checks.evidence(ctx.gh, owner, repo, snapshot, verdict.failing)
    ctx.emit("ci.failed", {"head_sha": state["head_sha"], "check": first.name, "url": first.url})
    message = f"CI failed on {state['head_sha'][:7]}: `{first.name}` ({first.conclusion})" + (
        f", {first.url}" if first.url else ""
    )
    try:
        head = await ci_repair.repair(ctx, state, evidence=evidence, check=first.name)
    except ci_repair.HandedOver as moved:
        return _handed_over(state, moved.tip)
    except RetryableError as exc:  # the model is unreachable: the next poll finds the failure and tries again
        ctx.log.warning("repairing the CI failure must wait: %s", exc)
        return _wait(state, f"CI failed on {state['head_sha'][:7]}; the repair waits for the model")
    if head is None:
        rounds = len(state["repairs"])
        after = f" after {rounds} repair(s)" if rounds else ""
        raise StepFailed(f"{message}{after}. What CI reported:\n{evidence}", state)
    state.update(head_sha=head, pushed=[*state["pushed"], head], since=utcnow().isoformat(), failing=[])
    return _wait(state, f"repaired the CI failure of `{first.name}`; waiting for CI on {head[:7]}")


async def _foreign_head(ctx: StepContext, state: dict[str, Any]) -> str | None:
    """The branch's tip on GitHub when it is a commit nofx did not push (someone else pushed), else None."""
    assert ctx.workspace is not None and ctx.git_token is not None
    try:
        listed = await ctx.workspace.git(
            "ls-remote", ctx.workspace.clone_url, f"refs/heads/{state['branch']}", token=await ctx.git_token()
        )
    except GitError as exc:
        ctx.log.warning("could not read the branch's tip: %s", exc)
        return None
    tip = listed.split()[0] if listed.strip() else None
    return tip if tip and tip not in state.get("pushed", []) else None


async def _own_slug(ctx: StepContext) -> str | None:
    """nofx's App slug, from its bot account (`<slug>[bot]`), to tell its own check runs from CI."""
    if ctx.author is None:
        return None
    login, _email = await ctx.author()
    return login.removesuffix("[bot]")


def _handed_over(state: dict[str, Any], tip: str) -> StepResult:
    state.update(ci="handed_over", foreign_sha=tip)
    return StepResult(
        output=state, summary=f"stopped: someone else pushed {tip[:7]} to the branch, so nofx leaves CI to them"
    )


def _judge_last_repair(state: dict[str, Any], verdict: str) -> None:
    """CI's verdict on a pushed repair, once it has one: the status comment says whether the repair held."""
    last = state["repairs"][-1] if state["repairs"] else None
    if last and last.get("head_sha") == state["head_sha"] and verdict in ("passed", "failed"):
        last["passed"] = verdict == "passed"


def _wait(state: dict[str, Any], summary: str) -> StepResult:
    state["ci"] = "waiting"
    return StepResult(output=state, summary=summary, wait=True)


def _shown(check: checks.Check) -> dict[str, Any]:
    return {"name": check.name[:200], "url": check.url, "conclusion": check.conclusion, "kind": check.kind}
