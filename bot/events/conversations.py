"""From `/nofx` commands, labels and check-run buttons to runs: who may, what they asked, what happens.

One small router function per trigger; they share `_handle_command`, which checks the sender,
reads the repository's config, acknowledges with 👀 and carries the command out.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from gidgethub import routing, sansio
from gidgethub.abc import GitHubAPI

from bot.events import commands, pull_requests
from bot.events.commands import Command, Verb
from bot.events.context import EventContext
from bot.github import identity, repos
from bot.github.permissions import is_automation, permission_of
from bot.github.threads import Thread
from bot.models import ReviewPass, Run, RunStatus, StepStatus
from bot.plan_templates import DEFAULT_TEMPLATE
from bot.plans import Plan, PlanError
from bot.render.replies import (
    config_error,
    help_comment,
    not_allowed,
    nothing_to_do,
    permission_refused,
    plan_comment,
    plan_refused,
)
from bot.render.status_comment import run_status_summary
from bot.repo_config import ConfigError, RepoConfig, describe, permission_reaches
from bot.runs import memory, planner, policy, resume
from bot.runs import records as runs
from bot.runs.llm_planner import planner_for
from bot.store import Store
from bot.workspace.worktrees import branch_name

router = routing.Router()
log = logging.getLogger(__name__)
# A line that could hold a command under any configured prefix: cheap to test before reading the config.
_MAYBE_COMMAND = re.compile(r"^ {0,3}/\S", re.MULTILINE)
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


@router.register("issue_comment", action="created")
async def start_run_from_comment(event: sansio.Event, ctx: EventContext) -> None:
    """A `/nofx` command in a new issue or pull request conversation comment (edits never re-trigger)."""
    await _handle_comment(ctx, event, "comment", "/repos/{owner}/{repo}/issues/comments/{comment_id}/reactions")


@router.register("pull_request_review_comment", action="created")
async def start_run_from_review_comment(event: sansio.Event, ctx: EventContext) -> None:
    """A `/nofx` command in a line comment of a pull request review."""
    await _handle_comment(ctx, event, "review_comment", "/repos/{owner}/{repo}/pulls/comments/{comment_id}/reactions")


@router.register("issues", action="opened")
async def start_run_from_issue_body(event: sansio.Event, ctx: EventContext) -> None:
    """A new issue whose body holds a `/nofx` command."""
    thread = Thread.from_payload(event.data)
    issue = event.data["issue"]
    await _handle_command(ctx, event, thread, issue.get("body"), issue, _issue_source(thread, "issue_body"))


@router.register("issues", action="labeled")
async def start_run_from_label(event: sansio.Event, ctx: EventContext) -> None:
    """The run label on an issue: its title and body are the request."""
    issue = event.data["issue"]
    request = "\n\n".join(part for part in (issue.get("title"), issue.get("body")) if part)
    change = Command(verb=Verb.change, argument=request[: commands.MAX_ARGUMENT])

    def run_label(label: str, config: RepoConfig) -> Command | None:
        if label == config.trigger.run_label:
            return change
        name = label.removeprefix(config.trigger.run_label + ":")
        return replace(change, template=name) if name != label and name in planner.templates_of(config) else None

    await _handle_label(ctx, event, run_label)


@router.register("pull_request", action="labeled")
async def request_review_from_label(event: sansio.Event, ctx: EventContext) -> None:
    """The review label on a pull request asks for a review (with the same permission check as a command)."""
    review = Command(verb=Verb.review, argument="")
    await _handle_label(ctx, event, lambda label, config: review if label == config.trigger.review_label else None)


@router.register("check_run", action="requested_action")
async def decide_from_check_run_button(event: sansio.Event, ctx: EventContext) -> None:
    """Approve / Reject / Cancel buttons act on the run their check run names (its external_id), with the
    repository's current config and the presser's current permission, like a command."""
    run = _run_of_check(ctx, event.data)
    if run is None:
        return
    identifier = (event.data.get("requested_action") or {}).get("identifier")
    verb = {"approve": Verb.approve, "reject": Verb.reject, "cancel": Verb.cancel}.get(identifier or "")
    if verb is None:
        return
    await _command_on_run(ctx, event, run, Command(verb=verb, argument=""))


@router.register("check_run", action="rerequested")
async def retry_from_check_run(event: sansio.Event, ctx: EventContext) -> None:
    """ "Re-run" on the run's check run re-runs its failed steps; on a review's check run, reviews again."""
    review = pull_requests.pass_of_check(ctx.store, event.data.get("check_run") or {}, identity.current(ctx.store))
    if review is not None:
        await _review_again(ctx, event, review)
        return
    run = _run_of_check(ctx, event.data)
    if run is None:
        return
    await _command_on_run(ctx, event, run, Command(verb=Verb.retry, argument=""))


async def _command_on_run(ctx: EventContext, event: sansio.Event, run: Run, command: Command) -> None:
    """A check-run button: the command, aimed at the button's own run, under the config as it is now."""
    thread = _thread_of_run(run)
    gh = _gh(ctx, thread)
    config = await _config_or_report(gh, thread, ctx, mentioned=True)
    if config is None:
        return
    source = _issue_source(thread, "check_run")
    await _authorised_command(ctx, event, gh, thread, config, command, source, target=run)


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
        await _reply(gh, thread, nothing_to_do("This pull request is not open, so nofx did not review it."))


async def _review_again(ctx: EventContext, event: sansio.Event, review: ReviewPass) -> None:
    """Re-run on a "nofx review" check run: a new full pass, with the same permission check as `/nofx review`."""
    repository = event.data["repository"]
    owner, repo = review.repository.split("/", 1)
    thread = Thread(
        installation_id=review.installation_id,
        owner=owner,
        repo=repo,
        number=review.pull_number,
        kind="pull_request",
        default_branch=repository.get("default_branch") or "main",
        clone_url=repository.get("clone_url"),
        html_url=None,
    )
    gh = _gh(ctx, thread)
    config = await _config_or_report(gh, thread, ctx, mentioned=True)
    if config is None:
        return
    command = Command(verb=Verb.review, argument="")
    await _authorised_command(ctx, event, gh, thread, config, command, _issue_source(thread, "check_run"))


# --- the shared path of every command ---------------------------------------------------------------


async def _handle_comment(ctx: EventContext, event: sansio.Event, trigger: str, reaction_path: str) -> None:
    thread = Thread.from_payload(event.data)
    comment = event.data["comment"]
    reaction_vars = {"owner": thread.owner, "repo": thread.repo, "comment_id": comment["id"]}
    source = Source(trigger, reaction_path, reaction_vars, comment_id=comment["id"])
    await _handle_command(ctx, event, thread, comment.get("body"), comment, source)


async def _handle_command(
    ctx: EventContext,
    event: sansio.Event,
    thread: Thread,
    text: str | None,
    item: dict[str, Any],
    source: Source,
) -> None:
    if not text or not _MAYBE_COMMAND.search(text):
        return
    if is_automation(event.data["sender"], identity.current(ctx.store), item):
        return
    gh = _gh(ctx, thread)
    config = await _config_or_report(gh, thread, ctx, mentioned=commands.parse(text) is not None)
    if config is None:
        return
    command = commands.parse(text, prefix=config.trigger.command)
    if command is None:
        return
    await _react(gh, source)
    await _authorised_command(ctx, event, gh, thread, config, command, source)


async def _handle_label(
    ctx: EventContext, event: sansio.Event, command_for: Callable[[str, RepoConfig], Command | None]
) -> None:
    """A label acts like a command when `command_for` finds one for it under the repository's config."""
    label = (event.data.get("label") or {}).get("name")
    if not label or is_automation(event.data["sender"], identity.current(ctx.store)):
        return
    thread = Thread.from_payload(event.data)
    gh = _gh(ctx, thread)
    config = await _config_or_report(gh, thread, ctx, mentioned=False)
    command = command_for(label, config) if config is not None else None
    if config is None or command is None:
        return
    source = _issue_source(thread, "label")
    await _react(gh, source)
    await _authorised_command(ctx, event, gh, thread, config, command, source)


@dataclass(frozen=True)
class _Turn:
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
        await _reply(self.gh, self.thread, body)

    async def say(self, message: str) -> None:
        await self.reply(nothing_to_do(message))

    def latest_run(self) -> Run | None:
        if self.target is not None:
            return runs.get_run(self.store, self.target.id)
        return runs.latest_run_on_thread(self.store, self.thread.full_name, self.thread.number)

    def active_run(self) -> Run | None:
        if self.target is not None:
            run = runs.get_run(self.store, self.target.id)
            return run if run is not None and run.status not in runs.TERMINAL_RUN else None
        return runs.active_run_on_thread(self.store, self.thread.full_name, self.thread.number)


async def _authorised_command(
    ctx: EventContext,
    event: sansio.Event,
    gh: GitHubAPI,
    thread: Thread,
    config: RepoConfig,
    command: Command,
    source: Source,
    *,
    target: Run | None = None,
) -> None:
    sender = event.data["sender"]["login"]
    permission = await permission_of(gh, thread.owner, thread.repo, sender)
    if not permission_reaches(permission, config.trigger.min_permission):
        log.info("refused %s from %s (%s)", command.verb.value, sender, permission)
        if command.verb in (Verb.approve, Verb.reject):
            await _reply(gh, thread, not_allowed(sender, command.verb.value))
        else:
            await _reply(gh, thread, permission_refused(sender, config.trigger.min_permission))
        return
    await _carry_out(_Turn(ctx, event, gh, thread, config, source, sender, target), command)


async def _carry_out(turn: _Turn, command: Command) -> None:
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
            ctx.engine.after(runs.cancel(ctx.store, run.id, by=turn.sender), run.id)
        case Verb.retry if command.retry_from is not None:
            await _resume_from_checkpoint(turn, command.retry_from)
        case Verb.retry:
            await _retry(turn, command)
        case Verb.status:
            run = turn.latest_run()
            if run is None:
                await turn.say("nofx has not run anything on this thread yet.")
                return
            steps = runs.steps_of(ctx.store, run.id)
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
            removed = memory.forget(ctx.store, memory.ThreadKey(thread.full_name, thread.number))
            await turn.say(f"nofx forgot what it remembered of this thread ({removed} entries).")


def _help(turn: _Turn) -> str:
    templates = {name: t.description for name, t in planner.templates_of(turn.config).items()}
    return help_comment(
        turn.prefix, git_mode=turn.config.git_mode, templates=templates, run_label=turn.config.trigger.run_label
    )


async def _show_plan(turn: _Turn, request: str, template: str | None = None) -> None:
    if not request.strip():
        await turn.say(f"Say what to plan: `{turn.prefix} plan add a cart`.")
        return
    try:
        plan = await planner.build(
            request,
            turn.config,
            available_tools=turn.ctx.engine.handlers,
            llm_planner=_llm_planner(turn.ctx, turn.config),
            template_name=template or DEFAULT_TEMPLATE,
        )
    except PlanError as exc:
        await turn.reply(plan_refused(str(exc), prefix=turn.prefix))
        return
    await turn.reply(plan_comment(plan, request=request, git_mode=turn.config.git_mode, prefix=turn.prefix))


async def _start_run(turn: _Turn, request: str, template: str | None = None) -> None:
    if not request.strip():
        await turn.reply(_help(turn))
        return
    try:
        where = await _where_to_work(turn.ctx, turn.gh, turn.thread, request)
    except _CannotWork as exc:
        await turn.say(str(exc))
        return
    try:
        plan = await planner.build(
            request,
            turn.config,
            available_tools=turn.ctx.engine.handlers,
            llm_planner=_llm_planner(turn.ctx, turn.config),
            previous=_context_for(turn.ctx, turn.thread, where.follows),
            template_name=template or DEFAULT_TEMPLATE,
        )
    except PlanError as exc:
        await turn.reply(plan_refused(str(exc), prefix=turn.prefix))
        return
    _create_and_start(turn, request, plan, where)


async def _start_git_operation(turn: _Turn, argument: str) -> None:
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
        plan = policy.enforce(plan_data, turn.config, available_tools=turn.ctx.engine.handlers)
    except PlanError as exc:
        await turn.reply(plan_refused(str(exc), prefix=turn.prefix))
        return
    base = earlier.default_branch or turn.thread.default_branch
    _create_and_start(turn, f"git {argument}", plan, _Where(earlier.branch, base, earlier.head_sha or "", earlier))


def _create_and_start(turn: _Turn, request: str, plan: Plan, where: _Where) -> None:
    ctx, thread, source = turn.ctx, turn.thread, turn.source
    spec = runs.RunRequest(
        installation_id=thread.installation_id,
        repository=thread.full_name,
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
    with ctx.queue.redis.lock(f"nofx:thread:{thread.full_name}#{thread.number}", timeout=THREAD_LOCK_S):
        run = runs.create(ctx.store, spec, plan, describe(turn.config))
        progress = runs.start(ctx.store, run.id)
    ctx.engine.memory.remember(ctx.store, run, "request", f"@{turn.sender} asked: {request}")
    ctx.engine.memory.remember(ctx.store, run, "plan", f"{plan.goal}: " + ", ".join(s.name for s in plan.steps))
    log.info("run %s created (%s)", run.id, progress.run_status.value if progress.run_status else "?")
    ctx.engine.after(progress, run.id)


async def _resume_from_checkpoint(turn: _Turn, checkpoint: str) -> None:
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


async def _decide(turn: _Turn, command: Command) -> None:
    run = turn.active_run()
    waiting = [
        s
        for s in (runs.steps_of(turn.store, run.id) if run and run.status == RunStatus.waiting else [])
        if s.status == StepStatus.waiting
        and (command.verb == Verb.reject or not command.argument or s.name == command.argument)
    ]
    if run is None or not waiting:
        await turn.say("There is no run waiting for approval on this thread.")
        return
    approved = command.verb == Verb.approve
    reason = command.argument if not approved else ""
    progress = runs.decide(turn.store, waiting[0].id, approved=approved, by=turn.sender, reason=reason)
    turn.ctx.engine.after(progress, run.id)


async def _retry(turn: _Turn, command: Command) -> None:
    run = turn.latest_run()
    if run is None or run.status != RunStatus.failed:
        await turn.say("There is no failed run on this thread to retry.")
        return
    try:
        progress = runs.retry(turn.store, run.id, command.argument or None, by=turn.sender)
    except runs.TransitionError as exc:
        await turn.say(str(exc))
        return
    turn.ctx.engine.after(progress, run.id)


# --- helpers -------------------------------------------------------------------------------------------


def _llm_planner(ctx: EventContext, config: RepoConfig) -> planner.LLMPlanner | None:
    llm = ctx.engine.llm
    return planner_for(llm, config, ctx.engine.handlers) if llm is not None else None


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
    earlier = runs.latest_run_on_branch(ctx.store, thread.full_name, head_ref)
    if earlier is not None:
        return _Where(head_ref, pull["base"]["ref"], head_sha, follows=earlier)
    return _Where(branch_name(thread.number, request), head_ref, head_sha)


def _context_for(ctx: EventContext, thread: Thread, follows: Run | None) -> str | None:
    """What the model should know of the thread: its memory, and the run a follow-up continues."""
    remembered = ctx.engine.memory.recall(ctx.store, thread.full_name, thread.number)
    parts = [*(["Remembered from this thread:", *remembered] if remembered else []), _previous_outcome(ctx, follows)]
    return "\n".join(part for part in parts if part) or None


def _previous_outcome(ctx: EventContext, run: Run | None) -> str | None:
    """What an earlier run on the same branch asked for and did, as context for the follow-up."""
    if run is None:
        return None
    steps = runs.steps_of(ctx.store, run.id)
    lines = [f"Request: {run.request}", f"Outcome: {run.status.value}" + (f" ({run.error})" if run.error else "")]
    lines += [f"- {s.name} ({s.tool}): {s.status.value} {s.output.get('summary', '')}".rstrip() for s in steps]
    return "\n".join(lines)


async def _config_or_report(gh: GitHubAPI, thread: Thread, ctx: EventContext, *, mentioned: bool) -> RepoConfig | None:
    """The repository's config; an invalid file is reported (only when nofx was addressed) and stops here."""
    try:
        return await repos.load_config(gh, thread, ctx.queue.redis)
    except ConfigError as exc:
        log.info("invalid repository config: %s", exc)
        if mentioned:
            await _reply(gh, thread, config_error(str(exc)))
        return None


async def _react(gh: GitHubAPI, source: Source) -> None:
    """👀 at once: people see nofx picked the request up before any slow work starts."""
    await gh.post(source.reaction_path, url_vars=source.reaction_vars, data={"content": "eyes"})


async def _reply(gh: GitHubAPI, thread: Thread, body: str) -> None:
    await gh.post("/repos/{owner}/{repo}/issues/{issue_number}/comments", url_vars=thread.url_vars, data={"body": body})


def _issue_source(thread: Thread, trigger: str) -> Source:
    return Source(trigger, "/repos/{owner}/{repo}/issues/{issue_number}/reactions", thread.url_vars)


def _gh(ctx: EventContext, thread: Thread) -> GitHubAPI:
    if ctx.github is None:
        raise RuntimeError("the GitHub App is not configured (GITHUB_APP_ID and a private key are required)")
    return ctx.github.installation_client(thread.installation_id)


def _run_of_check(ctx: EventContext, data: dict[str, Any]) -> Run | None:
    check = data.get("check_run") or {}
    app = (check.get("app") or {}).get("id")
    current = identity.current(ctx.store)
    if current is not None and app is not None and app != current.id:
        return None  # another App's check run
    run_id = check.get("external_id") or ""
    return runs.get_run(ctx.store, run_id) if run_id else None


def _thread_of_run(run: Run) -> Thread:
    owner, repo = run.repository.split("/", 1)
    return Thread(
        installation_id=run.installation_id,
        owner=owner,
        repo=repo,
        number=run.thread_number,
        kind=run.thread_kind,
        default_branch=run.default_branch or "main",
        clone_url=run.clone_url,
        html_url=run.thread_url,
    )
