"""Where each finding goes: a line comment GitHub will take, or the review body, and the 422 fallback.

Placement is what keeps a review from failing: a line comment is only made for a line the diff shows on that
side, a multi-line comment only when both ends are in one hunk, and everything else goes into the review body.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from bot.review.chunks import Skipped
from bot.review.comment_text import MORE, OUTSIDE, comment_body, review_body
from bot.review.commentable import Commentable
from bot.review.findings import Finding, rank
from bot.workspace.diffs import LEFT, RIGHT


@dataclass(frozen=True)
class Placement:
    """A review ready for `POST /pulls/{n}/reviews`: `comments` and `body`, and which findings went to the body.

    `placed[i]` is the finding behind `comments[i]`; with `sections`, `reviewed`, `skipped` and `summary_header`
    it lets `move_to_body` rebuild the body after GitHub refuses some comments.
    """

    comments: list[dict[str, Any]]
    body: str
    moved: list[tuple[Finding, str]]
    placed: list[Finding] = field(default_factory=list)
    sections: list[str] = field(default_factory=list)  # OUTSIDE or MORE, one per `moved` entry
    reviewed: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    summary_header: str = ""

    @property
    def fingerprints(self) -> set[str]:
        """Every finding this review posts, as a comment or in the body: what the next review leaves out."""
        return {finding.fingerprint for finding in self.placed} | {finding.fingerprint for finding, _ in self.moved}


@dataclass(frozen=True)
class _Spot:
    """Where one finding goes as a line comment, and whether a suggestion there replaces exactly its lines."""

    path: str
    side: str
    line: int
    start_line: int | None
    exact: bool


def place(
    findings: Iterable[Finding],
    commentable: Commentable,
    *,
    max_comments: int,
    reviewed: Sequence[str],
    skipped: Sequence[Skipped],
    summary_header: str = "",
) -> Placement:
    """Line comments for findings GitHub will take, the rest in the body; most severe first.

    A finding is a line comment when some line of its range is commentable on its side (a LEFT side for a
    removed file's lines even when the model did not say so). It is a multi-line comment only when both ends
    are commentable in one hunk. Findings beyond `max_comments` go to "More findings", the rest of the
    uncommentable ones to "Outside the diff".
    """
    ordered = sorted(findings, key=lambda finding: (-rank(finding.severity), finding.path, finding.first_line))
    comments: list[dict[str, Any]] = []
    placed: list[Finding] = []
    moved: list[tuple[Finding, str]] = []
    sections: list[str] = []
    for finding in ordered:
        spot = _spot(finding, commentable)
        if spot is not None:
            finding = replace(finding, path=spot.path, side=spot.side)  # the diff's spelling, for the fingerprint
        if spot is None:
            moved.append((finding, _outside_reason(finding, commentable)))
            sections.append(OUTSIDE)
        elif len(comments) >= max_comments:
            moved.append((finding, f"over the limit of {max(max_comments, 0)} line comments (`review.max_comments`)"))
            sections.append(MORE)
        else:
            placed.append(finding)
            comments.append(_comment(finding, spot))
    placement = Placement(
        comments=comments,
        body="",
        moved=moved,
        placed=placed,
        sections=sections,
        reviewed=list(reviewed),
        skipped=list(skipped),
        summary_header=summary_header,
    )
    return replace(placement, body=_body(placement))


def move_to_body(placement: Placement, bad_indexes: set[int] | None) -> Placement:
    """The same review with the given comments (all when None) moved to "Outside the diff", for a 422 retry."""
    bad = set(range(len(placement.comments))) if bad_indexes is None else set(bad_indexes)
    keep = [index for index in range(len(placement.comments)) if index not in bad]
    gone = [placement.placed[index] for index in sorted(bad) if 0 <= index < len(placement.placed)]
    reason = "GitHub refused it as a line comment"
    moved = [*placement.moved, *((finding, reason) for finding in gone)]
    result = replace(
        placement,
        comments=[placement.comments[index] for index in keep],
        placed=[placement.placed[index] for index in keep],
        moved=moved,
        sections=[*placement.sections, *(OUTSIDE for _ in gone)],
    )
    return replace(result, body=_body(result))


def _spot(finding: Finding, commentable: Commentable) -> _Spot | None:
    path = _known_path(finding.path, commentable)
    if path is None:
        return None
    side = finding.side
    first, last = finding.first_line, finding.last_line
    if side == RIGHT and (path, RIGHT) not in commentable.lines:
        side = LEFT  # a removed file has only old lines; the model can only have meant those
    lines = commentable.lines.get((path, side), set())
    inside = sorted(number for number in lines if first <= number <= last)
    if not inside:
        return None
    if last > first and first in lines and last in lines and commentable.same_hunk(path, side, first, last):
        return _Spot(path, side, last, first, exact=True)
    return _Spot(path, side, inside[0], None, exact=first == last == inside[0])


def _known_path(path: str, commentable: Commentable) -> str | None:
    """The diff's own spelling of a path the model gave, allowing for a leftover `a/` or `b/` prefix."""
    paths = commentable.paths
    if path in paths:
        return path
    if path[:2] in ("a/", "b/") and path[2:] in paths:
        return path[2:]
    return None


def _outside_reason(finding: Finding, commentable: Commentable) -> str:
    if _known_path(finding.path, commentable) is None:
        return "the file is not changed in this pull request"
    lines = f"lines {finding.first_line}-{finding.last_line}" if finding.end_line else f"line {finding.line}"
    return f"{lines} not in the diff"


def _comment(finding: Finding, spot: _Spot) -> dict[str, Any]:
    comment: dict[str, Any] = {"path": spot.path, "line": spot.line, "side": spot.side}
    if spot.start_line is not None and spot.start_line < spot.line:
        comment["start_line"] = spot.start_line
        comment["start_side"] = spot.side
    comment["body"] = comment_body(finding, side=spot.side, exact=spot.exact)
    return comment


def _body(placement: Placement) -> str:
    return review_body(
        placement.moved, placement.sections, placement.reviewed, placement.skipped, placement.summary_header
    )
