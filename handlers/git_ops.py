"""`/nofx git <op>` in advanced git mode: branch off, rebase onto the base, or revert the run's commits."""

from __future__ import annotations

import re

from bot.runs.contract import GitError, StepContext, StepFailed, StepResult

TOOLS = ("git_ops",)
OPS = ("branch", "rebase", "revert")
_BRANCH = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,100}$")


async def run(ctx: StepContext) -> StepResult:
    if ctx.workspace is None or ctx.git_token is None or ctx.author is None:
        raise StepFailed("git operations need the run's workspace and the GitHub App")
    op = str(ctx.inputs.get("op", ""))
    args = [str(a) for a in ctx.inputs.get("args", [])]
    try:
        if op == "branch":
            return await _branch(ctx, args)
        if op == "rebase":
            return await _rebase(ctx)
        if op == "revert":
            return await _revert(ctx)
    except GitError as exc:
        raise StepFailed(f"`git {op}` failed: {exc}") from None
    raise StepFailed(f"unknown git operation {op!r}; allowed: {', '.join(OPS)}")


async def _branch(ctx: StepContext, args: list[str]) -> StepResult:
    assert ctx.workspace is not None and ctx.git_token is not None
    if len(args) != 1 or not _BRANCH.match(args[0]) or ".." in args[0] or args[0].endswith((".lock", "/")):
        raise StepFailed("usage: `git branch <new-branch-name>` (letters, digits, '.', '_', '-', '/')")
    await ctx.workspace.push(await ctx.git_token(), branch=args[0])
    return StepResult(
        output={"branch": ctx.workspace.branch, "new_branch": args[0]}, summary=f"branch `{args[0]}` created"
    )


async def _rebase(ctx: StepContext) -> StepResult:
    assert ctx.workspace is not None and ctx.git_token is not None and ctx.author is not None
    name, email = await ctx.author()
    identity = ("-c", f"user.name={name}", "-c", f"user.email={email}")
    try:
        await ctx.workspace.git(*identity, "rebase", ctx.workspace.base_sha)
    except GitError:
        conflicts = (await ctx.workspace.git("diff", "--name-only", "--diff-filter=U")).split()
        await ctx.workspace.git("rebase", "--abort", check=False)
        raise StepFailed("the rebase stops on conflicts in: " + ", ".join(conflicts or ["(unknown files)"])) from None
    await ctx.workspace.push(await ctx.git_token(), force=True)
    head = await ctx.workspace.head_sha()
    return StepResult(
        output={"branch": ctx.workspace.branch, "head_sha": head}, summary=f"rebased onto {ctx.workspace.base_ref}"
    )


async def _revert(ctx: StepContext) -> StepResult:
    assert ctx.workspace is not None and ctx.git_token is not None and ctx.author is not None
    base = (await ctx.workspace.git("merge-base", ctx.workspace.base_sha, "HEAD")).strip()
    if base == await ctx.workspace.head_sha():
        raise StepFailed("there is nothing to revert: the branch has no commits of its own")
    await ctx.workspace.git("revert", "--no-commit", f"{base}..HEAD")
    name, email = await ctx.author()
    sha = await ctx.workspace.commit_all(
        f"Revert the changes of #{ctx.run.thread_number}\n", author_name=name, author_email=email
    )
    await ctx.workspace.push(await ctx.git_token())
    return StepResult(output={"branch": ctx.workspace.branch, "head_sha": sha}, summary="the run's commits reverted")
