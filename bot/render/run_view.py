"""A run's steps as people read them, and the notes (approval, failure, result) both run surfaces share."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.models import Run, RunStatus, Step, StepStatus, utcnow
from bot.render.ci import CI_TOOL, ci_note, waiting_for_ci
from bot.render.text import (
    TextBudget,
    aware,
    blockquote,
    capital,
    clean_text,
    code_block,
    code_span,
    escape_inline,
    format_duration,
    join_words,
    link,
    middle,
    seconds_between,
    shorten,
)
from bot.render.words import GIT_WORDS, MAX_NAME_CHARS, Words, step_ref, tool_words, words_for

UNISOLATED_NOTE = "⚠️ Repository code ran without isolation: the operator turned the sandbox off (`NOFX_SANDBOX=none`)."
ERROR_TAIL_LINES = 15  # in the status comment

STATUS_EMOJI: Mapping[RunStatus, str] = {
    RunStatus.queued: "⏳",
    RunStatus.running: "🔄",
    RunStatus.waiting: "✋",
    RunStatus.succeeded: "✅",
    RunStatus.failed: "❌",
    RunStatus.cancelled: "🚫",
}

_DONE = frozenset({StepStatus.succeeded, StepStatus.skipped})
APPROVAL_TOOL = "manual:approval"

_SHA = re.compile(r"[0-9a-fA-F]{7,64}")


@dataclass(frozen=True)
class RunView:
    """A run's steps in order, with the words of its git mode and the time to measure running steps against."""

    run: Run
    steps: list[Step]
    words: Words
    now: datetime

    @classmethod
    def of(cls, run: Run, steps: Iterable[Step], git_mode: str, now: datetime | None) -> RunView:
        ordered = sorted(steps, key=lambda step: step.position)
        return cls(run, ordered, words_for(git_mode), aware(now) if now else utcnow())

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
        return step_ref(step.name, self.number(step), self.words)

    def what(self, step: Step, *, tool_id: bool = True) -> str:
        """What the step does; the tool id (advanced mode) only in lists, where it does not nest parentheses."""
        return tool_words(step.tool, self.words, tool_id=tool_id)

    def state(self, step: Step) -> str:
        """The step's state in a few words, with its duration (running steps: time so far)."""
        status = step.status
        if status == StepStatus.running:
            elapsed = seconds_between(step.started_at, self.now)
            return "running" if elapsed is None else f"running for {format_duration(elapsed)}"
        took = seconds_between(step.started_at, step.finished_at)
        by = f" by {escape_inline('@' + step.decided_by)}" if step.decided_by else ""
        if status == StepStatus.succeeded:
            if step.tool == APPROVAL_TOOL and step.decided_by:
                return "approved" + by
            return "done" if took is None else f"done in {format_duration(took)}"
        if status == StepStatus.failed:
            return "failed" if took is None else f"failed after {format_duration(took)}"
        if status == StepStatus.cancelled and step.tool == APPROVAL_TOOL and step.decided_by:
            return "rejected" + by
        if status == StepStatus.waiting:
            return {APPROVAL_TOOL: "waiting for approval", CI_TOOL: "waiting for CI"}.get(step.tool, "waiting")
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


def checklist(view: RunView) -> str:
    """The plan as a task list; done and skipped steps are ticked, so the list reads as progress."""
    lines = [f"**Plan** ({view.done} of {len(view.steps)} steps done)", ""]
    for step in view.steps:
        tick = "x" if step.status in _DONE else " "
        lines.append(f"- [{tick}] {view.ref(step)} · {view.what(step)} · {view.state(step)}")
        lines += _repair_lines(step, names_git=view.words.names_git)
        if step.tool == "setup" and isinstance(step.output, dict):
            lines += _setup_lines(step.output)
    return "\n".join(lines)


def _setup_lines(output: dict[str, Any]) -> list[str]:
    """Whether setup was reused, and which of the run's `setup_cache_key` files it did not install: setup runs on
    the base commit only, so the gates see the base's dependencies."""
    lines = []
    if output.get("cached") is True:
        lines.append("  - reused from an earlier run: the `setup_cache_key` files did not change")
    changed = [clean_text(f) for f in output.get("changed_key_files") or [] if isinstance(f, str)]
    if changed:
        names = ", ".join(code_span(shorten(f, MAX_NAME_CHARS)) for f in changed[:5])
        more = f" and {len(changed) - 5} more" if len(changed) > 5 else ""
        lines.append(
            f"  - this run changes {names}{more}; setup installed the base commit's instead, because it runs only "
            "the base's files (it has network): the checks run against those"
        )
    return lines


def _repair_lines(step: Step, *, names_git: bool) -> list[str]:
    """A gate's repair attempts under it: what each changed and whether the checks then passed."""
    repairs = step.output.get("repairs") if isinstance(step.output, dict) else None
    lines = []
    for item in repairs if isinstance(repairs, list) else []:
        if not isinstance(item, dict) or not _whole(item.get("attempt")):
            continue
        files = [clean_text(f) for f in item.get("files") or [] if isinstance(f, str)]
        changed = (
            "changed " + ", ".join(code_span(shorten(f, MAX_NAME_CHARS)) for f in files[:5]) if files else "no change"
        )
        if len(files) > 5:
            changed += f" and {len(files) - 5} more"
        verdict = "checks passed" if item.get("passed") is True else "still failing"
        if item.get("passed") is None and item.get("head_sha"):  # a CI repair, pushed: CI has not judged it yet
            verdict = "waiting for CI"
            if names_git:
                verdict = f"pushed {code_span(str(item['head_sha'])[:7])}, waiting for CI"
        lines.append(f"  - repair {item['attempt']}: {changed} · {verdict}")
    return lines


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


def _approval_note(view: RunView, prefix: str) -> str:
    """What to do while a run waits: the two commands with the configured prefix, or the check run's buttons."""
    waiting = [step for step in view.steps if step.status == StepStatus.waiting]
    approvals = [step for step in waiting if step.tool == APPROVAL_TOOL] or waiting
    names = {step.name for step in approvals}
    following = [step for step in view.steps if names & set(step.depends_on or ())]
    before = ""
    if following:
        before = " before nofx goes on to " + join_words([view.what(step, tool_id=False) for step in following[:3]])
    text = (
        f"**Approval needed**{before}. Reply {code_span(prefix + ' approve')} to continue or "
        f"{code_span(prefix + ' reject [reason]')} to stop, "
        "or use the Approve and Reject buttons of the nofx check run."
    )
    if len(approvals) > 1:
        text += f" Several steps wait; name the one you mean: {code_span(prefix + ' approve <step>')}."
    return text


def _failure_note(view: RunView, prefix: str, run_url: str | None, budget: TextBudget, *, tail: bool) -> str:
    """Which step failed, the end of its error (when `tail`), and the command that tries again."""
    failed = [step for step in view.steps if step.status == StepStatus.failed]
    if not failed:
        if not view.error_shown(view.run.error, None):
            return "nofx stopped before finishing. " + on_run_page(run_url)
        return f"nofx stopped before finishing: {escape_inline(middle(clean_text(view.run.error), budget.detail))}"
    step = failed[0]
    took = seconds_between(step.started_at, step.finished_at)
    after = f" after {format_duration(took)}" if took is not None else ""
    parts = [f"**{capital(view.ref(step))} ({view.what(step, tool_id=False)}) failed{after}.**"]
    error = step.error or view.run.error
    if tail and error and view.error_shown(error, step.tool):
        text, total = output_tail(error, ERROR_TAIL_LINES, budget.detail)
        shown = "Its output:" if total <= ERROR_TAIL_LINES else f"The last {ERROR_TAIL_LINES} of {total} lines:"
        parts.append(f"{shown}\n\n{code_block(text)}")
    elif tail and error:
        parts.append(on_run_page(run_url))
    if len(failed) > 1:
        others = [view.ref(other) for other in failed[1:6]]
        if len(failed) > 6:
            others.append(f"{len(failed) - 6} more")
        parts.append("Also failed: " + join_words(others) + ".")
    retry = f"{prefix} retry {step.name}" if view.name_shown(step.name) else f"{prefix} retry"
    parts.append(f"To try again: {code_span(retry)}")
    return "\n\n".join(part for part in parts if part.strip())


def output_tail(text: str, lines: int, chars: int) -> tuple[str, int]:
    """The last `lines` lines, then the middle cut to `chars`; and how many lines there were."""
    all_lines = clean_text(text).rstrip("\n").split("\n")
    return middle("\n".join(all_lines[-lines:]), chars), len(all_lines)


def on_run_page(run_url: str | None) -> str:
    """Where to read an error that is not shown here (hidden mode keeps git talk off GitHub)."""
    return f"The details are on {link('the run page', run_url) if run_url else 'the run page'}."


def _delivered_note(view: RunView) -> str:
    """Where the result is: a review link and, as the mode allows, branch, head and commit count."""
    delivered = _delivered(view.steps)
    words = view.words
    where = ""
    if words.names_git and delivered.branch:
        where = f" on branch {code_span(shorten(clean_text(delivered.branch), 255))}"
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


def _stopped_note(view: RunView, budget: TextBudget, run_url: str | None) -> str:
    reason = view.run.error
    if not reason:
        return ""
    if not view.error_shown(reason, None):
        return "Stopped. " + on_run_page(run_url)
    return f"Stopped: {escape_inline(middle(clean_text(reason), budget.detail))}."


def status_notes(
    view: RunView, *, prefix: str, run_url: str | None, behind_id: str | None, budget: TextBudget, tail: bool
) -> list[str]:
    """What the run's state asks of the reader, after a warning when repository code ran without the sandbox."""
    notes = _outcome_notes(view, prefix=prefix, run_url=run_url, behind_id=behind_id, budget=budget, tail=tail)
    return [UNISOLATED_NOTE, *notes] if _unisolated(view) else notes


def _unisolated(view: RunView) -> bool:
    """Whether repository code of this run ran without the sandbox (the operator's NOFX_SANDBOX=none)."""
    return any(isinstance(step.output, dict) and step.output.get("isolation") == "none" for step in view.steps)


def _outcome_notes(
    view: RunView, *, prefix: str, run_url: str | None, behind_id: str | None, budget: TextBudget, tail: bool
) -> list[str]:
    status = view.run.status
    ci = ci_note(view.steps, names_git=view.words.names_git)
    if status == RunStatus.queued:
        return [queued_behind_note(behind_id)] if behind_id else []
    if status == RunStatus.waiting:
        return [ci] if waiting_for_ci(view.steps) else [_approval_note(view, prefix)]
    if status == RunStatus.failed:
        return [ci, _failure_note(view, prefix, run_url, budget, tail=tail)]
    if status == RunStatus.succeeded:
        return [_delivered_note(view), ci]
    if status == RunStatus.cancelled:
        return [_stopped_note(view, budget, run_url)]
    return [ci]


def request_section(request: str, budget: TextBudget) -> str:
    if not budget.request:
        return "> (the request is too long to show here)"
    return blockquote(middle(clean_text(request).strip(), budget.request))
