"""Review passes and their findings as rows: the one writer of `ReviewPass` status and of `ReviewFinding` rows."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import update
from sqlmodel import col, select

from bot.github.threads import Thread
from bot.models import FindingStatus, ReviewFinding, ReviewKind, ReviewPass, ReviewStatus, new_id, utcnow
from bot.queue import WorkQueue
from bot.repo_config import RepoConfig, describe
from bot.review.findings import Finding
from bot.store import Store

TERMINAL = (ReviewStatus.done, ReviewStatus.failed, ReviewStatus.cancelled)
ABANDONED = "the worker reviewing this pull request stopped twice; press Re-run on the check run to try again"


def add_pass(
    store: Store,
    thread: Thread,
    config: RepoConfig,
    pull: dict[str, Any],
    *,
    kind: ReviewKind,
    trigger: str,
    requested_by: str | None,
) -> ReviewPass:
    """Record a queued pass of the pull request's current head."""
    head_repo = (pull["head"].get("repo") or {}).get("full_name") or ""
    review = ReviewPass(
        id=new_id(),
        installation_id=thread.installation_id,
        repository=thread.full_name,
        repository_id=thread.repository_id or pull["base"].get("repo", {}).get("id"),
        pull_number=thread.number,
        base_sha=pull["base"]["sha"],
        head_sha=pull["head"]["sha"],
        kind=kind,
        trigger=trigger,
        requested_by=requested_by,
        author=(pull.get("user") or {}).get("login"),
        fork=head_repo.lower() != thread.full_name.lower(),
        config=describe(config),
    )
    with store.session() as session:
        session.add(review)
    return review


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
