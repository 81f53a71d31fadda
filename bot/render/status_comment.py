"""The status comment: the one comment per run, edited in place, and the short `/nofx status` answer."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime

from bot.models import Run, RunStatus, Step, StepStatus
from bot.render.ci import waiting_for_ci
from bot.render.run_view import STATUS_EMOJI, RunView, checklist, request_section, status_notes
from bot.render.text import COMMENT_LIMIT, TextBudget, code_span, fit, join_words, link, mention, paragraphs

MARKER_PREFIX = "<!-- nofx:run:"
MARKER_SUFFIX = " -->"

HEADLINES: Mapping[RunStatus, str] = {
    RunStatus.queued: "nofx has queued this request",
    RunStatus.running: "nofx is working on this",
    RunStatus.waiting: "nofx is waiting for approval",
    RunStatus.succeeded: "nofx is done",
    RunStatus.failed: "nofx could not finish",
    RunStatus.cancelled: "nofx stopped",
}

_RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def status_marker(run_id: str) -> str:
    """The hidden HTML comment that lets nofx find a run's status comment again, instead of posting a second one."""
    if not _RUN_ID.fullmatch(run_id):
        raise ValueError(f"run id {run_id!r} cannot go into a marker")
    return f"{MARKER_PREFIX}{run_id}{MARKER_SUFFIX}"


def _headline(run: Run, view: RunView) -> str:
    if run.status == RunStatus.waiting and waiting_for_ci(view.steps):
        return "nofx is waiting for CI"
    return HEADLINES[run.status]


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
    view = RunView.of(run, steps, git_mode, now)
    marker = status_marker(run.id)
    behind_id = behind.id if behind is not None else run.behind_run_id
    footer = f"{link('Details', run_url)} · run {code_span(run.id)}" if run_url else f"Run {code_span(run.id)}"

    def render(budget: TextBudget) -> str:
        return paragraphs(
            f"### {STATUS_EMOJI[run.status]} {_headline(run, view)}",
            request_section(run.request, budget),
            f"Asked by {mention(run.requester)}.",
            checklist(view) if view.steps else "",
            *status_notes(view, prefix=prefix, run_url=run_url, behind_id=behind_id, budget=budget, tail=True),
            footer,
            marker,
        )

    return fit(render, COMMENT_LIMIT, TextBudget(), keep_end=marker)


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
    view = RunView.of(run, steps, git_mode, now)
    current = [step for step in view.steps if step.status in (StepStatus.running, StepStatus.waiting)]
    progress = f"{view.done} of {len(view.steps)} steps done"
    if current:
        progress += "; now " + join_words([f"{view.ref(step)} ({view.state(step)})" for step in current[:3]])
    headline = f"{STATUS_EMOJI[run.status]} Run {code_span(run.id)} is {RunStatus(run.status).value}: {progress}."

    def render(budget: TextBudget) -> str:
        return paragraphs(
            headline,
            *status_notes(view, prefix=prefix, run_url=run_url, behind_id=run.behind_run_id, budget=budget, tail=False),
            link("Details", run_url) if run_url else "",
        )

    return fit(render, COMMENT_LIMIT, TextBudget(request=0, detail=2_000))
