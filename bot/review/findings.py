"""Review findings from the model's `report_findings` call: parsed, merged, deduplicated and fingerprinted.

Every comment and the review body end with a hidden marker holding the fingerprints they carry, so the next
review of the same pull request can leave out what was already said (`posted_fingerprints`).
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, TypeGuard

from bot.render.text import clean_text
from bot.workspace.diffs import LEFT, RIGHT

log = logging.getLogger(__name__)

SEVERITIES = ("low", "medium", "high", "critical")
TITLE_LIMIT = 200
BODY_LIMIT = 4_000
SUGGESTION_LIMIT = 20_000  # longer suggestions are not shown: a cut suggestion would be wrong code

_FINGERPRINT_MARKER = re.compile(r"^<!-- nofx:findings?:([0-9a-f ]+) -->$")
_FENCE_LINE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_SIMILAR_TITLES = 0.75

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
        title=clip(title, TITLE_LIMIT),
        body=clip(clean_text(item.get("body")).strip(), BODY_LIMIT),
        suggestion=clean_suggestion(item.get("suggestion")),
        side=side if side in (RIGHT, LEFT) else RIGHT,
    )


def _is_line(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _clean_path(value: object) -> str:
    path = clean_text(value).strip()
    while path.startswith(("./", "/")):
        path = path[1:] if path.startswith("/") else path[2:]
    return path


def clean_suggestion(value: object) -> str | None:
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


def clip(text: str, limit: int) -> str:
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
    return rank(severity) >= rank(threshold)


def rank(severity: str) -> int:
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
    primary, secondary = (other, kept) if rank(other.severity) > rank(kept.severity) else (kept, other)
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
