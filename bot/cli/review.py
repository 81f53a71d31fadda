"""`nofx review`: the review gate on a local diff; in GitHub Actions it also posts the review on the pull request.

It reads `git diff base...head` of a local repository (never running the repository's code: no external diff
drivers, no textconv), reviews it with the same chunking, model call and placement as the App, and prints the
findings. With `GITHUB_TOKEN` and `GITHUB_EVENT_PATH` naming a `pull_request` event, it posts the same review
through the REST API at `GITHUB_API_URL`, unless `--dry-run` (or `NOFX_REVIEW_DRY_RUN=1`) asks it to print
what it would post. The exit code is the gate: 1 when a finding reaches `review.fail_on`, 2 when it could not
review at all, else 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gidgethub
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from bot import logs
from bot.cli.terminal import Phases
from bot.github.client import NofxGitHubAPI, http_client
from bot.llm.router import LLM, LLMError
from bot.repo_config import CONFIG_PATH, ConfigError, RepoConfig, parse_config
from bot.review import publish
from bot.review.analysis import Analysis, analyse
from bot.review.commentable import commentable
from bot.review.findings import Finding, severity_at_least, without_already_posted
from bot.review.placement import Placement, place
from bot.settings import Settings
from bot.workspace.diffs import parse_git_diff
from bot.workspace.git import GitError, git, git_or_none

TRUE_WORDS = ("1", "true", "yes", "on")
GIT_TIMEOUT_S = 120


class ReviewError(Exception):
    """The review could not run (bad ref, bad config, no model); the message says what to fix."""


@dataclass(frozen=True)
class ActionsTarget:
    """The pull request a GitHub Actions run is about, and the token to post the review with."""

    token: str
    pull: publish.PullRef
    head_sha: str


def run(
    args: argparse.Namespace,
    settings: Settings,
    redactor: logs.Redactor,
    *,
    environ: Mapping[str, str] | None = None,
    console: Console | None = None,
) -> int:
    """The command's body: 0 clean, 1 findings reach `review.fail_on`, 2 could not review."""
    env = os.environ if environ is None else environ
    out = console or Console(highlight=False, soft_wrap=True)
    dry_run = args.dry_run or env.get("NOFX_REVIEW_DRY_RUN", "").strip().lower() in TRUE_WORDS
    try:
        target = actions_target(env)
        if target is not None:
            redactor.add(target.token)
        return asyncio.run(_review(args, settings, redactor, target, dry_run, out))
    except (ReviewError, ConfigError, LLMError) as exc:
        out.print(f"[bold red]nofx review:[/] {escape(redactor.redact(str(exc)))}")
        return 2
    except gidgethub.GitHubException as exc:
        out.print(f"[bold red]nofx review:[/] GitHub refused the request: {escape(redactor.redact(str(exc)))}")
        return 2


def actions_target(env: Mapping[str, str]) -> ActionsTarget | None:
    """The pull request to post on, when running in GitHub Actions on a `pull_request` event; else None."""
    token, event_path = env.get("GITHUB_TOKEN"), env.get("GITHUB_EVENT_PATH")
    if not token or not event_path:
        return None
    try:
        event = json.loads(Path(event_path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ReviewError(f"GITHUB_EVENT_PATH cannot be read as JSON: {exc}") from None
    pull = event.get("pull_request") if isinstance(event, dict) else None
    if not isinstance(pull, dict):
        return None  # a push or a schedule: review locally, post nothing
    repository = event["repository"]
    ref = publish.PullRef(repository["owner"]["login"], repository["name"], int(pull["number"]))
    return ActionsTarget(token, ref, str(pull["head"]["sha"]))


async def _review(
    args: argparse.Namespace,
    settings: Settings,
    redactor: logs.Redactor,
    target: ActionsTarget | None,
    dry_run: bool,
    out: Console,
) -> int:
    repo: Path = args.repo
    head = args.head or (target.head_sha if target else "HEAD")
    head_sha = (await _git(repo, "rev-parse", "--verify", f"{head}^{{commit}}")).strip()
    files = parse_git_diff(
        await _git(repo, "diff", "--no-color", "--no-ext-diff", "--no-textconv", "-M", f"{args.base}...{head_sha}")
    )
    config = await _config_at(repo, args.base)
    llm = LLM.from_settings(settings, cache=None, redact=redactor.redact)
    if llm is None:
        raise ReviewError("no model is configured: set ANTHROPIC_API_KEY or OPENAI_API_KEY")
    try:
        analysis = await _analyse_in_view(out, llm, files, config, f"{args.base}...{head}")
    finally:
        await llm.aclose()
    if target is None:
        placement = _placement(analysis, analysis.findings, files, config, head_sha)
        _show(out, analysis, placement)
        return _verdict(out, analysis.findings, config)
    async with http_client() as http:
        gh = _client(http, settings.github_api_url, target.token)
        earlier = await publish.earlier_fingerprints(gh, target.pull)
        new = without_already_posted(analysis.findings, earlier)
        placement = _placement(analysis, new, files, config, head_sha)
        _show(out, analysis, placement)
        if dry_run:
            request = {
                "commit_id": head_sha,
                "event": "COMMENT",
                "body": placement.body,
                "comments": placement.comments,
            }
            out.print(f"[bold]Dry run:[/] would post this review on {escape(_where(target))}:")
            out.print_json(json.dumps(request))
        else:
            review, _sent = await publish.post_review(gh, target.pull, head_sha, placement)
            out.print(f"Posted review {review['id']} on {escape(_where(target))}.")
    return _verdict(out, analysis.findings, config)


async def _analyse_in_view(out: Console, llm: LLM, files: Sequence[Any], config: RepoConfig, what: str) -> Analysis:
    """The model's review; in a terminal under a live view of its progress (in CI logs, just the result)."""
    if not out.is_terminal:
        return await analyse(llm, files, config)
    phases = Phases(f"nofx review {what}", ["diff", "review"])
    phases.start("diff")
    phases.finish("diff", f"{len(files)} file(s) changed")
    calls = 0

    def before_call() -> None:
        nonlocal calls
        calls += 1
        phases.note("review", f"model call {calls}")

    with Live(get_renderable=phases.render, console=out, refresh_per_second=4, transient=False):
        phases.start("review", "reading the diff")
        try:
            analysis = await analyse(llm, files, config, before_call=before_call)
        except BaseException:
            phases.fail_running()
            raise
        phases.finish(
            "review",
            f"{len(analysis.findings)} finding(s) in {analysis.llm_calls} model call(s)",
            cost=analysis.cost_usd,
        )
    return analysis


def _placement(
    analysis: Analysis, findings: Sequence[Finding], files: Sequence[Any], config: RepoConfig, head_sha: str
) -> Placement:
    header = publish.summary_header(
        head_sha=head_sha,
        previous_head=None,
        new=len(findings),
        repeated=len(analysis.findings) - len(findings),
        resolved=[],
        open_count=None,
        resolved_count=None,
    )
    return place(
        findings,
        commentable(files),
        max_comments=config.review.max_comments,
        reviewed=analysis.reviewed,
        skipped=analysis.skipped,
        summary_header=header,
    )


def _client(http: Any, api_url: str, token: str) -> NofxGitHubAPI:
    """The REST client with the App's retry policy, authenticated by the workflow's token."""

    async def authorization() -> str:
        return f"token {token}"

    return NofxGitHubAPI(http, base_url=api_url, authorization=authorization)


async def _config_at(repo: Path, base: str) -> RepoConfig:
    """`.github/nofx.yml` as the base ref has it: a pull request cannot loosen its own review gate."""
    try:
        found = await git_or_none("show", f"{base}:{CONFIG_PATH}", cwd=repo, timeout_s=GIT_TIMEOUT_S)
    except GitError:  # timed out
        found = None
    return parse_config(found)


async def _git(repo: Path, *args: str) -> str:
    try:
        return await git(*args, cwd=repo, timeout_s=GIT_TIMEOUT_S)
    except OSError as exc:
        raise ReviewError(f"git {args[0]} failed: {exc}") from None
    except GitError as exc:
        if exc.returncode is None:  # timed out
            raise ReviewError(f"git {args[0]} failed: {exc}") from None
        raise ReviewError(f"git {' '.join(args[:1])} failed in {repo}: {exc.stderr.strip()[:500]}") from None


def _show(out: Console, analysis: Analysis, placement: Placement) -> None:
    """The findings as a table, then what was reviewed and skipped."""
    findings = [*placement.placed, *(finding for finding, _why in placement.moved)]
    if findings:
        table = Table(title=f"nofx review: {len(findings)} finding(s)", show_lines=True)
        for column in ("severity", "where", "finding"):
            table.add_column(column)
        for finding in findings:
            where = f"{finding.path}:{finding.first_line}" + (
                f"-{finding.last_line}" if finding.last_line != finding.first_line else ""
            )
            text = f"[bold]{escape(finding.title)}[/]" + (f"\n{escape(finding.body)}" if finding.body else "")
            table.add_row(escape(finding.severity), escape(where), text)
        out.print(table)
    else:
        out.print("nofx review: no new findings.")
    out.print(f"Reviewed {len(analysis.reviewed)} file(s) in {analysis.llm_calls} model call(s).")
    for skipped in analysis.skipped:
        out.print(f"Skipped {escape(skipped.path)}: {escape(skipped.reason)}")


def _verdict(out: Console, findings: Sequence[Finding], config: RepoConfig) -> int:
    fail_on = config.review.fail_on
    failing = [finding for finding in findings if severity_at_least(finding.severity, fail_on)]
    if failing:
        out.print(f"[bold red]{len(failing)} finding(s) at or above `{fail_on}` (review.fail_on).[/]")
        return 1
    return 0


def _where(target: ActionsTarget) -> str:
    return f"{target.pull.full_name}#{target.pull.number}"
