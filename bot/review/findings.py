"""Review findings from the model's `report_findings` call, merged, deduplicated and placed where GitHub takes them.

Placement is what keeps a review from failing: a line comment is only made for a line the diff shows on that
side, a multi-line comment only when both ends are in one hunk, and everything else goes into the review body.
A ```suggestion block is only made when applying it would replace exactly the lines the model meant, on the new
side, with code that at least parses for Python files.

Every comment and the review body end with a hidden marker holding the fingerprints they carry, so the next
review of the same pull request can leave out what was already said (`posted_fingerprints`).
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import logging
import re
import textwrap
import unicodedata
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath
from typing import Any

from bot.render.text import (
    COMMENT_LIMIT,
    clean_text,
    code_block,
    code_span,
    escape_inline,
    escape_keeping_code,
    text_size,
)
from bot.review.diffs import LEFT, RIGHT, Commentable, Skipped

log = logging.getLogger(__name__)

SEVERITIES = ("low", "medium", "high", "critical")
SEVERITY_ICONS = {"low": "⚪", "medium": "🟡", "high": "🟠", "critical": "🔴"}
TITLE_LIMIT = 200
BODY_LIMIT = 4_000
SUGGESTION_LIMIT = 20_000  # longer suggestions are not shown: a cut suggestion would be wrong code
LIST_SHOWN = 300  # reviewed or skipped files listed in the body before "and N more"
LIST_OPEN = 10  # longer lists are folded into <details>

OUTSIDE = "Outside the diff"
MORE = "More findings"

_FINGERPRINT_MARKER = re.compile(r"^<!-- nofx:findings?:([0-9a-f ]+) -->$")
_FENCE_LINE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_SIMILAR_TITLES = 0.75
_LANGUAGES = {
    ".py": "python",
    ".pyi": "python",
    ".js": "javascript",
    ".mjs": "javascript",
    ".cjs": "javascript",
    ".jsx": "jsx",
    ".ts": "typescript",
    ".tsx": "tsx",
    ".go": "go",
    ".rs": "rust",
    ".rb": "ruby",
    ".java": "java",
    ".kt": "kotlin",
    ".swift": "swift",
    ".c": "c",
    ".h": "c",
    ".cc": "cpp",
    ".cpp": "cpp",
    ".hpp": "cpp",
    ".cs": "csharp",
    ".php": "php",
    ".sh": "bash",
    ".bash": "bash",
    ".sql": "sql",
    ".html": "html",
    ".css": "css",
    ".scss": "scss",
    ".json": "json",
    ".yml": "yaml",
    ".yaml": "yaml",
    ".toml": "toml",
    ".md": "markdown",
    ".tf": "hcl",
}
_PYTHON_SUFFIXES = (".py", ".pyi")

_FINDING = {
    "type": "object",
    "properties": {
        "path": {"type": "string", "minLength": 1, "description": "File path as shown in the diff header."},
        "line": {
            "type": "integer",
            "minimum": 1,
            "description": "New-file line number, as printed before the line in the diff (first line of a range).",
        },
        "end_line": {"type": "integer", "minimum": 1, "description": "Last line of a range, if more than one."},
        "severity": {"type": "string", "enum": list(SEVERITIES)},
        "title": {"type": "string", "minLength": 1, "maxLength": TITLE_LIMIT, "description": "One line."},
        "body": {"type": "string", "maxLength": BODY_LIMIT, "description": "What is wrong and why it matters."},
        "suggestion": {
            "type": "string",
            "description": "Replacement code for exactly the lines line..end_line, with their indentation.",
        },
    },
    "required": ["path", "line", "severity", "title", "body"],
    "additionalProperties": False,
}
REPORT_FINDINGS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"findings": {"type": "array", "items": _FINDING}},
    "required": ["findings"],
    "additionalProperties": False,
}


@dataclass(frozen=True)
class Finding:
    """One problem the model reported. `line`..`end_line` is the range; `side` LEFT means old-file numbers."""

    path: str
    line: int
    end_line: int | None
    severity: str
    title: str
    body: str
    suggestion: str | None = None
    side: str = RIGHT

    @property
    def fingerprint(self) -> str:
        """Stable across pushes and passes: path, normalized title and severity, never the line.

        Lines move whenever earlier code changes, so a line in the key would repost the same finding after every
        push. The cost: a second finding with the same title and severity in the same file counts as posted too.
        """
        key = f"{self.path}\n{_normal_title(self.title)}\n{self.severity}"
        return hashlib.sha256(key.encode("utf-8", errors="surrogatepass")).hexdigest()[:16]

    @property
    def first_line(self) -> int:
        return min(self.line, self.end_line or self.line)

    @property
    def last_line(self) -> int:
        return max(self.line, self.end_line or self.line)


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


# --- from the model --------------------------------------------------------------------------------------------


def parse_findings(tool_input: dict[str, Any]) -> list[Finding]:
    """Findings from a `report_findings` tool input.

    The router has already checked the schema; this still drops (and logs) items it cannot use, so a cached or
    hand-made input cannot crash a review. An optional `side` (RIGHT/LEFT) is read when present.
    """
    items = tool_input.get("findings") if isinstance(tool_input, dict) else None
    if not isinstance(items, list):
        raise ValueError("report_findings input has no `findings` list")
    findings = []
    for index, item in enumerate(items):
        finding = _finding(item)
        if finding is None:
            log.warning("report_findings item %d dropped: %.200r", index, item)
        else:
            findings.append(finding)
    return findings


def _finding(item: object) -> Finding | None:
    if not isinstance(item, dict):
        return None
    path = _clean_path(item.get("path"))
    line, end_line = item.get("line"), item.get("end_line")
    severity = str(item.get("severity") or "").strip().lower()
    title = " ".join(clean_text(item.get("title")).split())
    if not path or not _is_line(line) or severity not in SEVERITIES or not title:
        return None
    if not _is_line(end_line):
        end_line = None
    first, last = min(line, end_line or line), max(line, end_line or line)  # a model sometimes swaps them
    side = str(item.get("side") or RIGHT).upper()
    return Finding(
        path=path,
        line=first,
        end_line=last if last != first else None,
        severity=severity,
        title=_clip(title, TITLE_LIMIT),
        body=_clip(clean_text(item.get("body")).strip(), BODY_LIMIT),
        suggestion=_clean_suggestion(item.get("suggestion")),
        side=side if side in (RIGHT, LEFT) else RIGHT,
    )


def _is_line(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _clean_path(value: object) -> str:
    path = clean_text(value).strip()
    while path.startswith(("./", "/")):
        path = path[1:] if path.startswith("/") else path[2:]
    return path


def _clean_suggestion(value: object) -> str | None:
    """The code alone: no surrounding ``` fence (models add one), no trailing newlines; blank means none."""
    if not isinstance(value, str) or not value.strip():
        return None
    code = clean_text(value)
    lines = code.strip("\n").split("\n")
    if len(lines) >= 2 and _FENCE_LINE.match(lines[0]) and lines[-1].strip() in ("```", "~~~"):
        code = "\n".join(lines[1:-1])
    code = code.rstrip("\n")
    while code.startswith("\n"):
        code = code[1:]
    return code


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _normal_title(title: str) -> str:
    """Lowercase, one space between words, no trailing period: how two passes may word the same title."""
    text = unicodedata.normalize("NFKC", title).casefold()
    return " ".join(text.split()).rstrip(".").strip()


# --- deduplication ---------------------------------------------------------------------------------------------


def severity_at_least(severity: str, threshold: str) -> bool:
    """True if `severity` reaches `threshold` (e.g. `review.fail_on`); the threshold `never` is never reached."""
    if threshold == "never":
        return False
    return _rank(severity) >= _rank(threshold)


def _rank(severity: str) -> int:
    try:
        return SEVERITIES.index(severity)
    except ValueError:
        raise ValueError(f"unknown severity {severity!r}; expected one of {', '.join(SEVERITIES)}") from None


def merge_duplicates(findings: Iterable[Finding]) -> list[Finding]:
    """One finding per problem: same path and side, overlapping lines and a similar title merge into one.

    The merged finding keeps the most severe one's lines, title and suggestion (a suggestion is only valid for
    the lines it was written for) and joins the bodies when they say different things. Order is first seen.
    """
    merged: list[Finding] = []
    for finding in findings:
        for index, kept in enumerate(merged):
            if _same_problem(kept, finding):
                merged[index] = _merge(kept, finding)
                break
        else:
            merged.append(finding)
    return merged


def _same_problem(one: Finding, other: Finding) -> bool:
    if one.path != other.path or one.side != other.side:
        return False
    if one.first_line > other.last_line or other.first_line > one.last_line:
        return False
    a, b = _normal_title(one.title), _normal_title(other.title)
    return a == b or a in b or b in a or difflib.SequenceMatcher(None, a, b).ratio() >= _SIMILAR_TITLES


def _merge(kept: Finding, other: Finding) -> Finding:
    primary, secondary = (other, kept) if _rank(other.severity) > _rank(kept.severity) else (kept, other)
    body = primary.body
    if secondary.body and " ".join(secondary.body.split()) not in " ".join(body.split()):
        body = f"{body}\n\n{secondary.body}" if body else secondary.body
    suggestion = primary.suggestion
    same_lines = (primary.first_line, primary.last_line) == (secondary.first_line, secondary.last_line)
    if suggestion is None and same_lines:
        suggestion = secondary.suggestion
    return replace(primary, body=body, suggestion=suggestion)


def without_already_posted(findings: Iterable[Finding], posted_fingerprints: set[str]) -> list[Finding]:
    """The findings no earlier review of this pull request posted (see `posted_fingerprints`)."""
    return [finding for finding in findings if finding.fingerprint not in posted_fingerprints]


def posted_fingerprints(texts: Iterable[str | None]) -> set[str]:
    """Fingerprints in the markers of earlier review comments and review bodies written by `place`.

    Only marker lines after the last code fence count: a suggestion block holds code from the pull request,
    which could carry a fake marker to silence later findings.
    """
    found: set[str] = set()
    for text in texts:
        lines = clean_text(text).split("\n")
        last_fence = max((index for index, line in enumerate(lines) if _FENCE_LINE.match(line)), default=-1)
        for line in lines[last_fence + 1 :]:
            marker = _FINGERPRINT_MARKER.match(line.strip())
            if marker:
                found.update(marker.group(1).split())
    return found


def fingerprint_marker(fingerprints: Iterable[str]) -> str:
    """The hidden line that records which findings a comment or review body carries."""
    ordered = sorted(set(fingerprints))
    return f"<!-- nofx:findings:{' '.join(ordered)} -->" if ordered else ""


# --- placement -------------------------------------------------------------------------------------------------


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
    ordered = sorted(findings, key=lambda finding: (-_rank(finding.severity), finding.path, finding.first_line))
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
    return replace(placement, body=_review_body(placement))


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
    return replace(result, body=_review_body(result))


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
    comment["body"] = _comment_body(finding, spot)
    return comment


def _comment_body(finding: Finding, spot: _Spot) -> str:
    parts = [f"**{_severity_label(finding.severity)}: {escape_inline(finding.title)}**"]
    if finding.body:
        parts.append(_prose(finding.body))
    finding = replace(finding, suggestion=_clean_suggestion(finding.suggestion))
    if finding.suggestion is not None:
        why_not = _why_not_suggestion(finding, spot)
        parts.append(_suggestion_block(finding.suggestion) if why_not is None else _suggested_change(finding, why_not))
    parts.append(fingerprint_marker([finding.fingerprint]))
    body = "\n\n".join(parts)
    if text_size(body) > COMMENT_LIMIT:  # only a finding made in code can be this long; the schema caps the rest
        note = "*The full text and any suggested change were too long to show.*"
        body = "\n\n".join([parts[0], _prose(_clip(finding.body, 2_000)), note, parts[-1]])
    return body


def _why_not_suggestion(finding: Finding, spot: _Spot) -> str | None:
    """Why the suggestion cannot be a one-click ```suggestion here, or None if it can."""
    code = finding.suggestion or ""
    if spot.side != RIGHT:
        return "it is on a deleted line"
    if not spot.exact:
        return "the comment does not cover exactly the lines it replaces"
    if len(code) > SUGGESTION_LIMIT:
        return "it is too long"
    if spot.path.endswith(_PYTHON_SUFFIXES) and not _parses(code):
        return "it does not parse as Python"
    return None


def _parses(code: str) -> bool:
    """True if the code, dedented (it replaces lines inside some block), is valid Python syntax."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SyntaxWarning for odd escapes is not a reason to refuse
        try:
            ast.parse(textwrap.dedent(code))
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return False
    return True


def _suggestion_block(code: str) -> str:
    """A ```suggestion block holding the code exactly; the fence is longer than any backtick run inside."""
    longest = max((len(run) for run in re.findall(r"`+", code)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}suggestion\n{code}\n{fence}" if code else f"{fence}suggestion\n{fence}"


def _suggested_change(finding: Finding, why_not: str) -> str:
    if len(finding.suggestion or "") > SUGGESTION_LIMIT:
        return "*A suggested change was too long to show.*"
    code = _clean_suggestion(finding.suggestion) or ""
    label = f"Suggested change (not a one-click suggestion: {why_not}):" if why_not else "Suggested change:"
    return f"{label}\n\n{code_block(code, _language(finding.path))}"


def _language(path: str) -> str:
    return _LANGUAGES.get(PurePosixPath(path).suffix.lower(), "text")


def _severity_label(severity: str) -> str:
    return f"{SEVERITY_ICONS.get(severity, '')} {severity.capitalize()}".strip()


_FENCED = re.compile(r"^ {0,3}```[ \t]*([\w+#.-]{0,30})[^\n]*\n(.*?)^ {0,3}```[ \t]*$", re.MULTILINE | re.DOTALL)
_LIST_ITEM = re.compile(r"^\s*([-*+]|\d{1,3}[.)])\s+(.*)$")


def _prose(text: str) -> str:
    """The model's Markdown made safe: `code` spans, fenced blocks and list items kept, everything else escaped."""
    out, last = [], 0
    text = clean_text(text)
    for block in _FENCED.finditer(text):
        out.append(_paragraphs(text[last : block.start()]))
        out.append(code_block(block.group(2).rstrip("\n"), block.group(1) or "text"))
        last = block.end()
    out.append(_paragraphs(text[last:]))
    return "\n\n".join(part for part in out if part)


def _paragraphs(text: str) -> str:
    paragraphs = []
    for paragraph in re.split(r"\n[ \t]*\n", text.strip("\n")):
        lines = []
        for line in paragraph.split("\n"):
            if not line.strip():
                continue
            item = _LIST_ITEM.match(line)
            if item:  # list items stay lists; the marker is ours, the text after it is escaped
                marker = "-" if item.group(1) in "-*+" else item.group(1)[:-1] + "."
                lines.append(f"{marker} {escape_keeping_code(item.group(2))}")
            else:
                lines.append(escape_keeping_code(line))
        if lines:
            paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs)


# --- the review body -------------------------------------------------------------------------------------------

_SECTION_NOTES = {
    OUTSIDE: "GitHub only takes line comments on lines the diff shows, so these are here instead.",
    MORE: "These are beyond the limit of line comments for one review.",
}


def _review_body(placement: Placement) -> str:
    """Summary, the findings that are not line comments, what was reviewed and skipped, the marker."""
    marker = fingerprint_marker(finding.fingerprint for finding, _ in placement.moved)
    for detail in (BODY_LIMIT, 1_000, 200, 0):
        parts = [placement.summary_header.strip()]
        for section in (OUTSIDE, MORE):
            entries = [entry for index, entry in enumerate(placement.moved) if _section(placement, index) == section]
            if entries:
                items = "\n\n".join(_body_finding(finding, why, detail) for finding, why in entries)
                parts.append(f"### {section}\n\n{_SECTION_NOTES[section]}\n\n{items}")
        parts.append(_file_lists(placement.reviewed, placement.skipped))
        parts.append(marker)
        body = "\n\n".join(part for part in parts if part)
        if text_size(body) <= COMMENT_LIMIT:
            return body
    keep = COMMENT_LIMIT - text_size(marker) - 100
    return body[:keep] + "\n\n[… cut to fit GitHub's size limit …]\n\n" + marker


def _section(placement: Placement, index: int) -> str:
    """The body section of `moved[index]`; a Placement built by hand without sections puts everything outside."""
    return placement.sections[index] if index < len(placement.sections) else OUTSIDE


def _body_finding(finding: Finding, why: str, detail: int) -> str:
    where = f"{finding.path}:{finding.first_line}"
    if finding.end_line and finding.last_line != finding.first_line:
        where += f"-{finding.last_line}"
    if finding.side == LEFT:
        where += " (old)"
    head = f"**{_severity_label(finding.severity)}** · {code_span(where)} · {escape_inline(finding.title)}"
    parts = [f"{head}\n*{escape_keeping_code(why)}*"]
    if detail and finding.body:
        parts.append(_prose(_clip(finding.body, detail)))
    if detail and _clean_suggestion(finding.suggestion) is not None:
        parts.append(_suggested_change(finding, ""))
    return "\n\n".join(parts)


def _file_lists(reviewed: Sequence[str], skipped: Sequence[Skipped]) -> str:
    parts = []
    if reviewed:
        noun = "file" if len(reviewed) == 1 else "files"
        parts.append(_listing(f"Reviewed {len(reviewed)} {noun}", [code_span(path) for path in reviewed]))
    else:
        parts.append("No files were reviewed.")
    if skipped:
        entries = [f"{code_span(item.path)} ({escape_keeping_code(item.reason)})" for item in skipped]
        parts.append(_listing(f"Skipped {len(skipped)} {'file' if len(skipped) == 1 else 'files'}", entries))
    return "\n\n".join(parts)


def _listing(title: str, entries: list[str]) -> str:
    """Short lists inline; long ones folded into <details> and cut after `LIST_SHOWN` entries."""
    shown = entries[:LIST_SHOWN]
    if len(entries) > LIST_SHOWN:
        shown.append(f"and {len(entries) - LIST_SHOWN} more")
    if len(entries) <= LIST_OPEN:
        return f"{title}: " + ", ".join(shown) + "."
    items = "\n".join(f"- {entry}" for entry in shown)
    return f"<details><summary>{title}</summary>\n\n{items}\n\n</details>"
