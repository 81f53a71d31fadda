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
import re
from pathlib import Path

from anyio import to_thread
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bot import blobs
from bot.blobs import Blobs
from bot.models import Checkpoint, Run
from bot.runs import checkpoint_diffs, checkpoints, memory, queries, rca, resume
from bot.settings import Settings
from bot.store import Store
from bot.web.auth import require_token
from bot.web.openapi import MAX_ID, MAX_RESUMED_BY, MEMORY_ENTRY_PATTERN, RUN_ID_PATTERN, THREAD_PATTERN
from bot.workspace.git import GitError

log = logging.getLogger(__name__)

_RUN_ID = re.compile(RUN_ID_PATTERN)
_THREAD = re.compile(THREAD_PATTERN)
_ENTRY = re.compile(MEMORY_ENTRY_PATTERN)
_CHECKPOINT_N = re.compile(r"[0-9]{1,19}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class _AnyText(Convertor[str]):
    """Like `{x:path}`, but newlines too: `path`'s `.*` stops at one, and the request would fall through to the
    router's plain-text 404 instead of the JSON 400 that names the thread form."""

    regex = "(?s:.*)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("thread", _AnyText())


def routes() -> list[BaseRoute]:
    return [
        Route("/runs/{run_id}/checkpoints", list_checkpoints, methods=["GET"]),
        Route("/runs/{run_id}/checkpoints/{n}/diff", checkpoint_diff, methods=["GET"]),
        Route("/runs/{run_id}/checkpoints/{n}/resume", resume_from_checkpoint, methods=["POST"]),
        Route("/runs/{run_id}/rca", rca_bundle, methods=["GET"]),
        Route("/threads/{thread:thread}/memory", thread_memory, methods=["GET", "DELETE"]),
        Route("/threads/{thread:thread}/memory/{entry}", redact_memory_entry, methods=["DELETE"]),
    ]


@require_token
async def list_checkpoints(request: Request) -> Response:
    run_id = request.path_params["run_id"]
    if not _RUN_ID.fullmatch(run_id) or await to_thread.run_sync(queries.get_run, _store(request), run_id) is None:
        return _error(404, f"run {run_id[:40]!r} does not exist")
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
    run_id, n = request.path_params["run_id"], _checkpoint_n(request)
    if not _RUN_ID.fullmatch(run_id) or n is None:
        return _error(404, f"run {run_id[:40]!r} has no checkpoint {request.path_params['n'][:40]!r}")
    run = await to_thread.run_sync(queries.get_run, store, run_id)
    found = await to_thread.run_sync(checkpoints.list_for_run, store, run_id)
    by_n = {cp.n: cp for cp in found}
    if run is None or n not in by_n:
        return _error(404, f"run {run_id} has no checkpoint {n}")
    head = by_n[n]
    raw_base = request.query_params.get("base")
    if raw_base is None:
        base_sha = head.parent_sha
        base_n = next((cp.n for cp in found if cp.commit_sha == base_sha), 0)
    else:
        # ASCII digits only: `str.isdigit` also takes `²`, which `int` refuses.
        if not _CHECKPOINT_N.fullmatch(raw_base) or (int(raw_base) != 0 and int(raw_base) not in by_n):
            return _error(400, f"base must be a checkpoint of this run (1-{max(by_n)}) or 0 for the run's start")
        base_n = int(raw_base)
        base_sha = by_n[base_n].commit_sha if base_n else _start_of(found)
    if raw_base is None:  # the diff every checkpoint stores when it is made: no mirror needed
        stored = await to_thread.run_sync(checkpoint_diffs.stored, _blobs(request), head)
        if stored is not None:
            return JSONResponse({"run_id": run_id, "checkpoint": n, "base_checkpoint": base_n, **stored.structured})
    try:  # another base, or a checkpoint made before diffs were stored: a mirror on this machine holding both
        structured = await checkpoint_diffs.diff(_mirror(request, run), base_sha, head.commit_sha)
    except checkpoint_diffs.CheckpointGone as exc:
        return _error(410, str(exc))
    except GitError as exc:
        log.warning("diff of checkpoint %s of run %s failed: %s", n, run_id, exc)
        return _error(500, "git could not compute the diff")
    return JSONResponse({"run_id": run_id, "checkpoint": n, "base_checkpoint": base_n, **structured})


@require_token
async def resume_from_checkpoint(request: Request) -> Response:
    run_id, n = request.path_params["run_id"], _checkpoint_n(request)
    by = "api"
    body = await request.body()
    if body:
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: nested thousands deep
            return _error(400, 'the body must be a JSON object, like {"by": "octocat"}, or empty')
        if not isinstance(data, dict):
            return _error(400, 'the body must be a JSON object, like {"by": "octocat"}, or empty')
        given = data.get("by", by)
        if not isinstance(given, str) or len(given) > MAX_RESUMED_BY or _CONTROL.search(given):
            return _error(
                400, f"`by` must be a string of at most {MAX_RESUMED_BY} characters, without control characters"
            )
        by = given or by
    if not _RUN_ID.fullmatch(run_id) or n is None:
        return _error(404, f"run {run_id[:40]!r} has no checkpoint {request.path_params['n'][:40]!r}")
    try:
        run = await to_thread.run_sync(lambda: resume.resume(_store(request), request.app.state.queue, run_id, n, by))
    except resume.ResumeError as exc:
        missing = "does not exist" in str(exc) or "has no checkpoint" in str(exc)
        return _error(404 if missing else 409, str(exc))
    steps = await to_thread.run_sync(queries.steps_of, _store(request), run.id)
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
    if not _RUN_ID.fullmatch(run_id):
        return _error(404, f"run {run_id[:40]!r} does not exist")
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
    thread = _thread(request)
    if isinstance(thread, Response):
        return thread
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
    thread = _thread(request)
    if isinstance(thread, Response):
        return thread
    entry = request.path_params["entry"]
    keys = _settings(request).memory_keys
    if not _ENTRY.fullmatch(entry) or not await to_thread.run_sync(memory.redact, _store(request), keys, thread, entry):
        return _error(404, f"{thread} has no memory entry {entry[:40]!r}")
    return JSONResponse({"thread": str(thread), "redacted": entry})


def _checkpoint_n(request: Request) -> int | None:
    """The checkpoint number in the path; None (a 404, as JSON) when it is no number a checkpoint can have.

    Checked here rather than by a `{n:int}` route, whose mismatch would be Starlette's plain-text 404; and
    bounded, so it never reaches the database as an integer overflow."""
    text = request.path_params["n"]
    return int(text) if _CHECKPOINT_N.fullmatch(text) and 1 <= int(text) <= MAX_ID else None


def _thread(request: Request) -> memory.ThreadKey | Response:
    """The thread named in the path, or a 400 saying how to name one (ASCII only, nothing around it)."""
    text = request.path_params["thread"]
    try:
        if not _THREAD.fullmatch(text):
            raise memory.ThreadMemoryError(
                f"not a thread: {text[:250]!r}; use owner/repo#12 (URL-encoded) or owner:repo:12"
            )
        return memory.ThreadKey.parse(text)
    except memory.ThreadMemoryError as exc:
        return _error(400, str(exc))


def _start_of(found: list[Checkpoint]) -> str:
    """Where the run's worktree started: the parent of its first checkpoint."""
    return found[0].parent_sha


def _mirror(request: Request, run: Run) -> Path:
    return checkpoints.mirror_of(_settings(request).data_dir / "workspaces", run)


def _blobs(request: Request) -> Blobs:
    return blobs.from_settings(_settings(request), _store(request))


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)
