"""Commit the run's changes as the App's bot, push the branch, and open (or update) its pull request."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from gidgethub import BadRequest

from bot.runs.contract import (
    PULL_REQUEST_ARTIFACT,
    GitError,
    Step,
    StepContext,
    StepFailed,
    StepResult,
    written_by,
)

TOOLS = ("git_pr",)
PR_MARKER = "<!-- nofx:pr -->"


async def run(ctx: StepContext) -> StepResult:
    if ctx.workspace is None or ctx.gh is None or ctx.git_token is None or ctx.author is None:
        raise StepFailed("opening a pull request needs the run's workspace and the GitHub App")
    run_ = ctx.run
    owner, repo = run_.repository.split("/", 1)
    author_name, author_email = await ctx.author()
    try:
        commit = await ctx.workspace.commit_all(
            _commit_message(ctx), author_name=author_name, author_email=author_email, paths=_written(ctx)
        )
        if commit is None and await ctx.workspace.head_sha() == ctx.workspace.start_sha:
            raise StepFailed("there is nothing to commit: the run changed no file")
        await ctx.workspace.push(await ctx.git_token())
    except GitError as exc:
        raise StepFailed(f"saving the changes failed: {exc}") from None
    head_sha = await ctx.workspace.head_sha()
    commits = int((await ctx.workspace.git("rev-list", "--count", f"{ctx.workspace.base_sha}..HEAD")).strip() or 0)
    pull = await _open_or_update(ctx, owner, repo)
    if ctx.artifacts is not None:  # what nofx published, kept with the run (and indexed for search)
        text = f"# {pull.get('title') or _title(ctx)}\n\n{pull.get('body') or ''}\n"
        ctx.artifacts.put(PULL_REQUEST_ARTIFACT, text.encode())
    await _request_review(ctx, owner, repo, pull["number"])
    ctx.emit("pull_request.ready", {"number": pull["number"], "head_sha": head_sha})
    return StepResult(
        output={
            "pull_request_url": pull["html_url"],
            "pull_request_number": pull["number"],
            "branch": ctx.workspace.branch,
            "head_sha": head_sha,
            "commit_count": commits,
        },
        summary=f"pull request #{pull['number']}",
    )


async def _open_or_update(ctx: StepContext, owner: str, repo: str) -> dict[str, Any]:
    """Look before creating: a PR for the branch may exist from an earlier run or a retried step."""
    assert ctx.gh is not None and ctx.workspace is not None
    branch = ctx.workspace.branch
    existing = await ctx.gh.getitem(
        "/repos/{owner}/{repo}/pulls{?head,state}",
        url_vars={"owner": owner, "repo": repo, "head": f"{owner}:{branch}", "state": "open"},
    )
    body = _body(ctx)
    if existing:
        number = existing[0]["number"]
        updated: dict[str, Any] = await ctx.gh.patch(
            "/repos/{owner}/{repo}/pulls/{pull_number}",
            url_vars={"owner": owner, "repo": repo, "pull_number": number},
            data={"body": body},
        )
        return updated
    created: dict[str, Any] = await ctx.gh.post(
        "/repos/{owner}/{repo}/pulls",
        url_vars={"owner": owner, "repo": repo},
        data={
            "title": _title(ctx),
            "head": branch,
            "base": ctx.workspace.base_ref,
            "body": body,
            "draft": ctx.config.pr.draft,
            "maintainer_can_modify": True,
        },
    )
    return created


async def _request_review(ctx: StepContext, owner: str, repo: str, number: int) -> None:
    """Ask the requester to review; GitHub refuses some people (not a collaborator): that is not a failure."""
    assert ctx.gh is not None
    try:
        await ctx.gh.post(
            "/repos/{owner}/{repo}/pulls/{pull_number}/requested_reviewers",
            url_vars={"owner": owner, "repo": repo, "pull_number": number},
            data={"reviewers": [ctx.run.requester]},
        )
    except BadRequest as exc:
        ctx.log.info("could not request a review from %s: %s", ctx.run.requester, exc)


def _written(ctx: StepContext) -> list[str]:
    """Only what the run's write steps wrote is committed, never what the gates left behind."""
    written = {path for step in ctx.earlier.values() for path in written_by(step)}
    return sorted(written | set(ctx.inherited_files))


def _title(ctx: StepContext) -> str:
    goal = str(ctx.run.plan.get("goal") or ctx.run.request).splitlines()[0].strip()
    return (goal[:1].upper() + goal[1:])[:200] or f"Changes for #{ctx.run.thread_number}"


def _commit_message(ctx: StepContext) -> str:
    """Wording follows git_mode; the requester is credited as co-author either way."""
    run_ = ctx.run
    mode = ctx.config.git_mode
    if mode == "hidden":
        subject = f"Save changes requested in #{run_.thread_number}"
    elif mode == "basic":
        subject = f"{_title(ctx)} (#{run_.thread_number})"
    else:
        subject = _title(ctx)
    lines = [subject[:72], ""]
    if mode == "advanced":
        lines += [f"Run {run_.id} for #{run_.thread_number}, requested by @{run_.requester}.", ""]
        lines += [f"- {s.name} ({s.tool})" for s in _plan_steps(ctx)]
        lines.append("")
    lines.append(f"Co-authored-by: {run_.requester} <{_noreply(ctx, run_.requester, run_.requester_id)}>")
    return "\n".join(lines) + "\n"


def _body(ctx: StepContext) -> str:
    run_ = ctx.run
    lines: list[str] = []
    if run_.thread_kind == "issue":
        lines += [f"Closes #{run_.thread_number}", ""]
    summary = next((s.output.get("change_summary") for s in ctx.earlier.values() if s.tool == "codegen"), None)
    if summary:
        lines += [str(summary), ""]
    lines += [f"Requested by @{run_.requester} in #{run_.thread_number}.", "", "### Steps", ""]
    for step in _plan_steps(ctx):
        done = ctx.earlier.get(step.name)
        result = (done.output.get("summary") or "done") if done else ("this step" if step.name == ctx.step.name else "")
        mark = "x" if done or step.name == ctx.step.name else " "
        lines.append(f"- [{mark}] **{step.name}** (`{step.tool}`){': ' + str(result) if result else ''}")
    lines += ["", f"_Run `{run_.id}`._", PR_MARKER]
    return "\n".join(lines)


def _plan_steps(ctx: StepContext) -> list[Step]:
    ordered = sorted(ctx.earlier.values(), key=lambda s: s.position)
    return [*ordered, ctx.step] if ctx.step.name not in ctx.earlier else ordered


def _noreply(ctx: StepContext, login: str, user_id: int | None) -> str:
    host = urlparse(ctx.run.thread_url or "https://github.com").hostname or "github.com"
    local = f"{user_id}+{login}" if user_id else login
    return f"{local}@users.noreply.{host}"
