"""HTTP routes for what a run leaves behind and what nofx remembers: checkpoints (list, diff, resume), the RCA
bundle, thread memory. All behind the API's bearer token.

| route | |
|---|---|
| `GET /runs/{id}/checkpoints` | the run's checkpoints, oldest first |
| `GET /runs/{id}/checkpoints/{n}/diff[?base=<m>]` | structured diff against checkpoint m (default: the one before; 0: the run's start) |
| `POST /runs/{id}/checkpoints/{n}/resume` | a new run from checkpoint n; body `{"by": "..."}` optional; 201 |
| `GET /runs/{id}/rca` | the root-cause bundle, tar.gz |
| `GET /threads/{thread}/memory` | the thread's remembered entries, decrypted |
| `DELETE /threads/{thread}/memory` | forget the thread |
| `DELETE /threads/{thread}/memory/{entry}` | redact one entry |

`{thread}` is `owner:repo:12`, or `owner/repo#12` URL-encoded (`owner%2Frepo%2312`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bot import checkpoints, memory, rca, runs
from bot.api_auth import require_token
from bot.models import Checkpoint, Run
from bot.settings import Settings
from bot.store import Store
from bot.workspaces import GitError

log = logging.getLogger(__name__)


def routes() -> list[BaseRoute]:
    return [
        Route("/runs/{run_id}/checkpoints", list_checkpoints, methods=["GET"]),
        Route("/runs/{run_id}/checkpoints/{n:int}/diff", checkpoint_diff, methods=["GET"]),
        Route("/runs/{run_id}/checkpoints/{n:int}/resume", resume_from_checkpoint, methods=["POST"]),
        Route("/runs/{run_id}/rca", rca_bundle, methods=["GET"]),
        Route("/threads/{thread:path}/memory", thread_memory, methods=["GET", "DELETE"]),
        Route("/threads/{thread:path}/memory/{entry}", redact_memory_entry, methods=["DELETE"]),
    ]


@require_token
async def list_checkpoints(request: Request) -> Response:
    run_id = request.path_params["run_id"]
    run = await to_thread.run_sync(runs.get_run, _store(request), run_id)
    if run is None:
        return _error(404, f"run {run_id} does not exist")
    found = await to_thread.run_sync(checkpoints.list_for_run, _store(request), run_id)
    base = str(request.base_url).rstrip("/")
    return JSONResponse(
        {
            "run_id": run_id,
            "checkpoints": [
                {
                    **checkpoints.describe(cp),
                    "links": {
                        "diff": f"{base}/runs/{run_id}/checkpoints/{cp.n}/diff",
                        "resume": f"{base}/runs/{run_id}/checkpoints/{cp.n}/resume",
                    },
                }
                for cp in found
            ],
        }
    )


@require_token
async def checkpoint_diff(request: Request) -> Response:
    store = _store(request)
    run_id, n = request.path_params["run_id"], request.path_params["n"]
    run = await to_thread.run_sync(runs.get_run, store, run_id)
    found = await to_thread.run_sync(checkpoints.list_for_run, store, run_id)
    by_n = {cp.n: cp for cp in found}
    if run is None or n not in by_n:
        return _error(404, f"run {run_id} has no checkpoint {n}")
    head = by_n[n]
    raw_base = request.query_params.get("base")
    if raw_base is None:
        base_sha = head.parent_sha
        base_n: int | None = next((cp.n for cp in found if cp.commit_sha == base_sha), 0)
    else:
        if not raw_base.isdigit() or (int(raw_base) != 0 and int(raw_base) not in by_n):
            return _error(400, f"base must be a checkpoint of this run (1-{max(by_n)}) or 0 for the run's start")
        base_n = int(raw_base)
        base_sha = by_n[base_n].commit_sha if base_n else _start_of(found)
    try:
        structured = await checkpoints.diff(_mirror(request, run), base_sha, head.commit_sha)
    except checkpoints.CheckpointGone as exc:
        return _error(410, str(exc))
    except GitError as exc:
        log.warning("diff of checkpoint %s of run %s failed: %s", n, run_id, exc)
        return _error(500, "git could not compute the diff")
    return JSONResponse({"run_id": run_id, "checkpoint": n, "base_checkpoint": base_n, **structured})


@require_token
async def resume_from_checkpoint(request: Request) -> Response:
    run_id, n = request.path_params["run_id"], request.path_params["n"]
    by = "api"
    body = await request.body()
    if body:
        try:
            data = json.loads(body)
        except ValueError:
            return _error(400, 'the body must be JSON, like {"by": "octocat"}, or empty')
        if not isinstance(data, dict) or not isinstance(data.get("by", by), str):
            return _error(400, "`by` must be a string")
        by = data.get("by") or by
    try:
        run = await to_thread.run_sync(
            lambda: checkpoints.resume(_store(request), request.app.state.queue, run_id, n, by)
        )
    except checkpoints.ResumeError as exc:
        missing = "does not exist" in str(exc) or "has no checkpoint" in str(exc)
        return _error(404 if missing else 409, str(exc))
    steps = await to_thread.run_sync(runs.steps_of, _store(request), run.id)
    return JSONResponse(
        {
            "run_id": run.id,
            "status": run.status.value,
            "branch": run.branch,
            "steps": [s.name for s in steps],
            "from": {"run_id": run_id, "checkpoint": n, "commit": checkpoints.start_point(_store(request), run.id)},
        },
        status_code=201,
    )


@require_token
async def rca_bundle(request: Request) -> Response:
    run_id = request.path_params["run_id"]
    try:
        data = await rca.build(_store(request), _settings(request), run_id)
    except rca.RcaError as exc:
        return _error(404, str(exc))
    return Response(
        data,
        media_type="application/gzip",
        headers={"Content-Disposition": f'attachment; filename="nofx-rca-{run_id}.tar.gz"'},
    )


@require_token
async def thread_memory(request: Request) -> Response:
    try:
        thread = memory.ThreadKey.parse(request.path_params["thread"])
    except memory.ThreadMemoryError as exc:
        return _error(400, str(exc))
    store, keys = _store(request), _settings(request).memory_keys
    if request.method == "DELETE":
        deleted = await to_thread.run_sync(memory.forget, store, thread)
        log.info("memory of %s forgotten through the API (%d entries)", thread, deleted)
        return JSONResponse({"thread": str(thread), "deleted": deleted})
    found = await to_thread.run_sync(lambda: memory.entries(store, keys, thread))
    return JSONResponse(
        {"thread": str(thread), "enabled": memory.enabled(keys), "entries": [e.to_dict() for e in found]}
    )


@require_token
async def redact_memory_entry(request: Request) -> Response:
    try:
        thread = memory.ThreadKey.parse(request.path_params["thread"])
    except memory.ThreadMemoryError as exc:
        return _error(400, str(exc))
    entry = request.path_params["entry"]
    keys = _settings(request).memory_keys
    if not await to_thread.run_sync(memory.redact, _store(request), keys, thread, entry):
        return _error(404, f"{thread} has no memory entry {entry}")
    return JSONResponse({"thread": str(thread), "redacted": entry})


def _start_of(found: list[Checkpoint]) -> str:
    """Where the run's worktree started: the parent of its first checkpoint."""
    return found[0].parent_sha


def _mirror(request: Request, run: Run) -> Path:
    return checkpoints.mirror_of(_settings(request).data_dir / "workspaces", run)


def _store(request: Request) -> Store:
    return request.app.state.store


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)
