"""What a review shows on GitHub: the review itself (with the 422 fallback), replies on resolved threads, the check run.

Shared by the App's review passes and by `nofx review` in GitHub Actions, so both post the same review. Reviews
are always `COMMENT`: nofx never approves or requests changes (GitHub refuses both on the App's own pull
requests, and the merge gate is the check run, whose conclusion follows `review.fail_on`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from gidgethub import BadRequest
from gidgethub.abc import GitHubAPI

from bot.logs import fields
from bot.models import ReviewFinding
from bot.render.check_run import CHECK_TEXT_LIMIT
from bot.render.text import code_span, escape_inline, text_size
from bot.review.findings import posted_fingerprints, severity_at_least
from bot.review.placement import Placement, move_to_body

log = logging.getLogger(__name__)

CHECK_NAME = "nofx review"
ANNOTATIONS_PER_REQUEST = 50  # GitHub's limit per check-run create or update
ANNOTATION_MESSAGE_LIMIT = 64 * 1024
ANNOTATION_TITLE_LIMIT = 255
PAGE = 100


@dataclass(frozen=True)
class PullRef:
    """Which pull request: enough to build every URL of the reviews and checks APIs."""

    owner: str
    repo: str
    number: int

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.repo}"

    @property
    def url_vars(self) -> dict[str, Any]:
        return {"owner": self.owner, "repo": self.repo, "pull_number": self.number}


# --- reading the pull request --------------------------------------------------------------------------------


async def pull_files(gh: GitHubAPI, pull: PullRef) -> list[dict[str, Any]]:
    """Every file of the pull request's diff (GitHub lists up to 3,000), with its `patch`."""
    return [
        entry
        async for entry in gh.getiter(
            "/repos/{owner}/{repo}/pulls/{pull_number}/files{?per_page}", url_vars={**pull.url_vars, "per_page": PAGE}
        )
    ]


async def compare(gh: GitHubAPI, pull: PullRef, base_sha: str, head_sha: str) -> dict[str, Any]:
    """`GET /compare/{base}...{head}`: its `status` says whether `base` is still an ancestor of `head`."""
    data: dict[str, Any] = await gh.getitem(
        "/repos/{owner}/{repo}/compare/{basehead}",
        url_vars={"owner": pull.owner, "repo": pull.repo, "basehead": f"{base_sha}...{head_sha}"},
    )
    return data


async def earlier_fingerprints(gh: GitHubAPI, pull: PullRef) -> set[str]:
    """Fingerprints in the markers of earlier nofx reviews and line comments (the CLI has no database)."""
    texts: list[str | None] = []
    for template in ("/repos/{owner}/{repo}/pulls/{pull_number}/reviews{?per_page}", _COMMENTS):
        texts += [item.get("body") async for item in gh.getiter(template, url_vars={**pull.url_vars, "per_page": PAGE})]
    return posted_fingerprints(texts)


_COMMENTS = "/repos/{owner}/{repo}/pulls/{pull_number}/comments{?per_page}"


# --- the review ------------------------------------------------------------------------------------------------


async def post_review(
    gh: GitHubAPI, pull: PullRef, head_sha: str, placement: Placement
) -> tuple[dict[str, Any], Placement]:
    """Post one `COMMENT` review on `head_sha`; return GitHub's review and the placement that went out.

    GitHub answers 422 for the whole review when any line comment is off the diff, and does not say which one.
    The fallback moves every line comment into the body and posts once more: one extra request, and the review
    is never lost (bisecting would keep more comments on lines but could take many requests on a big review).
    """
    try:
        return await _create_review(gh, pull, head_sha, placement), placement
    except BadRequest as exc:
        if exc.status_code != 422 or not placement.comments:
            raise
    fallback = move_to_body(placement, None)
    moved = [f"{comment['path']}:{comment['line']}" for comment in placement.comments]
    log.warning(
        "GitHub refused the review's line comments (422); posting them in the review body instead",
        extra=fields(pull=f"{pull.full_name}#{pull.number}", moved=moved),
    )
    return await _create_review(gh, pull, head_sha, fallback), fallback


async def _create_review(gh: GitHubAPI, pull: PullRef, head_sha: str, placement: Placement) -> dict[str, Any]:
    data: dict[str, Any] = {"commit_id": head_sha, "event": "COMMENT", "body": placement.body}
    if placement.comments:
        data["comments"] = placement.comments
    review: dict[str, Any] = await gh.post(
        "/repos/{owner}/{repo}/pulls/{pull_number}/reviews", url_vars=pull.url_vars, data=data
    )
    return review


async def comment_ids(gh: GitHubAPI, pull: PullRef, review_id: int) -> dict[str, int]:
    """fingerprint → id of the line comment that carries it, for one review (read back from the markers)."""
    ids: dict[str, int] = {}
    async for comment in gh.getiter(_COMMENTS, url_vars={**pull.url_vars, "per_page": PAGE}):
        if comment.get("pull_request_review_id") != review_id or comment.get("in_reply_to_id"):
            continue
        for fingerprint in posted_fingerprints([comment.get("body")]):
            ids[fingerprint] = int(comment["id"])
    return ids


async def reply_resolved(gh: GitHubAPI, pull: PullRef, comment_id: int, head_sha: str) -> None:
    """Say on the finding's thread that the latest review no longer reports it."""
    body = (
        f"✅ This looks resolved as of {code_span(head_sha[:12])}: the latest nofx review of this file "
        "no longer reports it."
    )
    await gh.post(
        "/repos/{owner}/{repo}/pulls/{pull_number}/comments/{comment_id}/replies",
        url_vars={**pull.url_vars, "comment_id": comment_id},
        data={"body": body},
    )


def summary_header(
    *,
    head_sha: str,
    previous_head: str | None,
    new: int,
    repeated: int,
    resolved: Sequence[ReviewFinding],
    open_count: int | None,
    resolved_count: int | None,
) -> str:
    """The first lines of the review body: what was reviewed, what is new, and open vs resolved on the PR."""
    scope = (
        f"the changes since {code_span(previous_head[:12])} (up to {code_span(head_sha[:12])})"
        if previous_head
        else f"the whole pull request at {code_span(head_sha[:12])}"
    )
    lines = [f"## nofx review\n\nReviewed {scope}."]
    found = f"**{new} new finding{'s' if new != 1 else ''}**" if new else "No new findings"
    if repeated:
        found += f"; {repeated} reported earlier and still open (not repeated)"
    lines.append(found + ".")
    if open_count is not None and resolved_count is not None:
        lines.append(f"On this pull request: **{open_count} open**, **{resolved_count} resolved**.")
    if resolved:
        items = "\n".join(f"- {code_span(r.path)}: {escape_inline(r.title)}" for r in resolved)
        lines.append(f"Looks resolved since the last review:\n\n{items}")
    return "\n\n".join(lines)


# --- the check run ---------------------------------------------------------------------------------------------


async def start_check(gh: GitHubAPI, pull: PullRef, head_sha: str, external_id: str) -> int:
    """Create the "nofx review" check run on the head commit, in progress."""
    created = await gh.post(
        "/repos/{owner}/{repo}/check-runs",
        url_vars={"owner": pull.owner, "repo": pull.repo},
        data={
            "name": CHECK_NAME,
            "head_sha": head_sha,
            "external_id": external_id,
            "status": "in_progress",
            "output": {"title": "Reviewing", "summary": "nofx is reviewing this pull request."},
        },
    )
    return int(created["id"])


async def finish_check(
    gh: GitHubAPI,
    pull: PullRef,
    check_run_id: int,
    *,
    conclusion: str,
    title: str,
    summary: str,
    annotations: Sequence[dict[str, Any]] = (),
) -> None:
    """Complete the check run; annotations go 50 per request, the last request carries the conclusion."""
    per = ANNOTATIONS_PER_REQUEST
    batches = [list(annotations[i : i + per]) for i in range(0, len(annotations), per)] or [[]]
    output = {"title": title[:ANNOTATION_TITLE_LIMIT], "summary": _cap(summary)}
    for index, batch in enumerate(batches):
        data: dict[str, Any] = {"output": {**output, "annotations": batch} if batch else output}
        if index == len(batches) - 1:
            data |= {"status": "completed", "conclusion": conclusion}
        await gh.patch(
            "/repos/{owner}/{repo}/check-runs/{check_run_id}",
            url_vars={"owner": pull.owner, "repo": pull.repo, "check_run_id": check_run_id},
            data=data,
        )


def conclusion(severities: Iterable[str], fail_on: str) -> str:
    """failure if any finding reaches `fail_on` (never with `never`), neutral for lesser ones, success for none."""
    found = list(severities)
    if not found:
        return "success"
    return "failure" if any(severity_at_least(s, fail_on) for s in found) else "neutral"


def annotation(finding: ReviewFinding, fail_on: str) -> dict[str, Any]:
    """A check-run annotation: `failure` for findings that fail the check, `warning`/`notice` for the rest."""
    if severity_at_least(finding.severity, fail_on):
        level = "failure"
    else:
        level = "notice" if finding.severity == "low" else "warning"
    end = max(finding.end_line or finding.line, finding.line)
    message = finding.body.strip() or finding.title
    return {
        "path": finding.path,
        "start_line": finding.line,
        "end_line": end,
        "annotation_level": level,
        "message": message[:ANNOTATION_MESSAGE_LIMIT],
        "title": f"[{finding.severity}] {finding.title}"[:ANNOTATION_TITLE_LIMIT],
    }


def check_title(open_findings: Sequence[ReviewFinding], fail_on: str) -> str:
    """`No open findings` / `3 open findings, 1 at or above high`."""
    if not open_findings:
        return "No open findings"
    failing = sum(severity_at_least(f.severity, fail_on) for f in open_findings)
    title = f"{len(open_findings)} open finding{'s' if len(open_findings) != 1 else ''}"
    return title + (f", {failing} at or above {fail_on}" if failing else "")


def _cap(text: str) -> str:
    if text_size(text) <= CHECK_TEXT_LIMIT:
        return text
    return text[: CHECK_TEXT_LIMIT // 2 - 100] + "\n\n[… cut to fit GitHub's size limit …]"
