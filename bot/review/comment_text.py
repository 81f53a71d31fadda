"""The Markdown of a review: each line comment with its suggestion, and the review body with what was skipped.

A ```suggestion block is only made when applying it would replace exactly the lines the model meant, on the new
side, with code that at least parses for Python files. The model's text is escaped, keeping only code and lists.
"""

from __future__ import annotations

import ast
import re
import textwrap
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import PurePosixPath

from bot.render.text import (
    COMMENT_LIMIT,
    clean_text,
    code_block,
    code_span,
    escape_inline,
    escape_keeping_code,
    text_size,
)
from bot.review.chunks import Skipped
from bot.review.findings import BODY_LIMIT, SUGGESTION_LIMIT, Finding, clean_suggestion, clip, fingerprint_marker
from bot.workspace.diffs import LEFT, RIGHT

SEVERITY_ICONS = {"low": "⚪", "medium": "🟡", "high": "🟠", "critical": "🔴"}
LIST_SHOWN = 300  # reviewed or skipped files listed in the body before "and N more"
LIST_OPEN = 10  # longer lists are folded into <details>

OUTSIDE = "Outside the diff"
MORE = "More findings"

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


def comment_body(finding: Finding, *, side: str, exact: bool) -> str:
    """A line comment's text: `exact` when it covers exactly the lines the finding means, on `side`."""
    parts = [f"**{_severity_label(finding.severity)}: {escape_inline(finding.title)}**"]
    if finding.body:
        parts.append(_prose(finding.body))
    finding = replace(finding, suggestion=clean_suggestion(finding.suggestion))
    if finding.suggestion is not None:
        why_not = _why_not_suggestion(finding, side, exact)
        parts.append(_suggestion_block(finding.suggestion) if why_not is None else _suggested_change(finding, why_not))
    parts.append(fingerprint_marker([finding.fingerprint]))
    body = "\n\n".join(parts)
    if text_size(body) > COMMENT_LIMIT:  # only a finding made in code can be this long; the schema caps the rest
        note = "*The full text and any suggested change were too long to show.*"
        body = "\n\n".join([parts[0], _prose(clip(finding.body, 2_000)), note, parts[-1]])
    return body


def _why_not_suggestion(finding: Finding, side: str, exact: bool) -> str | None:
    """Why the suggestion cannot be a one-click ```suggestion here, or None if it can."""
    code = finding.suggestion or ""
    if side != RIGHT:
        return "it is on a deleted line"
    if not exact:
        return "the comment does not cover exactly the lines it replaces"
    if len(code) > SUGGESTION_LIMIT:
        return "it is too long"
    if finding.path.endswith(_PYTHON_SUFFIXES) and not _parses(code):
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
    code = clean_suggestion(finding.suggestion) or ""
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


def review_body(
    moved: Sequence[tuple[Finding, str]],
    sections: Sequence[str],
    reviewed: Sequence[str],
    skipped: Sequence[Skipped],
    summary_header: str,
) -> str:
    """Summary, the findings that are not line comments, what was reviewed and skipped, the marker.

    `sections[i]` (OUTSIDE or MORE) is where `moved[i]` goes; a finding without one goes outside.
    """
    marker = fingerprint_marker(finding.fingerprint for finding, _ in moved)
    for detail in (BODY_LIMIT, 1_000, 200, 0):
        parts = [summary_header.strip()]
        for section in (OUTSIDE, MORE):
            entries = [
                entry
                for index, entry in enumerate(moved)
                if (sections[index] if index < len(sections) else OUTSIDE) == section
            ]
            if entries:
                items = "\n\n".join(_body_finding(finding, why, detail) for finding, why in entries)
                parts.append(f"### {section}\n\n{_SECTION_NOTES[section]}\n\n{items}")
        parts.append(_file_lists(reviewed, skipped))
        parts.append(marker)
        body = "\n\n".join(part for part in parts if part)
        if text_size(body) <= COMMENT_LIMIT:
            return body
    keep = COMMENT_LIMIT - text_size(marker) - 100
    return body[:keep] + "\n\n[… cut to fit GitHub's size limit …]\n\n" + marker


def _body_finding(finding: Finding, why: str, detail: int) -> str:
    where = f"{finding.path}:{finding.first_line}"
    if finding.end_line and finding.last_line != finding.first_line:
        where += f"-{finding.last_line}"
    if finding.side == LEFT:
        where += " (old)"
    head = f"**{_severity_label(finding.severity)}** · {code_span(where)} · {escape_inline(finding.title)}"
    parts = [f"{head}\n*{escape_keeping_code(why)}*"]
    if detail and finding.body:
        parts.append(_prose(clip(finding.body, detail)))
    if detail and clean_suggestion(finding.suggestion) is not None:
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
