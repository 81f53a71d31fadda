"""What each `/nofx` verb does once the sender may: plan, start a run, approve, cancel, retry, review, git, forget."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from gidgethub import sansio
from gidgethub.abc import GitHubAPI

from bot.events import commands, pull_requests
from bot.events.answers import reply
from bot.events.commands import Command, Verb
from bot.events.context import EventContext
from bot.github import repos
from bot.github.threads import Thread
from bot.models import Run, RunStatus, StepStatus
from bot.plan_templates import DEFAULT_TEMPLATE
from bot.plans import Plan, PlanError
from bot.render.replies import (
    help_comment,
    nothing_to_do,
    plan_comment,
    plan_refused,
)
from bot.render.status_comment import run_status_summary
from bot.repo_config import RepoConfig, describe
from bot.runs import memory, planner, policy, queries, records, resume
from bot.runs.llm_planner import planner_for
from bot.runs.transitions import TransitionError
from bot.store import Store
from bot.workspace.worktrees import branch_name

log = logging.getLogger(__name__)

THREAD_LOCK_S = 30
GIT_OPS = ("branch", "rebase", "revert")
_GIT_ONLY_ADVANCED = (
    "`git` commands are available when the repository's `git_mode` is `advanced` (in .github/nofx.yml)."
)


@dataclass(frozen=True)
class Source:
    """What triggered: where to put the 👀 reaction, and how the run records its trigger."""

    trigger: str  # comment | issue_body | review_comment | label | check_run
    reaction_path: str
    reaction_vars: dict[str, Any]
    comment_id: int | None = None


@dataclass(frozen=True)
class Turn:
    """One command being carried out: where, by whom, under which repository config, how it arrived."""

    ctx: EventContext
    event: sansio.Event
    gh: GitHubAPI
    thread: Thread
    config: RepoConfig
    source: Source
    sender: str
    target: Run | None = None  # the run a check-run button names; commands in comments act on the thread's

    @property
    def store(self) -> Store:
        return self.ctx.store

    @property
    def prefix(self) -> str:
        return self.config.trigger.command

    async def reply(self, body: str) -> None:
        await reply(self.gh, self.thread, body)

    async def say(self, message: str) -> None:
        await self.reply(nothing_to_do(message))

    def latest_run(self) -> Run | None:
        if self.target is not None:
            return queries.get_run(self.store, self.target.id)
        return queries.latest_run_on_thread(self.store, self.thread.full_name, self.thread.number)

    def active_run(self) -> Run | None:
        if self.target is not None:
            run = queries.get_run(self.store, self.target.id)
            return run if run is not None and run.status not in records.TERMINAL_RUN else None
        return queries.active_run_on_thread(self.store, self.thread.full_name, self.thread.number)


async def carry_out(turn: Turn, command: Command) -> None:
    ctx, thread, config = turn.ctx, turn.thread, turn.config
    command = commands.with_template(command, planner.templates_of(config))
    match command.verb:
        case Verb.help:
            await turn.reply(_help(turn))
        case Verb.plan:
            await _show_plan(turn, command.argument, command.template)
        case Verb.change:
            await _start_run(turn, command.argument, command.template)
        case Verb.approve | Verb.reject:
            await _decide(turn, command)
        case Verb.cancel:
            run = turn.active_run()
            if run is None:
                await turn.say("There is no active run on this thread to cancel.")
                return
            ctx.after(records.cancel(ctx.store, run.id, by=turn.sender), run.id)
        case Verb.retry if command.retry_from is not None:
            await _resume_from_checkpoint(turn, command.retry_from)
        case Verb.retry:
            await _retry(turn, command)
        case Verb.status:
            run = turn.latest_run()
            if run is None:
                await turn.say("nofx has not run anything on this thread yet.")
                return
            steps = queries.steps_of(ctx.store, run.id)
            await turn.reply(run_status_summary(run, steps, config.git_mode, ctx.settings.run_url(run.id)))
        case Verb.review:
            if thread.kind != "pull_request":
                await turn.say("`review` works on pull requests.")
                return
            await review_pull_request(
                ctx, turn.gh, thread, config, requested_by=turn.sender, trigger=turn.source.trigger
            )
        case Verb.git:
            await _start_git_operation(turn, command.argument)
        case Verb.forget:
            removed = memory.forget(ctx.store, memory.ThreadKey(thread.full_name, thread.number, thread.repository_id))
            await turn.say(f"nofx forgot what it remembered of this thread ({removed} entries).")


def _help(turn: Turn) -> str:
    templates = {name: t.description for name, t in planner.templates_of(turn.config).items()}
    return help_comment(
        turn.prefix, git_mode=turn.config.git_mode, templates=templates, run_label=turn.config.trigger.run_label
    )


async def _show_plan(turn: Turn, request: str, template: str | None = None) -> None:
    if not request.strip():
        await turn.say(f"Say what to plan: `{turn.prefix} plan add a cart`.")
        return
    plan = await _plan(turn, request, template)
    if plan is not None:
        await turn.reply(plan_comment(plan, request=request, git_mode=turn.config.git_mode, prefix=turn.prefix))


async def _start_run(turn: Turn, request: str, template: str | None = None) -> None:
    if not request.strip():
        await turn.reply(_help(turn))
        return
    try:
        where = await _where_to_work(turn.ctx, turn.gh, turn.thread, request)
    except _CannotWork as exc:
        await turn.say(str(exc))
        return
    plan = await _plan(turn, request, template, previous=_context_for(turn.ctx, turn.thread, where.follows))
    if plan is not None:
        _create_and_start(turn, request, plan, where)


async def _plan(turn: Turn, request: str, template: str | None, *, previous: str | None = None) -> Plan | None:
    """The plan for `request` (`plan` shows it, a run follows it); a refused plan is answered on the thread: None."""
    try:
        return await planner.build(
            request,
            turn.config,
            available_tools=turn.ctx.tools,
            llm_planner=_llm_planner(turn),
            previous=previous,
            template_name=template or DEFAULT_TEMPLATE,
        )
    except PlanError as exc:
        await turn.reply(plan_refused(str(exc), prefix=turn.prefix))
        return None


async def _start_git_operation(turn: Turn, argument: str) -> None:
    """`/nofx git <op>` (advanced git mode) as a one-step run on the branch of the thread's latest run."""
    if turn.config.git_mode != "advanced":
        await turn.say(_GIT_ONLY_ADVANCED)
        return
    op, *args = argument.split() or [""]
    if op not in GIT_OPS:
        await turn.say(f"Unknown git operation. Use `{turn.prefix} git branch <name>`, `git rebase` or `git revert`.")
        return
    earlier = turn.latest_run()
    if earlier is None or not earlier.branch:
        await turn.say("nofx has no branch on this thread yet.")
        return
    plan_data = {
        "goal": f"git {argument}",
        "steps": [{"name": "git", "tool": "git_ops", "inputs": {"op": op, "args": args}}],
    }
    try:
        plan = policy.enforce(plan_data, turn.config, available_tools=turn.ctx.tools)
    except PlanError as exc:
        await turn.reply(plan_refused(str(exc), prefix=turn.prefix))
        return
    base = earlier.default_branch or turn.thread.default_branch
    _create_and_start(turn, f"git {argument}", plan, _Where(earlier.branch, base, earlier.head_sha or "", earlier))


def _create_and_start(turn: Turn, request: str, plan: Plan, where: _Where) -> None:
    ctx, thread, source = turn.ctx, turn.thread, turn.source
    spec = records.RunRequest(
        installation_id=thread.installation_id,
        repository=thread.full_name,
        repository_id=thread.repository_id,
        thread_number=thread.number,
        thread_kind=thread.kind,
        request=request,
        requester=turn.sender,
        requester_id=turn.event.data["sender"].get("id"),
        trigger=source.trigger,
        trigger_comment_id=source.comment_id,
        trigger_comment_kind=source.trigger if source.comment_id else None,
        delivery_id=turn.event.delivery_id,
        clone_url=thread.clone_url,
        thread_url=thread.html_url,
        default_branch=where.base,
        head_sha=where.head_sha,
        branch=where.branch,
        follows_run_id=where.follows.id if where.follows else None,
    )
    # One active run per thread: creation and start are serialised per thread across workers.
    with ctx.queue.thread_lock(f"{thread.full_name}#{thread.number}", THREAD_LOCK_S):
        run = records.create(ctx.store, spec, plan, describe(turn.config))
        progress = records.start(ctx.store, run.id)
    ctx.memory.remember(ctx.store, run, "request", f"@{turn.sender} asked: {request}")
    ctx.memory.remember(ctx.store, run, "plan", f"{plan.goal}: " + ", ".join(s.name for s in plan.steps))
    log.info("run %s created (%s)", run.id, progress.run_status.value if progress.run_status else "?")
    ctx.after(progress, run.id)


async def _resume_from_checkpoint(turn: Turn, checkpoint: str) -> None:
    """`/nofx retry --from <n>`: a new run from checkpoint n of the thread's latest run."""
    run = turn.latest_run()
    number = checkpoint.lstrip("#").removeprefix("cp")
    if run is None or not number.isdigit():
        await turn.say("Say which checkpoint of the latest run: `retry --from 2`.")
        return
    try:
        resume.resume(
            turn.store,
            turn.ctx.queue,
            run.id,
            int(number),
            turn.sender,
            trigger="comment",
            delivery_id=turn.event.delivery_id,
            config=turn.config,
        )
    except resume.ResumeError as exc:
        await turn.say(str(exc))


async def _decide(turn: Turn, command: Command) -> None:
    run = turn.active_run()
    waiting = [
        s
        for s in (queries.steps_of(turn.store, run.id) if run and run.status == RunStatus.waiting else [])
        if s.status == StepStatus.waiting
        and s.tool == "manual:approval"  # a step waiting for CI is not a person's to decide
        and (command.verb == Verb.reject or not command.argument or s.name == command.argument)
    ]
    if run is None or not waiting:
        ci = run is not None and any(
            s.status == StepStatus.waiting and s.tool == "gate:ci" for s in queries.steps_of(turn.store, run.id)
        )
        await turn.say(
            "nofx is waiting for CI, not for an approval."
            if ci
            else "There is no run waiting for approval on this thread."
        )
        return
    approved = command.verb == Verb.approve
    reason = command.argument if not approved else ""
    progress = records.decide(turn.store, waiting[0].id, approved=approved, by=turn.sender, reason=reason)
    turn.ctx.after(progress, run.id)


async def _retry(turn: Turn, command: Command) -> None:
    run = turn.latest_run()
    if run is None or run.status != RunStatus.failed:
        await turn.say("There is no failed run on this thread to retry.")
        return
    try:
        progress = records.retry(turn.store, run.id, command.argument or None, by=turn.sender)
    except TransitionError as exc:
        await turn.say(str(exc))
        return
    turn.ctx.after(progress, run.id)


async def review_pull_request(
    ctx: EventContext,
    gh: GitHubAPI,
    thread: Thread,
    config: RepoConfig,
    *,
    requested_by: str,
    trigger: str = "comment",
) -> None:
    """Queue a full LLM review of the pull request's current head; its review and check run follow."""
    if await pull_requests.request_review(ctx, gh, thread, config, trigger=trigger, requested_by=requested_by) is None:
        await reply(gh, thread, nothing_to_do("This pull request is not open, so nofx did not review it."))


# --- helpers -------------------------------------------------------------------------------------------


def _llm_planner(turn: Turn) -> planner.LLMPlanner | None:
    ctx, thread = turn.ctx, turn.thread
    if ctx.llm is None:
        return None
    similar = (
        ctx.similar_runs(thread.installation_id, thread.full_name, thread.repository_id) if ctx.similar_runs else None
    )
    return planner_for(ctx.llm, turn.config, ctx.tools, similar)


class _CannotWork(Exception):
    """nofx cannot work on this thread (a fork's pull request); the message says why."""


@dataclass(frozen=True)
class _Where:
    """Where a run's commits go: its branch, the base it starts from, and the run it continues, if any."""

    branch: str
    base: str
    head_sha: str
    follows: Run | None = None


async def _where_to_work(ctx: EventContext, gh: GitHubAPI, thread: Thread, request: str) -> _Where:
    """An issue gets a new `nofx/<n>-<slug>` branch; a comment on nofx's own pull request continues its branch."""
    if thread.kind == "issue":
        head = await repos.branch_head(gh, thread, thread.default_branch)
        return _Where(branch_name(thread.number, request), thread.default_branch, head)
    pull = await repos.pull_request(gh, thread)
    head_repo = ((pull["head"].get("repo") or {}).get("full_name") or "").lower()
    if head_repo != thread.full_name.lower():
        raise _CannotWork("nofx cannot push to a pull request from a fork; ask on an issue instead.")
    head_ref, head_sha = pull["head"]["ref"], pull["head"]["sha"]
    earlier = queries.latest_run_on_branch(ctx.store, thread.full_name, head_ref)
    if earlier is not None:
        return _Where(head_ref, pull["base"]["ref"], head_sha, follows=earlier)
    return _Where(branch_name(thread.number, request), head_ref, head_sha)


def _context_for(ctx: EventContext, thread: Thread, follows: Run | None) -> str | None:
    """What the model should know of the thread: its memory, and the run a follow-up continues."""
    remembered = ctx.memory.recall(ctx.store, memory.ThreadKey(thread.full_name, thread.number, thread.repository_id))
    parts = [*(["Remembered from this thread:", *remembered] if remembered else []), _previous_outcome(ctx, follows)]
    return "\n".join(part for part in parts if part) or None


def _previous_outcome(ctx: EventContext, run: Run | None) -> str | None:
    """What an earlier run on the same branch asked for and did, as context for the follow-up."""
    if run is None:
        return None
    steps = queries.steps_of(ctx.store, run.id)
    lines = [f"Request: {run.request}", f"Outcome: {run.status.value}" + (f" ({run.error})" if run.error else "")]
    lines += [f"- {s.name} ({s.tool}): {s.status.value} {s.output.get('summary', '')}".rstrip() for s in steps]
    return "\n".join(lines)
