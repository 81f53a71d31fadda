"""One review pass as an RQ job: read the diff through the API, analyse it, publish the review and the check run.

A pass is a `ReviewPass` row; the job `bot.jobs.run_review(pass_id)` rebuilds everything from it and from the
GitHub API. A pass reads the diff through the API only and never clones or runs the repository's code, so a
pull request from a fork is reviewed like any other and no secret is exposed to it.

On `synchronize` a pass reviews only what changed since the last reviewed head (`compare` by commit SHA),
unless the old head is no longer an ancestor (a force-push): then the whole pull request. A newer pass on the
same pull request supersedes an older one: the older checks before each LLM call and before publishing, and
stops as `cancelled`. Findings are stored by fingerprint, so a later pass neither repeats an open one nor
forgets it: when a pass that reviewed a file no longer reports a finding there, its thread gets a reply and the
finding counts as resolved.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gidgethub import BadRequest
from gidgethub.abc import GitHubAPI

from bot import logs
from bot.github.client import GitHubApp
from bot.llm.router import LLM, LLMError
from bot.models import (
    FindingStatus,
    ReviewFinding,
    ReviewKind,
    ReviewPass,
    ReviewStatus,
)
from bot.repo_config import RepoConfig, from_dict
from bot.review import publish
from bot.review.analysis import Analysis, analyse
from bot.review.commentable import Commentable, commentable
from bot.review.findings import (
    Finding,
    without_already_posted,
)
from bot.review.pass_records import (
    claim_pass,
    findings_of,
    finish_pass,
    get_pass,
    last_reviewed_head,
    newer_pass,
    record_findings,
    set_pass_fields,
)
from bot.review.placement import Placement, place
from bot.store import Store
from bot.workspace.diffs import FileDiff, from_github_files

log = logging.getLogger(__name__)

COMPARE_FILE_LIMIT = 300  # GitHub's compare lists at most 300 files; a longer change gets a full review
NO_LLM = (
    "No LLM is configured on this nofx server, so nothing was reviewed. "
    "Set ANTHROPIC_API_KEY or OPENAI_API_KEY for its workers, then press Re-run."
)


class Superseded(Exception):
    """A newer pass on the same pull request exists: this one stops without publishing."""


class ReviewFailed(Exception):
    """The pass cannot review; the message is shown in the check run as it is."""


@dataclass(frozen=True)
class ReviewDeps:
    """What a pass job needs, built by the worker's runtime (passed in, never read from globals)."""

    store: Store
    github: GitHubApp | None
    llm: LLM | None
    redact: Callable[[str], str] = str
    remember: Callable[[ReviewPass, str], None] | None = None  # thread memory: (the pass, its feedback)


# --- the pass --------------------------------------------------------------------------------------------------


@dataclass
class _Diff:
    """What a pass reviews, where GitHub takes line comments (the whole PR's diff), and how it came to be."""

    files: list[FileDiff]
    where: Commentable
    kind: ReviewKind
    previous_head: str | None = None


async def run_pass(deps: ReviewDeps, pass_id: str) -> ReviewStatus | None:
    """The RQ job body: review one head of a pull request and publish it; None if the pass was not claimable."""
    review = claim_pass(deps.store, pass_id)
    if review is None:
        log.info("review pass not claimable (unknown, taken or finished)", extra=logs.fields(review_pass=pass_id))
        return None
    with logs.bound(review_pass=review.id, repo=review.repository, installation=review.installation_id):
        if deps.github is None:
            finish_pass(deps.store, review.id, ReviewStatus.failed, error="the GitHub App is not configured")
            return ReviewStatus.failed
        gh = deps.github.installation_client(review.installation_id)
        pull = _pull_ref(review)
        try:
            return await _review(deps, gh, pull, review)
        except Superseded as exc:
            await _stop(deps, gh, pull, review.id, ReviewStatus.cancelled, str(exc))
            return ReviewStatus.cancelled
        except (ReviewFailed, LLMError) as exc:
            await _stop(deps, gh, pull, review.id, ReviewStatus.failed, deps.redact(str(exc)))
            return ReviewStatus.failed
        except Exception as exc:
            log.exception("review pass failed")
            reason = deps.redact(f"nofx failed unexpectedly ({type(exc).__name__}: {exc}); press Re-run to try again.")
            await _stop(deps, gh, pull, review.id, ReviewStatus.failed, reason)
            return ReviewStatus.failed


async def _review(deps: ReviewDeps, gh: GitHubAPI, pull: publish.PullRef, review: ReviewPass) -> ReviewStatus:
    store = deps.store
    config = from_dict(review.config)

    def check_current() -> None:
        newer = newer_pass(store, review)
        if newer is not None:
            raise Superseded(
                f"Superseded by a newer review of this pull request (at {newer.head_sha[:12]}); nothing was published."
            )

    check_current()
    if review.check_run_id is None:
        review.check_run_id = await publish.start_check(gh, pull, review.head_sha, review.id)
        set_pass_fields(store, review.id, check_run_id=review.check_run_id)
    if deps.llm is None:
        raise ReviewFailed(NO_LLM)
    diff = await _diff_to_review(gh, pull, store, review)
    set_pass_fields(store, review.id, kind=diff.kind, previous_head_sha=diff.previous_head)
    analysis = await analyse(deps.llm, diff.files, config, before_call=check_current)
    check_current()
    posted = await _publish(deps, gh, pull, review, config, diff, analysis, check_current)
    finish_pass(
        store,
        review.id,
        ReviewStatus.done,
        review_id=posted,
        files_reviewed=analysis.reviewed,
        files_skipped=[{"path": s.path, "reason": s.reason} for s in analysis.skipped],
        findings_count=len(analysis.findings),
        llm_calls=analysis.llm_calls,
        cost_usd=round(analysis.cost_usd, 6),
    )
    log.info(
        "review pass done",
        extra=logs.fields(findings=len(analysis.findings), calls=analysis.llm_calls, kind=diff.kind.value),
    )
    if deps.remember is not None:  # the next run on this pull request knows what the review said
        titles = "; ".join(f"{f.severity}: {f.path}: {f.title}" for f in analysis.findings[:20])
        feedback = f"review of {review.head_sha[:12]}: {len(analysis.findings)} finding(s)" + (
            f" ({titles})" if titles else ""
        )
        deps.remember(review, feedback)
    return ReviewStatus.done


async def _diff_to_review(gh: GitHubAPI, pull: publish.PullRef, store: Store, review: ReviewPass) -> _Diff:
    """The whole pull request, or on a push only what changed since the last reviewed head."""
    pull_files = from_github_files(await publish.pull_files(gh, pull))
    where = commentable(pull_files)  # comments must sit on the PR's diff, whatever part was reviewed
    previous = last_reviewed_head(store, review) if review.kind == ReviewKind.incremental else None
    if previous is None:
        return _Diff(pull_files, where, ReviewKind.full)
    comparison = await publish.compare(gh, pull, previous, review.head_sha)
    changed = comparison.get("files") or []
    if comparison.get("status") in ("diverged", "behind") or len(changed) >= COMPARE_FILE_LIMIT:
        log.info("the last reviewed head is not an ancestor (or the change is huge): full review")
        return _Diff(pull_files, where, ReviewKind.full)
    # A merge of the base branch shows up in the compare; only files this pull request changes are its own.
    in_pull = {diff.path for diff in pull_files}
    files = [diff for diff in from_github_files(changed) if diff.path in in_pull]
    return _Diff(files, where, ReviewKind.incremental, previous)


async def _publish(
    deps: ReviewDeps,
    gh: GitHubAPI,
    pull: publish.PullRef,
    review: ReviewPass,
    config: RepoConfig,
    diff: _Diff,
    analysis: Analysis,
    check_current: Callable[[], None],
) -> int:
    """Post the review, answer resolved threads, store the findings, complete the check run; the review id."""
    store = deps.store
    rows = findings_of(store, review.repository, review.pull_number)
    open_rows = {row.fingerprint: row for row in rows if row.status == FindingStatus.open}
    reported = {finding.fingerprint for finding in analysis.findings}
    new = without_already_posted(analysis.findings, set(open_rows))
    seen_again = [finding for finding in analysis.findings if finding.fingerprint in open_rows]
    resolved = [row for row in open_rows.values() if row.fingerprint not in reported and _was_read(row, diff, analysis)]
    earlier_resolved = sum(
        1 for row in rows if row.status == FindingStatus.resolved and row.fingerprint not in reported
    )
    header = publish.summary_header(
        head_sha=review.head_sha,
        previous_head=diff.previous_head,
        new=len(new),
        repeated=len(seen_again),
        resolved=resolved,
        open_count=len(open_rows) - len(resolved) + len(new),
        resolved_count=earlier_resolved + len(resolved),
    )
    placement = place(
        new,
        diff.where,
        max_comments=config.review.max_comments,
        reviewed=analysis.reviewed,
        skipped=analysis.skipped,
        summary_header=header,
    )
    check_current()  # the last moment a newer pass can stop this one: nothing is on GitHub yet
    posted, placement = await publish.post_review(gh, pull, review.head_sha, placement)
    set_pass_fields(store, review.id, review_id=int(posted["id"]))
    ids = await publish.comment_ids(gh, pull, int(posted["id"])) if placement.comments else {}
    await _reply_resolved(gh, pull, review, resolved)
    record_findings(
        store,
        review,
        posted=_posted(placement),
        comment_ids=ids,
        seen_again=seen_again,
        resolved=[row.fingerprint for row in resolved],
    )
    await _complete_check(gh, pull, review, config, store)
    return int(posted["id"])


def _was_read(row: ReviewFinding, diff: _Diff, analysis: Analysis) -> bool:
    """Whether this pass read the finding's code: its file in a full pass, its lines in an incremental one.

    An incremental pass shows the model only the hunks that changed since the last reviewed head; silence
    about a finding elsewhere in the same file says nothing, so it stays open.
    """
    if row.path not in analysis.reviewed:
        return False
    if diff.kind == ReviewKind.full:
        return True
    shown = commentable(diff.files).lines.get((row.path, row.side), set()) if row.side == "RIGHT" else set()
    return any(line in shown for line in range(row.line, max(row.end_line or row.line, row.line) + 1))


def _posted(placement: Placement) -> list[Finding]:
    return [*placement.placed, *(finding for finding, _why in placement.moved)]


async def _reply_resolved(
    gh: GitHubAPI, pull: publish.PullRef, review: ReviewPass, resolved: Sequence[ReviewFinding]
) -> None:
    """A reply on each resolved finding's thread; a thread deleted meanwhile is not worth failing the pass."""
    for row in resolved:
        if row.comment_id is None:
            continue
        try:
            await publish.reply_resolved(gh, pull, row.comment_id, review.head_sha)
        except BadRequest as exc:
            log.warning("could not reply on a resolved finding's thread", extra=logs.fields(status=exc.status_code))


async def _complete_check(
    gh: GitHubAPI, pull: publish.PullRef, review: ReviewPass, config: RepoConfig, store: Store
) -> None:
    """The check run judges every finding still open on the pull request, not only this pass's (a gate)."""
    rows = [
        row for row in findings_of(store, review.repository, review.pull_number) if row.status == FindingStatus.open
    ]
    fail_on = config.review.fail_on
    # A LEFT-side finding's line is in the old file; an annotation on the head commit would point elsewhere.
    annotations = [publish.annotation(row, fail_on) for row in rows if row.side == "RIGHT"]
    assert review.check_run_id is not None
    await publish.finish_check(
        gh,
        pull,
        review.check_run_id,
        conclusion=publish.conclusion([row.severity for row in rows], fail_on),
        title=publish.check_title(rows, fail_on),
        summary=_check_summary(review, config, len(rows)),
        annotations=annotations,
    )


def _check_summary(review: ReviewPass, config: RepoConfig, open_count: int) -> str:
    fail_on = config.review.fail_on
    rule = (
        "Findings never fail this check (`review.fail_on: never`)."
        if fail_on == "never"
        else f"The check fails while a finding of severity `{fail_on}` or above is open (`review.fail_on`)."
    )
    return f"nofx reviewed `{review.head_sha[:12]}`: {open_count} finding(s) open on this pull request.\n\n{rule}"


async def _stop(
    deps: ReviewDeps, gh: GitHubAPI, pull: publish.PullRef, pass_id: str, status: ReviewStatus, reason: str
) -> None:
    """End the pass and say why in its check run (when it has one)."""
    finish_pass(deps.store, pass_id, status, error=reason)
    review = get_pass(deps.store, pass_id)
    if review is None or review.check_run_id is None:
        return
    conclusion, title = (
        ("cancelled", "Superseded") if status == ReviewStatus.cancelled else ("failure", "Review failed")
    )
    try:
        await publish.finish_check(gh, pull, review.check_run_id, conclusion=conclusion, title=title, summary=reason)
    except Exception:  # GitHub may be what failed; the pass's record already says why
        log.exception("could not complete the review's check run")


def _pull_ref(review: ReviewPass) -> publish.PullRef:
    owner, repo = review.repository.split("/", 1)
    return publish.PullRef(owner, repo, review.pull_number)
