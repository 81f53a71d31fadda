"""What of a run the semantic index keeps, as text: the run (request, plan, outcome), its generated edits (paths,
the model's summary, the changed lines) and the pull request nofx opened (title and body).

Background jobs (`bot.worker.jobs`) read these after the step or run that produced them, so indexing never slows
a step; `bot.search` embeds them.
"""

from __future__ import annotations

import difflib
import json

from bot.models import Run, Step
from bot.runs import queries
from bot.runs.artifacts import Artifacts
from bot.runs.contract import EDITS_ARTIFACT, PULL_REQUEST_ARTIFACT
from bot.store import Store

INDEXED_TOOLS = frozenset({"codegen", "git_pr"})  # the steps whose artifacts are indexed when they succeed
MAX_TEXT = 8000  # characters kept of one artifact: the head (request, summary, paths) is what gets embedded


def run_summary(store: Store, run: Run) -> tuple[str, str]:
    """The run's plan (its steps) and outcome, as the runs collection keeps them beside the request."""
    plan = ", ".join(f"{s.name} ({s.tool})" for s in queries.steps_of(store, run.id))
    outcome = run.status.value + (f": {run.error[:300]}" if run.error else "")
    return plan, outcome


def step_artifacts(artifacts: Artifacts, run: Run, step: Step) -> list[tuple[str, str]]:
    """`(name, text)` of what a succeeded step produced that a later search should find; the name is the
    artifact's path under the run (`<step>/<file>`), as `GET /runs/{id}/artifacts/...` serves it."""
    if step.tool == "codegen":
        edits = json.loads(artifacts.read(run.id, step.id, EDITS_ARTIFACT))
        return [(f"{step.name}/{EDITS_ARTIFACT}", _edits_text(run, step, edits)[:MAX_TEXT])]
    if step.tool == "git_pr":
        text = artifacts.read(run.id, step.id, PULL_REQUEST_ARTIFACT).decode("utf-8", "replace")
        return [(f"{step.name}/{PULL_REQUEST_ARTIFACT}", text[:MAX_TEXT])]
    return []


def _edits_text(run: Run, step: Step, edits: list[dict[str, str]]) -> str:
    paths = sorted({str(edit.get("path")) for edit in edits})
    lines = [
        f"Generated edits for: {run.request}",
        f"Summary: {step.output.get('change_summary') or '(none)'}",
        f"Files: {', '.join(paths) or '(none)'}",
        "",
    ]
    for edit in edits:
        path = str(edit.get("path"))
        if edit.get("op") == "write_file":
            old, new = [], str(edit.get("content", "")).splitlines()
        else:
            old, new = str(edit.get("old", "")).splitlines(), str(edit.get("new", "")).splitlines()
        lines += difflib.unified_diff(old, new, fromfile=path, tofile=path, lineterm="")
    return "\n".join(lines)
