"""What `nofx run` and `nofx review` show in a terminal: a live table of steps, a failing gate's tail, a summary.

Logs never go to the terminal (they would tear the live view): `use_log_file` sends them to a file under the
data dir, and `-v` adds the terminal back for those who want them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from bot import logs
from bot.models import Run, Step

STATE_STYLE = {
    "pending": "dim",
    "queued": "cyan",
    "running": "bold yellow",
    "waiting": "magenta",
    "succeeded": "green",
    "failed": "bold red",
    "skipped": "dim",
    "cancelled": "yellow",
}
TAIL_LINES = 20


def use_log_file(data_dir: Path, command: str, redactor: logs.Redactor, *, verbose: bool) -> Path:
    """Send every log line to `<data>/logs/<command>.log` (JSON, redacted); with `verbose`, to stderr as well."""
    path = data_dir / "logs" / f"{command}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    for handler in list(root.handlers):
        if type(handler) is logging.StreamHandler and not verbose:  # the terminal one `logs.configure` added
            root.removeHandler(handler)
    to_file = logging.FileHandler(path, encoding="utf-8")
    to_file.setFormatter(logs.JsonFormatter(redactor))
    root.addHandler(to_file)
    root.setLevel(logging.INFO)
    return path


def steps_table(run: Run, steps: Sequence[Step], *, now: datetime | None = None) -> RenderableType:
    """The run's steps with their state, duration and model cost; the failing step's output tail below."""
    now = now or datetime.now(UTC)
    table = Table(title=f"nofx run {run.id}: {run.status.value}", title_justify="left", expand=False)
    table.add_column("step")
    table.add_column("tool", style="dim")
    table.add_column("state")
    table.add_column("time", justify="right")
    table.add_column("cost", justify="right")
    for step in steps:
        state = step.status.value
        table.add_row(
            step.name, step.tool, Text(state, style=STATE_STYLE.get(state, "")), _duration(step, now), _cost(step)
        )
    table.add_row("", "", Text("total", style="bold"), "", f"${run.cost_usd:.4f}")
    parts: list[RenderableType] = [table]
    failed = next((s for s in steps if s.status.value == "failed"), None)
    if failed is not None:
        parts.append(failure_panel(failed.name, failed.error or "", str(failed.output.get("output_tail") or "")))
    return Group(*parts)


def failure_panel(name: str, error: str, tail: str) -> Panel:
    """Why a step failed; for a gate, the last lines of its output."""
    body = Text(error.split("\n", 1)[0][:300])
    if tail.strip():
        body.append("\n\n" + "\n".join(tail.rstrip().splitlines()[-TAIL_LINES:]), style="dim")
    return Panel(body, title=f"{name} failed", title_align="left", border_style="red")


def summary_panel(lines: Sequence[str], *, ok: bool) -> Panel:
    """The closing box: what came out and what to do with it."""
    return Panel("\n".join(lines), title="done" if ok else "not done", border_style="green" if ok else "red")


def _duration(step: Step, now: datetime) -> str:
    if step.started_at is None:
        return ""
    end = _aware(step.finished_at) if step.finished_at else now
    seconds = max((end - _aware(step.started_at)).total_seconds(), 0.0)
    return f"{seconds:.1f} s" if seconds < 60 else time.strftime("%M:%S", time.gmtime(seconds))


def _cost(step: Step) -> str:
    return f"${step.cost_usd:.4f}" if step.cost_usd else ""


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Phases:
    """A command's phases as a live table (`nofx review`): each with its state, time, detail and cost."""

    def __init__(self, title: str, names: Sequence[str]) -> None:
        self.title = title
        self.rows = {name: _Phase() for name in names}

    def start(self, name: str, detail: str = "") -> None:
        row = self.rows[name]
        row.state, row.started, row.detail = "running", time.monotonic(), detail

    def note(self, name: str, detail: str) -> None:
        self.rows[name].detail = detail

    def finish(self, name: str, detail: str | None = None, *, cost: float = 0.0, failed: bool = False) -> None:
        row = self.rows[name]
        row.state, row.finished, row.cost = ("failed" if failed else "succeeded"), time.monotonic(), cost
        row.detail = row.detail if detail is None else detail

    def fail_running(self) -> None:
        for name, row in self.rows.items():
            if row.state == "running":
                self.finish(name, failed=True)

    def render(self) -> RenderableType:
        table = Table(title=self.title, title_justify="left")
        for column, justify in (("step", "left"), ("state", "left"), ("time", "right"), ("cost", "right")):
            table.add_column(column, justify=justify)  # type: ignore[arg-type]
        table.add_column("", style="dim")
        now = time.monotonic()
        for name, row in self.rows.items():
            seconds = None if row.started is None else (row.finished or now) - row.started
            table.add_row(
                name,
                Text(row.state, style=STATE_STYLE.get(row.state, "")),
                "" if seconds is None else f"{seconds:.1f} s",
                f"${row.cost:.4f}" if row.cost else "",
                row.detail,
            )
        return table


class _Phase:
    def __init__(self) -> None:
        self.state = "pending"
        self.started: float | None = None
        self.finished: float | None = None
        self.detail = ""
        self.cost = 0.0
