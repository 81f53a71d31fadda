"""The events that carry a command: comments, issue bodies, labels and check-run buttons, each checked the same way.

One small router function per trigger; they share `_handle_command`, which checks the sender, reads the
repository's config, acknowledges with 👀 and hands the command to `bot.events.verbs`. The triggers that react are
also on `acknowledging`, the router of the 👀 pass (`bot.events.router.acknowledge`), which stops after the reaction.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from gidgethub import routing, sansio
from gidgethub.abc import GitHubAPI

from bot.events import commands, pull_requests
from bot.events.answers import config_or_report, github_for, own_app_id, reply
from bot.events.commands import Command, Verb
from bot.events.context import EventContext
from bot.events.verbs import Source, Turn, carry_out
from bot.github import identity
from bot.github.permissions import is_automation, sender_permission
from bot.github.threads import Thread
from bot.models import ReviewPass, Run
from bot.render.replies import (
    not_allowed,
    permission_refused,
)
from bot.repo_config import RepoConfig, permission_reaches
from bot.runs import planner, queries

router = routing.Router()
acknowledging = routing.Router()
log = logging.getLogger(__name__)
REFUSAL_EVERY_S = 24 * 3600
REACTED_KEEP_S = 24 * 3600  # how long a delivery's 👀 is remembered: routing it later does not react again
# A line that could hold a command under any configured prefix: cheap to test before reading the config.
_MAYBE_COMMAND = re.compile(r"^ {0,3}/\S", re.MULTILINE)


@acknowledging.register("issue_comment", action="created")
@router.register("issue_comment", action="created")
async def start_run_from_comment(event: sansio.Event, ctx: EventContext) -> None:
    """A `/nofx` command in a new issue or pull request conversation comment (edits never re-trigger)."""
    await _handle_comment(ctx, event, "comment", "/repos/{owner}/{repo}/issues/comments/{comment_id}/reactions")


@acknowledging.register("pull_request_review_comment", action="created")
@router.register("pull_request_review_comment", action="created")
async def start_run_from_review_comment(event: sansio.Event, ctx: EventContext) -> None:
    """A `/nofx` command in a line comment of a pull request review."""
    await _handle_comment(ctx, event, "review_comment", "/repos/{owner}/{repo}/pulls/comments/{comment_id}/reactions")


@acknowledging.register("issues", action="opened")
@router.register("issues", action="opened")
async def start_run_from_issue_body(event: sansio.Event, ctx: EventContext) -> None:
    """A new issue whose body holds a `/nofx` command."""
    thread = Thread.from_payload(event.data)
    issue = event.data["issue"]
    await _handle_command(ctx, event, thread, issue.get("body"), issue, _issue_source(thread, "issue_body"))


@acknowledging.register("issues", action="labeled")
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


@acknowledging.register("pull_request", action="labeled")
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
    gh = github_for(ctx, thread)
    config = await config_or_report(gh, thread, ctx, mentioned=True)
    if config is None:
        return
    source = _issue_source(thread, "check_run")
    await _authorised_command(ctx, event, gh, thread, config, command, source, target=run)


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
    gh = github_for(ctx, thread)
    config = await config_or_report(gh, thread, ctx, mentioned=True)
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
    if is_automation(event.data["sender"], own_app_id(ctx), item):
        return
    gh = github_for(ctx, thread)
    config = await config_or_report(gh, thread, ctx, mentioned=commands.parse(text) is not None)
    if config is None:
        return
    command = commands.parse(text, prefix=config.trigger.command)
    if command is None:
        return
    await _authorised_command(ctx, event, gh, thread, config, command, source, react=True)


async def _handle_label(
    ctx: EventContext, event: sansio.Event, command_for: Callable[[str, RepoConfig], Command | None]
) -> None:
    """A label acts like a command when `command_for` finds one for it under the repository's config."""
    label = (event.data.get("label") or {}).get("name")
    if not label or is_automation(event.data["sender"], own_app_id(ctx)):
        return
    thread = Thread.from_payload(event.data)
    gh = github_for(ctx, thread)
    config = await config_or_report(gh, thread, ctx, mentioned=False)
    command = command_for(label, config) if config is not None else None
    if config is None or command is None:
        return
    source = _issue_source(thread, "label")
    await _authorised_command(ctx, event, gh, thread, config, command, source, react=True)


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
    react: bool = False,
) -> None:
    """Carry out `command` if its sender has the permission; 👀 (`react`) only then, so outsiders cost no reaction.
    The 👀 pass stops after the reaction, and refuses nobody (routing the delivery does)."""
    sender = event.data["sender"]["login"]
    permission = await sender_permission(gh, thread, event.data["sender"], ctx.queue.shared)
    if not permission_reaches(permission, config.trigger.min_permission):
        if ctx.acknowledging:
            return
        log.info("refused %s from %s (%s)", command.verb.value, sender, permission)
        if command.verb in (Verb.approve, Verb.reject):
            body = not_allowed(sender, command.verb.value)
        else:
            body = permission_refused(sender, config.trigger.min_permission)
        await _refuse_once_a_day(ctx, gh, thread, body)
        return
    if react:
        await _react(ctx, gh, source, event.delivery_id)
    if ctx.acknowledging:
        return
    await carry_out(Turn(ctx, event, gh, thread, config, source, sender, target), command)


async def _refuse_once_a_day(ctx: EventContext, gh: GitHubAPI, thread: Thread, body: str) -> None:
    """At most one refusal per thread per day: outsiders cannot make nofx spend the installation's rate limit."""
    key = f"nofx:refused:{thread.installation_id}:{thread.full_name.lower()}#{thread.number}"
    if ctx.queue.shared.claim(key, REFUSAL_EVERY_S):
        await reply(gh, thread, body)
    else:
        log.info("refusal not posted: this thread already got one today")


async def _react(ctx: EventContext, gh: GitHubAPI, source: Source, delivery_id: str | None) -> None:
    """👀 at once: people see nofx picked the request up before any slow work starts. Once per delivery: the 👀 pass
    reacts, and routing the delivery then finds it done (GitHub keeps one 👀 per user anyway)."""
    key = f"nofx:reacted:{delivery_id}"
    if delivery_id and ctx.queue.shared.text(key) is not None:
        return
    await gh.post(source.reaction_path, url_vars=source.reaction_vars, data={"content": "eyes"})
    if delivery_id:
        ctx.queue.shared.keep_text(key, "eyes", REACTED_KEEP_S)


def _issue_source(thread: Thread, trigger: str) -> Source:
    return Source(trigger, "/repos/{owner}/{repo}/issues/{issue_number}/reactions", thread.url_vars)


def _run_of_check(ctx: EventContext, data: dict[str, Any]) -> Run | None:
    check = data.get("check_run") or {}
    app = (check.get("app") or {}).get("id")
    current = identity.current(ctx.store)
    if current is not None and app is not None and app != current.id:
        return None  # another App's check run
    run_id = check.get("external_id") or ""
    return queries.get_run(ctx.store, run_id) if run_id else None


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
        repository_id=run.repository_id,
    )
