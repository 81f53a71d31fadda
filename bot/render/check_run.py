"""The `nofx` check run: its state, title, summary, failure output and the Approve / Reject / Cancel buttons."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from bot.models import Run, RunStatus, Step, StepStatus
from bot.render.ci import check_title as ci_check_title
from bot.render.ci import waiting_for_ci
from bot.render.run_view import RunView, checklist, on_run_page, output_tail, request_section, status_notes
from bot.render.text import (
    TextBudget,
    capital,
    clean_text,
    code_block,
    escape_inline,
    fit,
    iso_time,
    paragraphs,
    shorten,
)

CHECK_NAME = "nofx"
CHECK_TITLE_LIMIT = 255
CHECK_TEXT_LIMIT = 65_535  # output.summary and output.text each
MAX_ACTIONS = 3
CHECK_TAIL_LINES = 200  # in the check run's text, which has room for more

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
    view = RunView.of(run, steps, git_mode, now)
    status, conclusion = _CHECK_STATES[run.status]
    ci_wait = run.status == RunStatus.waiting and waiting_for_ci(view.steps)
    if (conclusion == "action_required" and not run_url) or ci_wait:  # CI needs no one's action: still running
        status, conclusion = "in_progress", None
    body: dict[str, Any] = {"name": CHECK_NAME, "external_id": run.id, "status": status}
    if run_url:
        body["details_url"] = run_url
    if conclusion:
        body["conclusion"] = conclusion
    if run.started_at:
        body["started_at"] = iso_time(run.started_at)
    if status == "completed" and run.finished_at:
        body["completed_at"] = iso_time(run.finished_at)

    def summary(budget: TextBudget) -> str:
        return paragraphs(
            request_section(run.request, budget),
            f"Asked by {escape_inline('@' + clean_text(run.requester))}.",
            checklist(view) if view.steps else "",
            *status_notes(view, prefix=prefix, run_url=run_url, behind_id=run.behind_run_id, budget=budget, tail=False),
        )

    body["output"] = {
        "title": _check_title(view),
        "summary": fit(summary, CHECK_TEXT_LIMIT, TextBudget(detail=2_000)),
        "text": fit(lambda budget: _check_text(view, run_url, budget), CHECK_TEXT_LIMIT, TextBudget(detail=60_000)),
    }
    actions = ("cancel",) if ci_wait else _ACTIONS_BY_STATUS.get(run.status, ())
    body["actions"] = [dict(_ACTIONS[key]) for key in actions][:MAX_ACTIONS]
    return body


def _check_title(view: RunView) -> str:
    """Plain text (the check run page does not render Markdown in titles), at most 255 characters."""
    title = _CHECK_TITLES[view.run.status].format(done=view.done, total=len(view.steps))
    if view.run.status == RunStatus.waiting and waiting_for_ci(view.steps):
        title = ci_check_title(view.steps, view.done, len(view.steps))
    failed = [step for step in view.steps if step.status == StepStatus.failed]
    if view.run.status == RunStatus.failed and failed:
        step = failed[0]
        name = clean_text(step.name) if view.name_shown(step.name) else str(view.number(step))
        title = f"Failed at step {' '.join(name.split())} ({view.words.tools.get(step.tool, step.tool)})"
    return shorten(title, CHECK_TITLE_LIMIT)


def _check_text(view: RunView, run_url: str | None, budget: TextBudget) -> str:
    """The output tail of each failed step, with more lines than the comment has room for."""
    failed = [step for step in view.steps if step.status == StepStatus.failed]
    if not failed:
        return "No step has failed." if view.run.status != RunStatus.failed else "No step output to show."
    each = budget.detail // len(failed)
    parts = []
    for step in failed:
        heading = f"### {capital(view.ref(step))} ({view.what(step, tool_id=False)})"
        if not step.error:
            parts.append(f"{heading}\n\nThe step left no output.")
        elif not view.error_shown(step.error, step.tool):
            parts.append(f"{heading}\n\n{on_run_page(run_url)}")
        else:
            text, total = output_tail(step.error, CHECK_TAIL_LINES, each)
            shown = "Its output:" if total <= CHECK_TAIL_LINES else f"The last {CHECK_TAIL_LINES} of {total} lines:"
            parts.append(f"{heading}\n\n{shown}\n\n{code_block(text)}")
    return "\n\n".join(parts)
