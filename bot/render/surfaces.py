"""Every text nofx shows on GitHub, as pure functions: one renderer per surface, no I/O.

The publisher sends what these return. Text that comes from people or from an LLM (requests, errors, step names,
usernames, config values) passes through `escape_markdown`, `code_span` or `code_block` where it is inserted, so it
cannot add HTML, mention anyone, fake the status marker or break out of a code fence. Wording that depends on the
repository's `git_mode` lives in one table, `WORDS`.

Sizes are measured in UTF-16 code units, which is never less than the character count GitHub checks, so every
limit holds however GitHub counts.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

from bot.models import Run, RunStatus, Step, StepStatus, utcnow
from bot.plans import Plan

MARKER_PREFIX = "<!-- nofx:run:"
MARKER_SUFFIX = " -->"
CHECK_NAME = "nofx"

COMMENT_LIMIT = 65_535
CHECK_TITLE_LIMIT = 255
CHECK_TEXT_LIMIT = 65_535  # output.summary and output.text each
MAX_ACTIONS = 3
ACTION_LABEL_LIMIT = 20
ACTION_DESCRIPTION_LIMIT = 40
ACTION_IDENTIFIER_LIMIT = 20

ERROR_TAIL_LINES = 15  # in the status comment
CHECK_TAIL_LINES = 200  # in the check run's text, which has room for more
MAX_NAME_CHARS = 100  # a step name longer than this is shortened where it is shown
MAX_DEPENDENCIES_SHOWN = 5

GIT_MODES = ("hidden", "basic", "advanced")

STATUS_EMOJI: Mapping[RunStatus, str] = {
    RunStatus.queued: "⏳",
    RunStatus.running: "🔄",
    RunStatus.waiting: "✋",
    RunStatus.succeeded: "✅",
    RunStatus.failed: "❌",
    RunStatus.cancelled: "🚫",
}
HEADLINES: Mapping[RunStatus, str] = {
    RunStatus.queued: "nofx has queued this request",
    RunStatus.running: "nofx is working on this",
    RunStatus.waiting: "nofx is waiting for approval",
    RunStatus.succeeded: "nofx is done",
    RunStatus.failed: "nofx could not finish",
    RunStatus.cancelled: "nofx stopped",
}

# GitHub's check run states for each run status; `waiting` is `action_required`, which needs a details_url.
_CHECK_STATES: Mapping[RunStatus, tuple[str, str | None]] = {
    RunStatus.queued: ("queued", None),
    RunStatus.running: ("in_progress", None),
    RunStatus.waiting: ("completed", "action_required"),
    RunStatus.succeeded: ("completed", "success"),
    RunStatus.failed: ("completed", "failure"),
    RunStatus.cancelled: ("completed", "cancelled"),
}
_CHECK_TITLES: Mapping[RunStatus, str] = {
    RunStatus.queued: "Queued",
    RunStatus.running: "Running: {done} of {total} steps done",
    RunStatus.waiting: "Waiting for approval: {done} of {total} steps done",
    RunStatus.succeeded: "Done: {done} of {total} steps",
    RunStatus.failed: "Failed",
    RunStatus.cancelled: "Cancelled",
}
# Labels ≤ 20, descriptions ≤ 40, identifiers ≤ 20 characters: GitHub refuses the whole update otherwise.
_ACTIONS: Mapping[str, dict[str, str]] = {
    "approve": {"label": "Approve", "description": "Let the run continue", "identifier": "approve"},
    "reject": {"label": "Reject", "description": "Stop the run at this step", "identifier": "reject"},
    "cancel": {"label": "Cancel", "description": "Stop the run now", "identifier": "cancel"},
}
_ACTIONS_BY_STATUS: Mapping[RunStatus, tuple[str, ...]] = {
    RunStatus.queued: ("cancel",),
    RunStatus.running: ("cancel",),
    RunStatus.waiting: ("approve", "reject", "cancel"),
}

_DONE = frozenset({StepStatus.succeeded, StepStatus.skipped})
_APPROVAL_TOOL = "manual:approval"


# --- wording by git mode ---------------------------------------------------------------------------------------

_TOOL_WORDS = {
    "codegen": "write the code",
    "workspace:write": "write the files",
    "gate:test": "run the tests",
    "gate:lint": "check the style",
    "gate:typecheck": "check the types",
    "gate:llm_review": "review the changes",
    "manual:approval": "wait for approval",
}


@dataclass(frozen=True)
class Words:
    """How one git mode speaks; the only place where the wording of the modes differs."""

    tools: Mapping[str, str]  # what each tool does, in this mode's words
    ready: str  # success with a review link: {link} {where}
    saved: str  # success without one: {where}
    link_text: str  # the review link's text when no number may be shown
    review_help: str  # what `review` does, for the help list
    names_git: bool  # may say branch, pull request, #number, and show step names that use git words
    details: bool  # also head SHA, commit count, tool ids and the `git <op>` command


WORDS: Mapping[str, Words] = {
    "hidden": Words(
        tools={**_TOOL_WORDS, "git_ops": "save your changes", "git_pr": "get your changes ready for review"},
        ready="Your changes are ready for review: {link}.",
        saved="Your changes are saved.",
        link_text="take a look",
        review_help="review the proposed changes",
        names_git=False,
        details=False,
    ),
    "basic": Words(
        tools={**_TOOL_WORDS, "git_ops": "commit and push the changes", "git_pr": "open a pull request"},
        ready="Your changes are ready for review in pull request {link}{where}.",
        saved="Your changes are saved{where}.",
        link_text="open it",
        review_help="review this pull request",
        names_git=True,
        details=False,
    ),
    "advanced": Words(
        tools={**_TOOL_WORDS, "git_ops": "run git operations", "git_pr": "open a pull request"},
        ready="Pull request {link} is open{where}.",
        saved="Your changes are saved{where}.",
        link_text="open it",
        review_help="review this pull request",
        names_git=True,
        details=True,
    ),
}

# What hidden mode never says. Letter boundaries rather than \b, so `git_pr` and `open-pr` are caught too.
GIT_WORDS = re.compile(
    r"(?<![a-z])(?:git|branch(?:es)?|commit(?:s|ted|ting)?|push(?:es|ed|ing)?|pull[\s_-]*requests?|prs?"
    r"|merg(?:e|es|ed|ing)|rebas(?:e|es|ed|ing)|checkout|cherry[\s_-]*pick)(?![a-z])",
    re.IGNORECASE,
)


def words_for(git_mode: str) -> Words:
    """The wording of a git mode; an unknown mode is a bug in the caller, not something to guess around."""
    try:
        return WORDS[git_mode]
    except KeyError:
        raise ValueError(f"unknown git mode {git_mode!r}; expected one of {', '.join(GIT_MODES)}") from None


# --- escaping --------------------------------------------------------------------------------------------------

# Control characters and bidi overrides: invisible, and able to make text read differently than it is.
_INVISIBLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u202a-\u202e\u2066-\u2069]")
_INLINE_PUNCTUATION = re.compile(r"([\\`*_\[\]|~$])")
_BLOCK_START = re.compile(r"^([ \t]*)([#+=-])", re.MULTILINE)
_ORDERED_START = re.compile(r"^([ \t]*\d+)([.)])", re.MULTILINE)
_BACKTICK_RUN = re.compile(r"`+")
_FENCE_RUN = re.compile(r"`{3,}")
_ZWJ = "\u200d"
_MARKER = re.compile(re.escape(MARKER_PREFIX) + r"([A-Za-z0-9_-]{1,64})" + re.escape(MARKER_SUFFIX))
_RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_LOGIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,38}")
_SHA = re.compile(r"[0-9a-fA-F]{7,64}")
_URL_SAFE = ":/?#[]@!$&'*+,;=%~"


def clean_text(text: object) -> str:
    """Text with Markdown's line endings and without control characters or bidi overrides."""
    if text is None:
        return ""
    text = str(text).replace("\r\n", "\n").replace("\r", "\n")
    return _INVISIBLE.sub("", text)


def escape_markdown(text: object) -> str:
    """Text that renders exactly as written: no HTML, no Markdown syntax, no @mentions, no fake marker.

    HTML is entity-escaped (so `<!--` and `</details>` show as typed), Markdown punctuation is backslash-escaped
    (block markers only at a line start, where they act), and a zero-width joiner after every `@` keeps GitHub
    from notifying people or teams named in someone else's text. Line breaks are kept.
    """
    text = html.escape(clean_text(text), quote=False)
    text = _INLINE_PUNCTUATION.sub(r"\\\1", text)
    text = _BLOCK_START.sub(r"\1\\\2", text)
    text = _ORDERED_START.sub(r"\1\\\2", text)
    return text.replace("@", "@" + _ZWJ)


def escape_inline(text: object) -> str:
    """`escape_markdown` on one line: runs of whitespace, line breaks included, become one space."""
    return escape_markdown(" ".join(clean_text(text).split()))


def code_span(text: object) -> str:
    """Inline code that cannot be closed early: the fence is longer than any run of backticks inside."""
    text = " ".join(clean_text(text).split()).replace("<!--", "<" + _ZWJ + "!--")
    if not text:
        return "` `"
    longest = max((len(run) for run in _BACKTICK_RUN.findall(text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text[0] in "` " or text[-1] in "` " else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def code_block(text: object, info: str = "text") -> str:
    """A fenced block whose content cannot end it: runs of 3+ backticks inside are split by zero-width joiners."""
    body = clean_text(text).replace("<!--", "<" + _ZWJ + "!--")
    body = _FENCE_RUN.sub(lambda found: _ZWJ.join(found.group()), body)
    return f"```{info}\n{body}\n```"


def blockquote(text: object) -> str:
    """A quote of someone's words, escaped; leading indentation is dropped so no line turns into a code block."""
    lines = escape_markdown(clean_text(text).strip("\n")).split("\n")
    return "\n".join(f"> {line.strip()}" if line.strip() else ">" for line in lines)


def mention(user: object) -> str:
    """`@login` for a real GitHub login (a wanted notification); anything else is escaped and notifies nobody."""
    login = clean_text(user)
    return f"@{login}" if _LOGIN.fullmatch(login) else escape_inline(login)


def link(text: str, url: object) -> str:
    """A Markdown link to an http(s) URL; `text` must already be safe. Other URLs are shown, not linked."""
    raw = clean_text(url).strip()
    if urlsplit(raw).scheme not in ("http", "https") or not urlsplit(raw).netloc:
        return f"{text} ({escape_inline(raw)})"
    # Percent-encode what could end the destination early: spaces, parentheses, angle brackets, quotes.
    return f"[{text}]({quote(raw, safe=_URL_SAFE)})"


# --- the status marker -----------------------------------------------------------------------------------------


def status_marker(run_id: str) -> str:
    """The hidden HTML comment that lets nofx find a run's status comment again, instead of posting a second one."""
    if not _RUN_ID.fullmatch(run_id):
        raise ValueError(f"run id {run_id!r} cannot go into a marker")
    return f"{MARKER_PREFIX}{run_id}{MARKER_SUFFIX}"


def find_run_marker(body: str | None) -> str | None:
    """The run id in a comment written by `status_comment`, or None.

    The last marker wins: ours is always the last line, and escaped user text never holds a raw `<!--`.
    """
    if not body:
        return None
    found = _MARKER.findall(body)
    return found[-1] if found else None


# --- durations and times ---------------------------------------------------------------------------------------


def format_duration(seconds: float) -> str:
    """`12.3 s`, `2 min 5 s`, `1 h 4 min`: precise while short, rounded once precision stops mattering."""
    seconds = max(seconds, 0.0)
    if round(seconds, 1) < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 3600:
        minutes, rest = divmod(whole, 60)
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    hours, rest = divmod(whole, 3600)
    minutes = rest // 60
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def _aware(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes in some paths; they are UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return (_aware(end) - _aware(start)).total_seconds()


def _iso(moment: datetime) -> str:
    """The `YYYY-MM-DDTHH:MM:SSZ` form the checks API documents."""
    return _aware(moment).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- sizes -----------------------------------------------------------------------------------------------------


def text_size(text: str) -> int:
    """Length in UTF-16 code units: at least the character count, however GitHub counts characters."""
    return len(text.encode("utf-16-le", errors="surrogatepass")) // 2


def _middle(text: str, limit: int) -> str:
    """`text` with its middle replaced by a note when longer than `limit` characters: both ends tell the most."""
    if len(text) <= limit:
        return text
    cut_note = f"[… {len(text):,} characters, middle cut …]"
    keep = max(limit - len(cut_note) - 2, 0)
    head, tail = keep // 2, keep - keep // 2
    return f"{text[:head]}\n{cut_note}\n{text[len(text) - tail :] if tail else ''}".rstrip("\n")


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _cap(text: str, limit: int, keep_end: str = "") -> str:
    """The last resort after `_fit`: cut the end off, but keep `keep_end` (the marker) as the last line."""
    if text_size(text) <= limit:
        return text
    note = "\n\n[… cut to fit GitHub's size limit …]"
    tail = note + ("\n\n" + keep_end if keep_end else "")
    body = text[: len(text) - len(keep_end)] if keep_end and text.endswith(keep_end) else text
    excess = text_size(body) + text_size(tail) - limit
    return body[: max(len(body) - excess, 0)] + tail


@dataclass(frozen=True)
class _Budget:
    """Characters allowed for the two parts that can be long: someone's request and error or log text."""

    request: int = 4_000
    detail: int = 6_000

    def shrunk(self) -> _Budget:
        """Error text gives way first, then the request; each halves and then disappears."""
        if self.detail:
            return _Budget(self.request, self.detail // 2 if self.detail >= 200 else 0)
        return _Budget(self.request // 2 if self.request >= 200 else 0, 0)

    @property
    def exhausted(self) -> bool:
        return not self.request and not self.detail


def _fit(render: Callable[[_Budget], str], limit: int, budget: _Budget, keep_end: str = "") -> str:
    """Render with smaller and smaller budgets until the text fits GitHub's limit."""
    text = render(budget)
    while text_size(text) > limit and not budget.exhausted:
        budget = budget.shrunk()
        text = render(budget)
    return _cap(text, limit, keep_end)


# --- steps as people read them ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _View:
    """A run's steps in order, with the words of its git mode and the time to measure running steps against."""

    run: Run
    steps: list[Step]
    words: Words
    now: datetime

    @classmethod
    def of(cls, run: Run, steps: Iterable[Step], git_mode: str, now: datetime | None) -> _View:
        ordered = sorted(steps, key=lambda step: step.position)
        return cls(run, ordered, words_for(git_mode), _aware(now) if now else utcnow())

    @property
    def done(self) -> int:
        return sum(step.status in _DONE for step in self.steps)

    def number(self, step: Step) -> int:
        return self.steps.index(step) + 1

    def name_shown(self, name: str) -> bool:
        """Hidden mode does not show a step name that uses git words (`commit`, `open-pr`)."""
        return self.words.names_git or not GIT_WORDS.search(name)

    def ref(self, step: Step) -> str:
        """How a sentence names a step: its name, or its number when the name is not for this audience."""
        return _ref(step.name, self.number(step), self.words)

    def what(self, step: Step, *, tool_id: bool = True) -> str:
        """What the step does; the tool id (advanced mode) only in lists, where it does not nest parentheses."""
        return _what(step.tool, self.words, tool_id=tool_id)

    def state(self, step: Step) -> str:
        """The step's state in a few words, with its duration (running steps: time so far)."""
        status = step.status
        if status == StepStatus.running:
            elapsed = _seconds(step.started_at, self.now)
            return "running" if elapsed is None else f"running for {format_duration(elapsed)}"
        took = _seconds(step.started_at, step.finished_at)
        by = f" by {escape_inline('@' + step.decided_by)}" if step.decided_by else ""
        if status == StepStatus.succeeded:
            if step.tool == _APPROVAL_TOOL and step.decided_by:
                return "approved" + by
            return "done" if took is None else f"done in {format_duration(took)}"
        if status == StepStatus.failed:
            return "failed" if took is None else f"failed after {format_duration(took)}"
        if status == StepStatus.cancelled and step.tool == _APPROVAL_TOOL and step.decided_by:
            return "rejected" + by
        if status == StepStatus.waiting:
            return "waiting for approval" if step.tool == _APPROVAL_TOOL else "waiting"
        return "not started" if status == StepStatus.pending else StepStatus(status).value

    def error_shown(self, text: str | None, tool: str | None) -> bool:
        """Hidden mode shows the repository's own check output as it is, and nofx's own errors only without git words.

        A gate's output is what the person must read to fix their code; an error from the git steps or from nofx
        itself would talk about branches and pushes, so hidden mode points to the run page instead.
        """
        if not text:
            return False
        verbatim = tool is not None and tool.startswith("gate:")
        return self.words.names_git or verbatim or not GIT_WORDS.search(text)


def _ref(name: str, number: int, words: Words) -> str:
    if words.names_git or not GIT_WORDS.search(name):
        return code_span(_shorten(clean_text(name), MAX_NAME_CHARS))
    return f"step {number}"


def _what(tool: str, words: Words, *, tool_id: bool = True) -> str:
    what = words.tools.get(tool) or escape_inline(_shorten(clean_text(tool), MAX_NAME_CHARS))
    return f"{what} ({code_span(tool)})" if words.details and tool_id else what


def _checklist(view: _View) -> str:
    """The plan as a task list; done and skipped steps are ticked, so the list reads as progress."""
    lines = [f"**Plan** ({view.done} of {len(view.steps)} steps done)", ""]
    for step in view.steps:
        tick = "x" if step.status in _DONE else " "
        lines.append(f"- [{tick}] {view.ref(step)} · {view.what(step)} · {view.state(step)}")
    return "\n".join(lines)


@dataclass(frozen=True)
class _Delivered:
    """Where a run's result landed, from the outputs of its git steps."""

    url: str | None = None
    number: int | None = None
    branch: str | None = None
    head_sha: str | None = None
    commits: int | None = None


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


# The step output keys the git steps report, each with the test a value must pass to be shown.
_OUTPUT_KEYS: Mapping[str, Callable[[object], bool]] = {
    "pull_request_url": lambda value: isinstance(value, str) and bool(value),
    "pull_request_number": _whole,
    "branch": lambda value: isinstance(value, str) and bool(value.strip()),
    "head_sha": lambda value: isinstance(value, str) and _SHA.fullmatch(value) is not None,
    "commit_count": _whole,
}


def _delivered(steps: Sequence[Step]) -> _Delivered:
    """Read `pull_request_url`, `pull_request_number`, `branch`, `head_sha`, `commit_count`; later steps win."""
    found: dict[str, Any] = {}
    for step in steps:
        output = step.output if isinstance(step.output, dict) else {}
        for key, accepts in _OUTPUT_KEYS.items():
            if accepts(output.get(key)):
                found[key] = output[key]
    return _Delivered(
        url=found.get("pull_request_url"),
        number=found.get("pull_request_number"),
        branch=found.get("branch"),
        head_sha=found.get("head_sha"),
        commits=found.get("commit_count"),
    )


# --- the sections of a status --------------------------------------------------------------------------------


def queued_behind_note(behind_run_id: str) -> str:
    """Why a run has not started: runs on one thread go one at a time."""
    return f"Queued behind run {code_span(behind_run_id)} — it starts when that run finishes."


def _approval_note(view: _View, prefix: str) -> str:
    """What to do while a run waits: the two commands with the configured prefix, or the check run's buttons."""
    waiting = [step for step in view.steps if step.status == StepStatus.waiting]
    approvals = [step for step in waiting if step.tool == _APPROVAL_TOOL] or waiting
    names = {step.name for step in approvals}
    following = [step for step in view.steps if names & set(step.depends_on or ())]
    before = ""
    if following:
        before = " before nofx goes on to " + _join_words([view.what(step, tool_id=False) for step in following[:3]])
    text = (
        f"**Approval needed**{before}. Reply {code_span(prefix + ' approve')} to continue or "
        f"{code_span(prefix + ' reject [reason]')} to stop, "
        "or use the Approve and Reject buttons of the nofx check run."
    )
    if len(approvals) > 1:
        text += f" Several steps wait; name the one you mean: {code_span(prefix + ' approve <step>')}."
    return text


def _failure_note(view: _View, prefix: str, run_url: str | None, budget: _Budget, *, tail: bool) -> str:
    """Which step failed, the end of its error (when `tail`), and the command that tries again."""
    failed = [step for step in view.steps if step.status == StepStatus.failed]
    if not failed:
        if not view.error_shown(view.run.error, None):
            return "nofx stopped before finishing. " + _on_run_page(run_url)
        return f"nofx stopped before finishing: {escape_inline(_middle(clean_text(view.run.error), budget.detail))}"
    step = failed[0]
    took = _seconds(step.started_at, step.finished_at)
    after = f" after {format_duration(took)}" if took is not None else ""
    parts = [f"**{_capital(view.ref(step))} ({view.what(step, tool_id=False)}) failed{after}.**"]
    error = step.error or view.run.error
    if tail and error and view.error_shown(error, step.tool):
        text, total = _tail(error, ERROR_TAIL_LINES, budget.detail)
        shown = "Its output:" if total <= ERROR_TAIL_LINES else f"The last {ERROR_TAIL_LINES} of {total} lines:"
        parts.append(f"{shown}\n\n{code_block(text)}")
    elif tail and error:
        parts.append(_on_run_page(run_url))
    if len(failed) > 1:
        others = [view.ref(other) for other in failed[1:6]]
        if len(failed) > 6:
            others.append(f"{len(failed) - 6} more")
        parts.append("Also failed: " + _join_words(others) + ".")
    retry = f"{prefix} retry {step.name}" if view.name_shown(step.name) else f"{prefix} retry"
    parts.append(f"To try again: {code_span(retry)}")
    return "\n\n".join(part for part in parts if part.strip())


def _tail(text: str, lines: int, chars: int) -> tuple[str, int]:
    """The last `lines` lines, then the middle cut to `chars`; and how many lines there were."""
    all_lines = clean_text(text).rstrip("\n").split("\n")
    return _middle("\n".join(all_lines[-lines:]), chars), len(all_lines)


def _on_run_page(run_url: str | None) -> str:
    """Where to read an error that is not shown here (hidden mode keeps git talk off GitHub)."""
    return f"The details are on {link('the run page', run_url) if run_url else 'the run page'}."


def _delivered_note(view: _View) -> str:
    """Where the result is: a review link and, as the mode allows, branch, head and commit count."""
    delivered = _delivered(view.steps)
    words = view.words
    where = ""
    if words.names_git and delivered.branch:
        where = f" on branch {code_span(_shorten(clean_text(delivered.branch), 255))}"
    if words.details and delivered.head_sha:
        where += f" at {code_span(delivered.head_sha[:7])}"
    if words.details and delivered.commits is not None:
        where += f" ({delivered.commits} commit{'' if delivered.commits == 1 else 's'})"
    if delivered.url:
        number_shown = words.names_git and delivered.number is not None
        return words.ready.format(
            link=link(f"#{delivered.number}" if number_shown else words.link_text, delivered.url), where=where
        )
    if delivered.branch:
        return words.saved.format(where=where)
    return ""


def _stopped_note(view: _View, budget: _Budget, run_url: str | None) -> str:
    reason = view.run.error
    if not reason:
        return ""
    if not view.error_shown(reason, None):
        return "Stopped. " + _on_run_page(run_url)
    return f"Stopped: {escape_inline(_middle(clean_text(reason), budget.detail))}."


def _status_notes(
    view: _View, *, prefix: str, run_url: str | None, behind_id: str | None, budget: _Budget, tail: bool
) -> list[str]:
    status = view.run.status
    if status == RunStatus.queued:
        return [queued_behind_note(behind_id)] if behind_id else []
    if status == RunStatus.waiting:
        return [_approval_note(view, prefix)]
    if status == RunStatus.failed:
        return [_failure_note(view, prefix, run_url, budget, tail=tail)]
    if status == RunStatus.succeeded:
        return [_delivered_note(view)]
    if status == RunStatus.cancelled:
        return [_stopped_note(view, budget, run_url)]
    return []


def _request_section(request: str, budget: _Budget) -> str:
    if not budget.request:
        return "> (the request is too long to show here)"
    return blockquote(_middle(clean_text(request).strip(), budget.request))


def _capital(text: str) -> str:
    """`step 3` starts a sentence as `Step 3`; a code span is left as it is."""
    return text[:1].upper() + text[1:]


def _join_words(items: Sequence[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _paragraphs(*parts: str) -> str:
    return "\n\n".join(part for part in parts if part)


# --- the surfaces ----------------------------------------------------------------------------------------------


def status_comment(
    run: Run,
    steps: list[Step],
    *,
    git_mode: str,
    run_url: str | None,
    behind: Run | None = None,
    now: datetime | None = None,
    prefix: str = "/nofx",
) -> str:
    """The one comment per run, edited in place as it moves; the marker on its last line finds it again."""
    view = _View.of(run, steps, git_mode, now)
    marker = status_marker(run.id)
    behind_id = behind.id if behind is not None else run.behind_run_id
    footer = f"{link('Details', run_url)} · run {code_span(run.id)}" if run_url else f"Run {code_span(run.id)}"

    def render(budget: _Budget) -> str:
        return _paragraphs(
            f"### {STATUS_EMOJI[run.status]} {HEADLINES[run.status]}",
            _request_section(run.request, budget),
            f"Asked by {mention(run.requester)}.",
            _checklist(view) if view.steps else "",
            *_status_notes(view, prefix=prefix, run_url=run_url, behind_id=behind_id, budget=budget, tail=True),
            footer,
            marker,
        )

    return _fit(render, COMMENT_LIMIT, _Budget(), keep_end=marker)


def run_status_summary(
    run: Run,
    steps: list[Step],
    git_mode: str,
    run_url: str | None,
    *,
    now: datetime | None = None,
    prefix: str = "/nofx",
) -> str:
    """The short answer to `/nofx status`: where the run is and what to do next, without the request or log."""
    view = _View.of(run, steps, git_mode, now)
    current = [step for step in view.steps if step.status in (StepStatus.running, StepStatus.waiting)]
    progress = f"{view.done} of {len(view.steps)} steps done"
    if current:
        progress += "; now " + _join_words([f"{view.ref(step)} ({view.state(step)})" for step in current[:3]])
    headline = f"{STATUS_EMOJI[run.status]} Run {code_span(run.id)} is {RunStatus(run.status).value}: {progress}."

    def render(budget: _Budget) -> str:
        return _paragraphs(
            headline,
            *_status_notes(
                view, prefix=prefix, run_url=run_url, behind_id=run.behind_run_id, budget=budget, tail=False
            ),
            link("Details", run_url) if run_url else "",
        )

    return _fit(render, COMMENT_LIMIT, _Budget(request=0, detail=2_000))


def check_run(
    run: Run,
    steps: list[Step],
    *,
    git_mode: str,
    run_url: str | None,
    prefix: str = "/nofx",
    now: datetime | None = None,
) -> dict[str, Any]:
    """The body of a check-runs create or update call (the publisher adds `head_sha` when creating).

    A waiting run is `completed` / `action_required`, which GitHub only accepts with a `details_url`; without a
    run page it stays `in_progress` and the Approve / Reject / Cancel buttons still work.
    """
    view = _View.of(run, steps, git_mode, now)
    status, conclusion = _CHECK_STATES[run.status]
    if conclusion == "action_required" and not run_url:
        status, conclusion = "in_progress", None
    body: dict[str, Any] = {"name": CHECK_NAME, "external_id": run.id, "status": status}
    if run_url:
        body["details_url"] = run_url
    if conclusion:
        body["conclusion"] = conclusion
    if run.started_at:
        body["started_at"] = _iso(run.started_at)
    if status == "completed" and run.finished_at:
        body["completed_at"] = _iso(run.finished_at)

    def summary(budget: _Budget) -> str:
        return _paragraphs(
            _request_section(run.request, budget),
            f"Asked by {escape_inline('@' + clean_text(run.requester))}.",
            _checklist(view) if view.steps else "",
            *_status_notes(
                view, prefix=prefix, run_url=run_url, behind_id=run.behind_run_id, budget=budget, tail=False
            ),
        )

    body["output"] = {
        "title": _check_title(view),
        "summary": _fit(summary, CHECK_TEXT_LIMIT, _Budget(detail=2_000)),
        "text": _fit(lambda budget: _check_text(view, run_url, budget), CHECK_TEXT_LIMIT, _Budget(detail=60_000)),
    }
    body["actions"] = [dict(_ACTIONS[key]) for key in _ACTIONS_BY_STATUS.get(run.status, ())][:MAX_ACTIONS]
    return body


def _check_title(view: _View) -> str:
    """Plain text (the check run page does not render Markdown in titles), at most 255 characters."""
    title = _CHECK_TITLES[view.run.status].format(done=view.done, total=len(view.steps))
    failed = [step for step in view.steps if step.status == StepStatus.failed]
    if view.run.status == RunStatus.failed and failed:
        step = failed[0]
        name = clean_text(step.name) if view.name_shown(step.name) else str(view.number(step))
        title = f"Failed at step {' '.join(name.split())} ({view.words.tools.get(step.tool, step.tool)})"
    return _shorten(title, CHECK_TITLE_LIMIT)


def _check_text(view: _View, run_url: str | None, budget: _Budget) -> str:
    """The output tail of each failed step, with more lines than the comment has room for."""
    failed = [step for step in view.steps if step.status == StepStatus.failed]
    if not failed:
        return "No step has failed." if view.run.status != RunStatus.failed else "No step output to show."
    each = budget.detail // len(failed)
    parts = []
    for step in failed:
        heading = f"### {_capital(view.ref(step))} ({view.what(step, tool_id=False)})"
        if not step.error:
            parts.append(f"{heading}\n\nThe step left no output.")
        elif not view.error_shown(step.error, step.tool):
            parts.append(f"{heading}\n\n{_on_run_page(run_url)}")
        else:
            text, total = _tail(step.error, CHECK_TAIL_LINES, each)
            shown = "Its output:" if total <= CHECK_TAIL_LINES else f"The last {CHECK_TAIL_LINES} of {total} lines:"
            parts.append(f"{heading}\n\n{shown}\n\n{code_block(text)}")
    return "\n\n".join(parts)


def plan_comment(plan: Plan, *, request: str, git_mode: str, prefix: str = "/nofx") -> str:
    """The answer to `/nofx plan …`: what would run, in order, and where it would stop for approval."""
    words = words_for(git_mode)
    numbers = {step.name: index for index, step in enumerate(plan.steps, start=1)}
    lines = []
    for index, step in enumerate(plan.steps, start=1):
        line = f"{index}. {_ref(step.name, index, words)} · {_what(step.tool, words)}"
        if step.depends_on:
            refs = [_ref(name, numbers.get(name, 0), words) for name in step.depends_on[:MAX_DEPENDENCIES_SHOWN]]
            if len(step.depends_on) > MAX_DEPENDENCIES_SHOWN:
                refs.append(f"{len(step.depends_on) - MAX_DEPENDENCIES_SHOWN} more")
            line += " · after " + _join_words(refs)
        if step.tool == _APPROVAL_TOOL:
            line += " · ✋ needs approval"
        lines.append(line)
    approvals = [_ref(s.name, i, words) for i, s in enumerate(plan.steps, start=1) if s.tool == _APPROVAL_TOOL]
    if approvals:
        approval_note = (
            f"Needs approval: {_join_words(approvals[:10])}. The run stops there until someone replies "
            f"{code_span(prefix + ' approve')}."
        )
    else:
        approval_note = "No step needs approval."
    one_line = " ".join(clean_text(request).split())
    command = f"{prefix} {one_line}" if one_line and len(one_line) <= 200 else f"{prefix} <request>"

    def render(budget: _Budget) -> str:
        return _paragraphs(
            "### 📋 nofx plan",
            _request_section(request, budget),
            f"**Goal:** {escape_inline(_middle(clean_text(plan.goal), budget.detail))}",
            "\n".join(lines),
            approval_note,
            f"Nothing has run. Reply {code_span(command)} to run it.",
        )

    return _fit(render, COMMENT_LIMIT, _Budget(request=4_000, detail=2_000))


def help_comment(prefix: str, *, git_mode: str) -> str:
    """The command list, in the repository's prefix; `git <op>` only where the mode allows git operations."""
    words = words_for(git_mode)
    commands = [
        ("add a shopping cart", "ask for a change: nofx plans it, does it and reports here"),
        ("plan <request>", "show the plan for a request without running anything"),
        ("review", words.review_help),
        ("approve [step]", "let a run that waits for approval continue"),
        ("reject [reason]", "stop a run that waits for approval"),
        ("retry [step]", "run a failed step again, and the steps after it"),
        ("cancel", "stop the run in progress"),
        ("status", "show where the current run is"),
        ("help", "show this list"),
    ]
    if words.details:
        commands.append(("git <op> [args]", "run a git operation on the run's branch"))
    lines = [f"- {code_span(f'{prefix} {usage}')} — {what}" for usage, what in commands]
    return _paragraphs("### nofx commands", "\n".join(lines))


def permission_refused(user: str, minimum: str) -> str:
    """The reply to someone who may not trigger nofx; the mention is wanted, so they see the answer."""
    return (
        f"{mention(user)}, only people with *{escape_inline(minimum)}* access (or higher) to this repository "
        "can ask nofx to act. A maintainer can run the command instead."
    )


def not_allowed(user: str, action: str, *, minimum: str | None = None) -> str:
    """The reply to an approve, reject, retry or cancel from someone without the permission for it."""
    needed = f"*{escape_inline(minimum)}* access (or higher)" if minimum else "more access"
    return (
        f"{mention(user)}, you cannot {escape_inline(action)} this run: that needs {needed} to this repository. "
        "A maintainer can do it instead."
    )


def nothing_to_do(what: str) -> str:
    """A command that found nothing to act on, e.g. an approval with no run waiting."""
    return escape_keeping_code(what)


def config_error(error_text: str) -> str:
    """Why a run did not start: `.github/nofx.yml` is invalid. The git mode is unknown here, so no mode wording."""
    prefix = "`.github/nofx.yml`: "
    text = clean_text(error_text)
    text = text[len(prefix) :] if text.startswith(prefix) else text
    return (
        f"nofx could not read `.github/nofx.yml`: {escape_keeping_code(_shorten(text, 4_000))}\n\n"
        "Nothing was run. Fix the file on the default branch and try again."
    )


def plan_refused(error_text: str, *, prefix: str = "/nofx") -> str:
    """Why a request did not run: its plan failed validation before anything ran."""
    return (
        f"nofx could not make a plan it can run safely: {escape_keeping_code(_shorten(clean_text(error_text), 4_000))}"
        f"\n\nNothing was run. Rephrase the request and try again; {code_span(prefix + ' plan <request>')} "
        "shows the plan without running it."
    )


_CODE_IN_MESSAGE = re.compile(r"`([^`\n]+)`")


def escape_keeping_code(text: object) -> str:
    """Escape a message of ours that quotes values in backticks: each `quoted` part stays inline code.

    Config and plan errors quote keys and values the person wrote; the backticks are ours, the contents are not,
    so each part goes through `code_span` or `escape_markdown`. A value with its own backticks can only make the
    formatting odd, never inject anything.
    """
    text = " ".join(clean_text(text).split())
    parts, last = [], 0
    for found in _CODE_IN_MESSAGE.finditer(text):
        parts.append(escape_markdown(text[last : found.start()]))
        parts.append(code_span(found.group(1)))
        last = found.end()
    parts.append(escape_markdown(text[last:]))
    return "".join(parts)
