"""A step's worker log lines go to the shared store when the step ends, so a run's RCA bundle has them wherever
it is made: the steps ran on any worker, and the web process has no worker's disk.

`logs.RunLogHandler` appends the lines bound to a run to a file under the worker's data dir; the engine notes the
file's size when a step starts and stores what was added since as the step's artifact `worker.<attempt>.log`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from bot.blobs import BlobError
from bot.logs import run_log_path
from bot.models import Step
from bot.runs.artifacts import ArtifactError, Artifacts

log = logging.getLogger(__name__)
MAX_STEP_LOG_BYTES = 5 * 2**20  # the newest part of a step's lines when it logged more


def artifact_name(attempt: int) -> str:
    return f"worker.{attempt}.log"


def size_now(data_dir: Path, run_id: str) -> int:
    """How long the run's local log file is (0 when it does not exist yet)."""
    try:
        return run_log_path(data_dir, run_id).stat().st_size
    except FileNotFoundError:
        return 0


def keep(artifacts: Artifacts, data_dir: Path, step: Step, since: int) -> None:
    """Store the lines the run's log gained since `since` as the step's log; never fails the step."""
    try:
        with run_log_path(data_dir, step.run_id).open("rb") as handle:
            size = handle.seek(0, 2)
            handle.seek(max(since, size - MAX_STEP_LOG_BYTES))
            data = handle.read()
    except FileNotFoundError:  # this process writes no per-run logs (no data dir configured for them)
        return
    if not data:
        return
    try:
        artifacts.put(step.run_id, step.id, artifact_name(step.attempts), data)
    except (ArtifactError, BlobError, SQLAlchemyError, OSError) as exc:
        log.warning("the log of step %s was not stored: %s", step.name, exc)


def collected(artifacts: Artifacts, steps: list[Step]) -> bytes:
    """Every stored step log of the run, step by step and attempt by attempt."""
    parts = []
    for step in steps:
        for attempt in range(1, step.attempts + 1):
            try:
                parts.append(artifacts.read(step.run_id, step.id, artifact_name(attempt)))
            except ArtifactError:
                continue
    return b"".join(parts)
