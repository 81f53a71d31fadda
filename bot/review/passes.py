"""LLM reviews of pull requests: what starts one, review passes as RQ jobs, and what a pass does.

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
from datetime import timedelta
from typing import Any

from gidgethub import BadRequest, routing, sansio
from gidgethub.abc import GitHubAPI
from sqlalchemy import update
from sqlmodel import col, select

from bot import logs
from bot.events.context import EventContext
from bot.github import repos
from bot.github.client import GitHubApp
from bot.github.threads import Thread
from bot.llm import prompts
from bot.llm.router import LLM, Budget, BudgetExceeded, LLMError, ToolSpec, untrusted, user_message
from bot.models import (
    AppIdentity,
    FindingStatus,
    ReviewFinding,
    ReviewKind,
    ReviewPass,
    ReviewStatus,
    utcnow,
)
from bot.queue import WorkQueue
from bot.repo_config import ConfigError, RepoConfig, describe, from_dict
from bot.review import publish
from bot.review.chunks import Chunk, Skipped, plan_chunks
from bot.review.commentable import Commentable, commentable
from bot.review.findings import (
    REPORT_FINDINGS_SCHEMA,
    Finding,
    merge_duplicates,
    parse_findings,
    without_already_posted,
)
from bot.review.placement import Placement, place
from bot.runs.records import new_id
from bot.store import Store
from bot.workspace.diffs import FileDiff, from_github_files

router = routing.Router()
log = logging.getLogger(__name__)

CHECK_NAME = publish.CHECK_NAME
MAX_CHUNK_TOKENS = 12_000  # per LLM call: room for the prompt and a long answer in any current model
MAX_OUTPUT_TOKENS = 8_192
COMPARE_FILE_LIMIT = 300  # GitHub's compare lists at most 300 files; a longer change gets a full review
NO_LLM = (
    "No LLM is configured on this nofx server, so nothing was reviewed. "
    "Set ANTHROPIC_API_KEY or OPENAI_API_KEY for its workers, then press Re-run."
)
REPORT_FINDINGS = ToolSpec(
    "report_findings",
    "Report every finding in this part of the diff, in one call; an empty list when there is nothing to report.",
    REPORT_FINDINGS_SCHEMA,
)
TERMINAL = (ReviewStatus.done, ReviewStatus.failed, ReviewStatus.cancelled)
ABANDONED = "the worker reviewing this pull request stopped twice; press Re-run on the check run to try again"


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
    remember: Callable[[str, int, str], None] | None = None  # thread memory: (repository, number, feedback)


# --- triggers --------------------------------------------------------------------------------------------------


@router.register("pull_request", action="opened")
@router.register("pull_request", action="reopened")
@router.register("pull_request", action="ready_for_review")
@router.register("pull_request", action="synchronize")
async def review_updated_pull_request(event: sansio.Event, ctx: EventContext) -> None:
    """Review automatically when `review.auto` is on: new, reopened, out of draft, or new commits pushed.

    Pushes by nofx itself are reviewed too: the review only comments, so reviewing its own work is harmless.
    """
    pull = event.data["pull_request"]
    if pull.get("state", "open") != "open":
        return
    thread = Thread.from_payload(event.data)
    if ctx.github is None:
        raise RuntimeError("the GitHub App is not configured (GITHUB_APP_ID and a private key are required)")
    gh = ctx.github.installation_client(thread.installation_id)
    try:
        config = await repos.load_config(gh, thread, ctx.queue.redis)
    except ConfigError as exc:  # nobody asked: no comment, the next `/nofx` command reports the error
        log.info("invalid repository config, no automatic review: %s", exc)
        return
    if not config.review.auto or (pull.get("draft") and not config.review.drafts):
        return
    action = event.data["action"]
    kind = ReviewKind.incremental if action == "synchronize" else ReviewKind.full
    queue_pass(ctx, thread, config, pull, kind=kind, trigger=action, requested_by=event.data["sender"]["login"])


async def request_review(
    ctx: EventContext, gh: GitHubAPI, thread: Thread, config: RepoConfig, *, trigger: str, requested_by: str
) -> ReviewPass | None:
    """A full review asked for by a person (`/nofx review`, the label, Re-run); None if the PR is not open."""
    pull = await repos.pull_request(gh, thread)
    if pull.get("state") != "open":
        return None
    return queue_pass(ctx, thread, config, pull, kind=ReviewKind.full, trigger=trigger, requested_by=requested_by)


def queue_pass(
    ctx: EventContext,
    thread: Thread,
    config: RepoConfig,
    pull: dict[str, Any],
    *,
    kind: ReviewKind,
    trigger: str,
    requested_by: str | None,
) -> ReviewPass:
    """Record a pass of the pull request's current head and queue its job."""
    head_repo = (pull["head"].get("repo") or {}).get("full_name") or ""
    review = ReviewPass(
        id=new_id(),
        installation_id=thread.installation_id,
        repository=thread.full_name,
        pull_number=thread.number,
        base_sha=pull["base"]["sha"],
        head_sha=pull["head"]["sha"],
        kind=kind,
        trigger=trigger,
        requested_by=requested_by,
        fork=head_repo.lower() != thread.full_name.lower(),
        config=describe(config),
    )
    with ctx.store.session() as session:
        session.add(review)
    ctx.queue.enqueue_review(review.id)
    log.info("review pass queued", extra=logs.fields(review_pass=review.id, kind=kind.value, trigger=trigger))
    return review


def pass_of_check(store: Store, check_run: dict[str, Any], app: AppIdentity | None) -> ReviewPass | None:
    """The pass behind one of this App's "nofx review" check runs (for its Re-run button), or None."""
    if check_run.get("name") != CHECK_NAME:
        return None
    app_id = (check_run.get("app") or {}).get("id")
    if app is not None and app_id is not None and app_id != app.id:
        return None  # another App's check of the same name
    external_id = check_run.get("external_id") or ""
    return get_pass(store, external_id) if external_id else None


# --- the pass record -------------------------------------------------------------------------------------------


def get_pass(store: Store, pass_id: str) -> ReviewPass | None:
    with store.session() as session:
        return session.get(ReviewPass, pass_id)


def passes_of(store: Store, repository: str, pull_number: int) -> list[ReviewPass]:
    """A pull request's passes, oldest first."""
    with store.session() as session:
        query = (
            select(ReviewPass)
            .where(ReviewPass.repository == repository, ReviewPass.pull_number == pull_number)
            .order_by(col(ReviewPass.created_at), col(ReviewPass.id))
        )
        return list(session.exec(query).all())


def findings_of(store: Store, repository: str, pull_number: int) -> list[ReviewFinding]:
    with store.session() as session:
        query = (
            select(ReviewFinding)
            .where(ReviewFinding.repository == repository, ReviewFinding.pull_number == pull_number)
            .order_by(col(ReviewFinding.id))
        )
        return list(session.exec(query).all())


def claim_pass(store: Store, pass_id: str) -> ReviewPass | None:
    """queued → running, atomically: a duplicate job (or a second worker) gets None and does nothing."""
    with store.session() as session:
        claimed = session.exec(
            update(ReviewPass)
            .where(col(ReviewPass.id) == pass_id, col(ReviewPass.status) == ReviewStatus.queued)
            .values(status=ReviewStatus.running, started_at=utcnow(), updated_at=utcnow())
        )
        if claimed.rowcount != 1:
            return None
    return get_pass(store, pass_id)


def restart_abandoned(store: Store, queue: WorkQueue, older_than: timedelta) -> list[str]:
    """Passes still `running` long after their job's time limit: their worker died. Each is queued once more
    (it keeps its check run, which the new attempt completes); a second death fails it, to be re-run by hand."""
    cutoff = utcnow() - older_than
    with store.session() as session:
        stuck = list(
            session.exec(
                select(ReviewPass).where(ReviewPass.status == ReviewStatus.running, col(ReviewPass.started_at) < cutoff)
            )
        )
    restarted = []
    for review in stuck:
        if review.restarts >= 1:
            finish_pass(store, review.id, ReviewStatus.failed, error=ABANDONED)
            continue
        with store.session() as session:
            moved = session.exec(
                update(ReviewPass)
                .where(col(ReviewPass.id) == review.id, col(ReviewPass.status) == ReviewStatus.running)
                .values(status=ReviewStatus.queued, restarts=col(ReviewPass.restarts) + 1, updated_at=utcnow())
            )
        if moved.rowcount == 1:
            queue.enqueue_review(review.id)
            restarted.append(review.id)
    return restarted


def set_pass_fields(store: Store, pass_id: str, **values: Any) -> None:
    """Record what a running pass learnt (check run id, kind, files); never its status."""
    if "status" in values:
        raise ValueError("a pass's status changes only through finish_pass")
    with store.session() as session:
        session.exec(update(ReviewPass).where(col(ReviewPass.id) == pass_id).values(**values, updated_at=utcnow()))


def finish_pass(store: Store, pass_id: str, status: ReviewStatus, **values: Any) -> None:
    """running → done | failed | cancelled; a pass already over is left as it is."""
    if status not in TERMINAL:
        raise ValueError(f"{status.value} is not an end state")
    with store.session() as session:
        session.exec(
            update(ReviewPass)
            .where(col(ReviewPass.id) == pass_id, col(ReviewPass.status) == ReviewStatus.running)
            .values(status=status, finished_at=utcnow(), updated_at=utcnow(), **values)
        )


def newer_pass(store: Store, review: ReviewPass) -> ReviewPass | None:
    """A pass on the same pull request created after this one: it replaces this one."""
    later = [p for p in passes_of(store, review.repository, review.pull_number) if _after(p, review)]
    return later[-1] if later else None


def last_reviewed_head(store: Store, review: ReviewPass) -> str | None:
    """The head of the latest finished pass before this one: where an incremental review starts."""
    done = [
        p
        for p in passes_of(store, review.repository, review.pull_number)
        if p.status == ReviewStatus.done and _after(review, p)
    ]
    return done[-1].head_sha if done else None


def _after(one: ReviewPass, other: ReviewPass) -> bool:
    return (one.created_at, one.id) > (other.created_at, other.id) and one.id != other.id


def record_findings(
    store: Store,
    review: ReviewPass,
    *,
    posted: Sequence[Finding],
    comment_ids: dict[str, int],
    seen_again: Sequence[Finding],
    resolved: Sequence[str],
) -> None:
    """Store what the pass posted (with comment ids), saw again, and found resolved, by fingerprint."""
    with store.session() as session:
        query = select(ReviewFinding).where(
            ReviewFinding.repository == review.repository, ReviewFinding.pull_number == review.pull_number
        )
        rows = {row.fingerprint: row for row in session.exec(query).all()}
        for finding in posted:
            row = rows.get(finding.fingerprint) or ReviewFinding(
                repository=review.repository,
                pull_number=review.pull_number,
                fingerprint=finding.fingerprint,
                path=finding.path,
                line=finding.line,
                severity=finding.severity,
                title=finding.title,
                pass_id=review.id,
                first_seen_sha=review.head_sha,
                last_seen_sha=review.head_sha,
            )
            row.status = FindingStatus.open
            row.comment_id = comment_ids.get(finding.fingerprint)
            _update_row(row, finding, review)
            session.add(row)
        for finding in seen_again:
            if finding.fingerprint in rows:
                _update_row(rows[finding.fingerprint], finding, review)
                session.add(rows[finding.fingerprint])
        for fingerprint in resolved:
            row = rows[fingerprint]
            row.status, row.pass_id, row.updated_at = FindingStatus.resolved, review.id, utcnow()
            session.add(row)


def _update_row(row: ReviewFinding, finding: Finding, review: ReviewPass) -> None:
    row.path, row.line, row.end_line, row.side = finding.path, finding.line, finding.end_line, finding.side
    row.severity, row.title, row.body = finding.severity, finding.title, finding.body
    row.pass_id, row.last_seen_sha, row.updated_at = review.id, review.head_sha, utcnow()


# --- reading the diff with the model (shared with `nofx review`) ----------------------------------------------


@dataclass
class Analysis:
    """What the model found in a diff, which files it read, which it did not and why, and what it cost."""

    findings: list[Finding]
    reviewed: list[str]
    skipped: list[Skipped]
    llm_calls: int = 0
    cost_usd: float = 0.0


async def analyse(
    llm: LLM,
    files: Sequence[FileDiff],
    config: RepoConfig,
    *,
    before_call: Callable[[], None] = lambda: None,
    max_chunk_tokens: int = MAX_CHUNK_TOKENS,
) -> Analysis:
    """Review `files` chunk by chunk (`plan_chunks`), one `report_findings` call each; duplicates merged.

    `before_call` runs before every LLM call and may raise to stop (a superseded pass). When the repository's
    LLM budget (`policy.max_cost_usd`) runs out, the files not yet read are listed as skipped with that reason.
    """
    chunks, skipped = plan_chunks(files, skip=config.review.skips, max_tokens_per_chunk=max_chunk_tokens)
    analysis = Analysis([], [], list(skipped))
    budget = Budget(config.policy.max_cost_usd)
    system = prompts.load("review")
    found: list[Finding] = []
    for index, chunk in enumerate(chunks):
        before_call()
        intro = f"Part {index + 1} of {len(chunks)} of the pull request's diff. Report findings for this part only."
        try:
            response = await llm.call(
                purpose="review",
                system=system,
                messages=[user_message(f"{intro}\n\n{untrusted('diff', chunk.text)}")],
                tools=[REPORT_FINDINGS],
                model=config.model,
                max_tokens=MAX_OUTPUT_TOKENS,
                budget=budget,
            )
        except BudgetExceeded as exc:
            analysis.skipped += _not_reached(chunks[index:], analysis.reviewed, str(exc))
            break
        analysis.llm_calls += 1
        analysis.cost_usd += response.usage.cost_usd
        for call in response.tool_calls:
            found += parse_findings(call.input)
        analysis.reviewed += [path for path in chunk.paths if path not in analysis.reviewed]
    analysis.findings = merge_duplicates(found)
    return analysis


def _not_reached(chunks: Sequence[Chunk], reviewed: list[str], why: str) -> list[Skipped]:
    paths = dict.fromkeys(path for chunk in chunks for path in chunk.paths)
    return [
        Skipped(path, f"only partly reviewed: {why}" if path in reviewed else f"not reviewed: {why}") for path in paths
    ]


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
        deps.remember(review.repository, review.pull_number, feedback)
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
        resolved=[_noted(row) for row in resolved],
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
    annotations = [publish.annotation(_noted(row), fail_on) for row in rows if row.side == "RIGHT"]
    assert review.check_run_id is not None
    await publish.finish_check(
        gh,
        pull,
        review.check_run_id,
        conclusion=publish.conclusion([row.severity for row in rows], fail_on),
        title=publish.check_title([_noted(row) for row in rows], fail_on),
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


def _noted(row: ReviewFinding) -> publish.Noted:
    return publish.Noted(row.path, row.line, row.end_line, row.severity, row.title, row.body)


def _pull_ref(review: ReviewPass) -> publish.PullRef:
    owner, repo = review.repository.split("/", 1)
    return publish.PullRef(owner, repo, review.pull_number)
