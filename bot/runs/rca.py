"""Root-cause bundles: everything needed to understand one run, in one redacted tar.gz to attach to a bug report.

`GET /runs/{id}/rca` builds it; `nofx rca RUN_ID -o FILE` downloads it. Every file goes through the log redactor
(the server's secrets plus credential shapes), so the bundle can be shared like a log.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import tarfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from sqlmodel import SQLModel

from bot import blobs
from bot.blobs import Blobs
from bot.logs import Redactor
from bot.models import Checkpoint, Delivery, Run, RunEvent, RunStatus, Step, StepStatus
from bot.runs import checkpoint_diffs, checkpoints, queries, step_logs
from bot.runs.artifacts import ArtifactError, Artifacts
from bot.settings import Settings
from bot.store import Store

log = logging.getLogger(__name__)

GATE_OUTPUT = "output.log"
ERROR_TAIL_LINES = 40
MAX_LOG_BYTES = 20 * 2**20  # the newest part of a very long worker log


class RcaError(Exception):
    """The bundle cannot be made or fetched; the message says why."""


@dataclass
class Bundle:
    """Files by name, then packed; `notes` say what could not be included and why (they go into summary.md)."""

    run_id: str
    files: dict[str, bytes] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add_text(self, name: str, text: str) -> None:
        self.files[name] = text.encode("utf-8")

    def pack(self) -> bytes:
        buffer = io.BytesIO()
        now = time.time()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for name, data in self.files.items():
                info = tarfile.TarInfo(f"nofx-rca-{self.run_id}/{name}")
                info.size, info.mtime, info.mode = len(data), now, 0o644
                tar.addfile(info, io.BytesIO(data))
        return buffer.getvalue()


async def build(store: Store, settings: Settings, run_id: str) -> bytes:
    """The run's bundle as tar.gz bytes; RcaError when the run does not exist.

    Everything comes from the database and the shared store (step logs, gate outputs, checkpoint diffs), never
    from a worker's disk; it is read in a thread, so the web process serves other requests meanwhile.
    """
    redactor = Redactor(settings.secrets)
    bundle, run, steps, events, cps, delivery, stats = await asyncio.to_thread(
        _collect, store, settings, run_id, redactor
    )
    summary = _summary(run, steps, events, cps, stats, delivery, bundle)
    bundle.add_text("summary.md", redactor.redact(summary))
    return await asyncio.to_thread(bundle.pack)


def _collect(
    store: Store, settings: Settings, run_id: str, redactor: Redactor
) -> tuple[Bundle, Run, list[Step], list[RunEvent], list[Checkpoint], Delivery | None, dict[int, tuple[int, int, int]]]:
    run = queries.get_run(store, run_id)
    if run is None:
        raise RcaError(f"run {run_id} does not exist")
    bundle = Bundle(run_id)
    steps = queries.steps_of(store, run_id)
    events = queries.events_of(store, run_id)
    names = {s.id: s.name for s in steps}

    def add_json(name: str, data: Any) -> None:
        bundle.add_text(name, json.dumps(redactor.redact_data(data), indent=2, default=str) + "\n")

    add_json("run.json", _row(run))
    add_json("steps.json", [_row(s) for s in steps])
    add_json("events.json", [{**_row(e), "step": names.get(e.step_id or "")} for e in events])
    add_json("llm_usage.json", _llm_usage(events, names))
    artifacts = Artifacts(blobs.from_settings(settings, store), store)
    _add_gate_outputs(bundle, redactor, artifacts, run, steps)
    cps = checkpoints.list_for_run(store, run_id)
    add_json("checkpoints.json", [checkpoints.describe(c) for c in cps])
    stats = _add_checkpoint_diffs(bundle, redactor, artifacts.blobs, cps)
    delivery = _delivery(store, run.delivery_id)
    if delivery is not None:
        add_json("delivery.json", _row(delivery))
    elif run.delivery_id:
        bundle.notes.append(f"delivery {run.delivery_id} is no longer recorded")
    _add_worker_log(bundle, redactor, artifacts, steps)
    return bundle, run, steps, events, cps, delivery, stats


def download(client: httpx.Client, run_id: str, destination: Path) -> int:
    """Fetch a run's bundle from a running server (the client carries the base URL and the bearer token) into
    `destination`, atomically; returns its size."""
    with client.stream("GET", f"/runs/{run_id}/rca") as response:
        if response.status_code != 200:
            response.read()
            raise RcaError(_refusal(response))
        partial = destination.with_name(f".{destination.name}.partial")
        size = 0
        with partial.open("wb") as handle:
            for chunk in response.iter_bytes():
                handle.write(chunk)
                size += len(chunk)
    partial.replace(destination)
    return size


def _refusal(response: httpx.Response) -> str:
    try:
        detail = str(response.json().get("error") or response.text)
    except ValueError:
        detail = response.text[:300]
    if response.status_code == 401:
        return f"the server refused the token (401): set NOFX_API_TOKEN to the server's token. {detail}".strip()
    return f"the server answered {response.status_code}: {detail}"


def _row(model: SQLModel) -> dict[str, Any]:
    return model.model_dump(mode="json")


def _llm_usage(events: Iterable[RunEvent], names: dict[str, str]) -> dict[str, Any]:
    calls = [
        {"at": e.created_at.isoformat(), "step": names.get(e.step_id or ""), **e.payload}
        for e in events
        if e.type == "llm.call"
    ]
    by_model: dict[str, dict[str, float]] = {}
    for call in calls:
        model = f"{call.get('provider', '')}:{call.get('model', '')}"
        totals = by_model.setdefault(model, {"calls": 0, "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0})
        totals["calls"] += 1
        for key in ("input_tokens", "output_tokens", "cost_usd"):
            totals[key] += float(call.get(key) or 0)
    return {
        "calls": calls,
        "by_model": by_model,
        "totals": {
            "calls": len(calls),
            "input_tokens": int(sum(float(c.get("input_tokens") or 0) for c in calls)),
            "output_tokens": int(sum(float(c.get("output_tokens") or 0) for c in calls)),
            "cost_usd": round(sum(float(c.get("cost_usd") or 0) for c in calls), 6),
        },
    }


def _add_gate_outputs(bundle: Bundle, redactor: Redactor, artifacts: Artifacts, run: Run, steps: list[Step]) -> None:
    """A gate's full `output.log` (verified against its digest), else the tail its step output kept."""
    for step in steps:
        if not step.tool.startswith("gate:"):
            continue
        name = f"gates/{step.name}.log"
        try:
            bundle.add_text(
                name, redactor.redact(artifacts.read(run.id, step.id, GATE_OUTPUT).decode(errors="replace"))
            )
            continue
        except ArtifactError as exc:
            problem = str(exc)
        tail = step.output.get("output_tail")
        if isinstance(tail, str):
            bundle.add_text(name, redactor.redact(tail))
            bundle.notes.append(f"{name}: only the last lines (the full output is unavailable: {problem})")
        elif step.status not in (StepStatus.pending, StepStatus.skipped):
            bundle.notes.append(f"{name}: no output recorded ({problem})")


def _add_checkpoint_diffs(
    bundle: Bundle, redactor: Redactor, blobs: Blobs, cps: list[Checkpoint]
) -> dict[int, tuple[int, int, int]]:
    """Each checkpoint's stored patch against the one before it; returns (files, additions, deletions) per checkpoint."""
    stats: dict[int, tuple[int, int, int]] = {}
    for cp in cps:
        stored = checkpoint_diffs.stored(blobs, cp)
        if stored is None:
            bundle.notes.append(f"checkpoint {cp.n}: its diff was not stored")
            continue
        stat = stored.structured["stats"]
        stats[cp.n] = (stat["files"], stat["additions"], stat["deletions"])
        bundle.add_text(f"checkpoints/{cp.n:03d}-{cp.step_name}.patch", redactor.redact(stored.patch))
    return stats


def _delivery(store: Store, delivery_id: str | None) -> Delivery | None:
    if not delivery_id:
        return None
    with store.session() as session:
        return session.get(Delivery, delivery_id)


def _add_worker_log(bundle: Bundle, redactor: Redactor, artifacts: Artifacts, steps: list[Step]) -> None:
    data = step_logs.collected(artifacts, steps)
    if not data:
        bundle.notes.append(
            "worker.log: no worker log lines were stored for this run's steps (workers keep them when started by "
            "`nofx worker`/`nofx serve` with a data dir)"
        )
        return
    if len(data) > MAX_LOG_BYTES:
        bundle.notes.append(f"worker.log: only the last {MAX_LOG_BYTES // 2**20} MB of {len(data)} bytes")
        data = data[-MAX_LOG_BYTES:]
    bundle.add_text("worker.log", redactor.redact(data.decode(errors="replace")))


def _summary(
    run: Run,
    steps: list[Step],
    events: list[RunEvent],
    cps: list[Checkpoint],
    stats: dict[int, tuple[int, int, int]],
    delivery: Delivery | None,
    bundle: Bundle,
) -> str:
    """What a person reads first: request, outcome, the failing step with its error tail, costs, timeline."""
    lines = [f"# nofx run `{run.id}`", ""]
    where = f"{run.repository} #{run.thread_number} ({run.thread_kind})"
    lines += [
        f"- **Where:** {where}" + (f" — {run.thread_url}" if run.thread_url else ""),
        f"- **Requested by:** @{run.requester} via {run.trigger}"
        + (f", delivery `{delivery.id}` ({delivery.event}.{delivery.action})" if delivery else ""),
        f"- **Created:** {run.created_at.isoformat()}",
        f"- **Outcome:** **{run.status.value}**" + _duration(run.started_at, run.finished_at),
        f"- **Branch:** `{run.branch}`" if run.branch else "- **Branch:** none",
        "",
        "## Request",
        "",
        *[f"> {line}" for line in run.request.splitlines() or [""]],
        "",
    ]
    failed = [s for s in steps if s.status == StepStatus.failed]
    if failed or run.status == RunStatus.failed:
        lines += ["## What failed", ""]
        for step in failed:
            tail = "\n".join((step.error or "no detail").splitlines()[-ERROR_TAIL_LINES:])
            lines += [f"Step **{step.name}** (`{step.tool}`), attempt {step.attempts}:", "", _fence(tail), ""]
        if not failed and run.error:
            lines += [_fence(run.error), ""]
    tokens_in = sum(s.input_tokens for s in steps)
    tokens_out = sum(s.output_tokens for s in steps)
    lines += [
        "## Costs",
        "",
        f"${run.cost_usd:.4f} in total; {tokens_in} input and {tokens_out} output tokens"
        f" over {sum(1 for e in events if e.type == 'llm.call')} LLM call(s) (details: llm_usage.json).",
        "",
        "## Steps",
        "",
        "| # | step | tool | status | attempts | duration | cost |",
        "|---|---|---|---|---|---|---|",
    ]
    for step in steps:
        lines.append(
            f"| {step.position + 1} | {step.name} | `{step.tool}` | {step.status.value} | {step.attempts} "
            f"| {_duration(step.started_at, step.finished_at, bare=True)} | ${step.cost_usd:.4f} |"
        )
    if cps:
        lines += [
            "",
            "## Checkpoints",
            "",
            "| n | after step | outcome | commit | files | added | deleted |",
            "|---|---|---|---|---|---|---|",
        ]
        for cp in cps:
            files, added, deleted = stats.get(cp.n, ("?", "?", "?"))
            lines.append(
                f"| {cp.n} | {cp.step_name} | {cp.outcome} | `{cp.commit_sha[:12]}` | {files} | {added} | {deleted} |"
            )
    lines += ["", "## Timeline", "", "| at | +s | event | step | detail |", "|---|---|---|---|---|"]
    names = {s.id: s.name for s in steps}
    start = events[0].created_at if events else run.created_at
    for event in events:
        detail = json.dumps({k: v for k, v in event.payload.items() if k != "name"}, default=str)
        detail = detail if len(detail) <= 160 else detail[:157] + "…"
        lines.append(
            f"| {event.created_at.strftime('%H:%M:%S')} | {(event.created_at - start).total_seconds():.1f} "
            f"| {event.type} | {names.get(event.step_id or '', '')} | `{detail.replace('|', '/')}` |"
        )
    lines += ["", "## In this bundle", "", *[f"- `{name}`" for name in sorted(bundle.files)], "- `summary.md`"]
    if bundle.notes:
        lines += ["", "## Not included", "", *[f"- {note}" for note in bundle.notes]]
    return "\n".join(lines) + "\n"


def _duration(start: datetime | None, end: datetime | None, *, bare: bool = False) -> str:
    if start is None or end is None:
        return "" if not bare else "—"
    seconds = (end - start).total_seconds()
    text = f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
    return text if bare else f" after {text}"


def _fence(text: str) -> str:
    """A code block the text's own backticks cannot close early."""
    longest = max((len(ticks) for ticks in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}\n{text}\n{fence}"
