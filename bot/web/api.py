"""The runs API: read runs, timelines, artifacts and live events; retry and cancel.

Like the rest of the web process it only reads, records and enqueues: a retry or cancel goes through
`bot.runs` (the one writer of statuses) and then enqueues the ready steps and a publish job, so
workers carry the change to GitHub. Every database call runs in a thread to keep the loop free.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from anyio import to_thread
from sqlalchemy import and_, or_
from sqlmodel import col, select
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.models import Artifact, Run, RunEvent, RunStatus, Step
from bot.queue import WorkQueue
from bot.runs import queries, records
from bot.runs.artifacts import ArtifactError, Artifacts
from bot.runs.progress import enqueue_progress
from bot.runs.transitions import TransitionError
from bot.store import Store
from bot.web import run_page, sse
from bot.web.auth import authorized, require_token
from bot.web.openapi import (
    ARTIFACT_NAME_PATTERN,
    CURSOR_PATTERN,
    EVENT_TYPE_PATTERN,
    MAX_EVENTS_PAGE,
    MAX_RUNS_PAGE,
    REPO_PATTERN,
    RUN_ID_PATTERN,
    STEP_NAME_PATTERN,
    event_json,
    openapi,
    run_json,
    run_summary_json,
)

Endpoint = Callable[[Request], Awaitable[Response]]
API_ACTOR = "api"  # recorded as `by` on events; there is one token, so no person to name
MAX_ID = 2**63 - 1
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CURSOR = re.compile(CURSOR_PATTERN)
_RUN_ID = re.compile(RUN_ID_PATTERN)
_STEP_NAME = re.compile(STEP_NAME_PATTERN)
_ARTIFACT_NAME = re.compile(ARTIFACT_NAME_PATTERN)
_REPO = re.compile(REPO_PATTERN)
_EVENT_TYPE = re.compile(EVENT_TYPE_PATTERN)
_MEDIA_TYPES = {".log": "text/plain; charset=utf-8", ".txt": "text/plain; charset=utf-8", ".json": "application/json"}


class Problem(Exception):
    """A request the API refuses; becomes `{"error": message}` with `status`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def routes() -> list[Route]:
    """The API, the run page, its login and the SSE streams; `create_app` mounts them."""
    return [
        Route("/openapi.json", openapi_document),
        Route("/login", run_page.login_form, methods=["GET"]),
        Route("/login", run_page.login, methods=["POST"]),
        Route("/runs", _reader(list_runs)),
        Route("/runs/{run_id}", _reader(get_run)),
        Route("/runs/{run_id}/timeline", _reader(timeline)),
        Route("/runs/{run_id}/stream", _reader(stream_run)),
        Route("/events/stream", _reader(stream_events)),
        Route("/runs/{run_id}/artifacts/{step}/{name}", _reader(get_artifact)),
        Route("/runs/{run_id}/steps/{step}/retry", require_token(_problems(retry_step)), methods=["POST"]),
        Route("/runs/{run_id}/cancel", require_token(_problems(cancel_run)), methods=["POST"]),
    ]


def _problems(endpoint: Endpoint) -> Endpoint:
    @functools.wraps(endpoint)
    async def answer(request: Request) -> Response:
        try:
            return await endpoint(request)
        except Problem as problem:
            return JSONResponse({"error": problem.message}, status_code=problem.status)

    return answer


def _reader(endpoint: Endpoint) -> Endpoint:
    """Reads accept the bearer token or the run page's session cookie; a browser without either gets the login."""
    guarded = require_token(_problems(endpoint))

    @functools.wraps(endpoint)
    async def read(request: Request) -> Response:
        if not authorized(request) and run_page.session_valid(request):
            return await _problems(endpoint)(request)
        if not authorized(request) and run_page.wants_html(request):
            return run_page.login_page(request, request.url.path)
        return await guarded(request)

    return read


async def openapi_document(_request: Request) -> Response:
    """The API description is public: it holds no data, and clients need it before they hold a token."""
    return JSONResponse(openapi())


# --- reads ----------------------------------------------------------------------------------------------------


async def list_runs(request: Request) -> Response:
    """`GET /runs`: newest first, filtered by installation, repo and status, paginated by an opaque cursor."""
    query = request.query_params
    filters: dict[str, Any] = {}
    if "installation" in query:
        filters["installation_id"] = _integer(query["installation"], "installation", 1, MAX_ID)
    if "repo" in query:
        if not _REPO.fullmatch(query["repo"]):
            raise Problem(400, "repo must look like owner/name")
        filters["repository"] = query["repo"]
    if "status" in query:
        try:
            filters["status"] = RunStatus(query["status"])
        except ValueError:
            raise Problem(400, f"status must be one of {', '.join(s.value for s in RunStatus)}") from None
    limit = _integer(query["limit"], "limit", 1, MAX_RUNS_PAGE) if "limit" in query else 20
    after = _decode_cursor(query["cursor"]) if "cursor" in query else None
    found, more = await to_thread.run_sync(_select_runs, _store(request), filters, after, limit)
    next_cursor = _encode_cursor(found[-1]) if more else None
    return JSONResponse(
        {
            "runs": [run_summary_json(run) for run in found],
            "next_cursor": next_cursor,
            "next": _next_link(request, next_cursor),
        }
    )


async def get_run(request: Request) -> Response:
    """`GET /runs/{id}`: JSON by default; the run page for a browser (`Accept: text/html`)."""
    run_id = _run_id(request)
    data = await to_thread.run_sync(_run_details, _store(request), run_id)
    if data is None:
        raise Problem(404, f"no run {run_id}")
    if run_page.wants_html(request):
        return run_page.page(data)
    return JSONResponse(data)


async def timeline(request: Request) -> Response:
    """`GET /runs/{id}/timeline`: events in id order; `?type=step.` keeps types with that prefix."""
    run_id = _run_id(request)
    query = request.query_params
    prefixes = query.getlist("type")
    for prefix in prefixes:
        if not _EVENT_TYPE.fullmatch(prefix):
            raise Problem(400, "type must be 1-50 of a-z, 0-9, '_', '.', ':' or '-' (a prefix such as step.)")
    limit = _integer(query["limit"], "limit", 1, MAX_EVENTS_PAGE) if "limit" in query else 100
    after = _integer(query["cursor"], "cursor", 0, MAX_ID) if "cursor" in query else 0
    found = await to_thread.run_sync(_select_events, _store(request), run_id, prefixes, after, limit)
    if found is None:
        raise Problem(404, f"no run {run_id}")
    events, more = found
    next_cursor = str(events[-1].id) if more else None
    return JSONResponse(
        {
            "run_id": run_id,
            "events": [event_json(event) for event in events],
            "next_cursor": next_cursor,
            "next": _next_link(request, next_cursor),
        }
    )


async def get_artifact(request: Request) -> Response:
    """`GET /runs/{id}/artifacts/{step}/{name}`: the bytes, only if they still match their recorded sha256."""
    run_id = _run_id(request)
    step_name, name = request.path_params["step"], request.path_params["name"]
    if not _STEP_NAME.fullmatch(step_name) or not _ARTIFACT_NAME.fullmatch(name) or ".." in name:
        raise Problem(404, f"no artifact {name!r} of step {step_name!r} in run {run_id}")
    artifacts: Artifacts = request.app.state.artifacts
    found = await to_thread.run_sync(_find_artifact, _store(request), run_id, step_name, name)
    if found is None:
        raise Problem(404, f"no artifact {name!r} of step {step_name!r} in run {run_id}")
    try:
        data = await to_thread.run_sync(artifacts.read, run_id, found.step_id, name)
    except ArtifactError as exc:
        raise Problem(409, str(exc)) from None
    suffix = name[name.rfind(".") :] if "." in name else ""
    return Response(
        data,
        media_type=_MEDIA_TYPES.get(suffix, "application/octet-stream"),
        headers={
            "ETag": f'"{found.sha256}"',
            "Content-Disposition": f'inline; filename="{name}"',
            "Content-Security-Policy": "default-src 'none'; sandbox",
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "private, no-cache",
        },
    )


async def stream_run(request: Request) -> Response:
    """`GET /runs/{id}/stream`: SSE from the run's first event (or after Last-Event-ID) until it finishes."""
    run_id = _run_id(request)
    store = _store(request)
    after = _last_event_id(request)
    if await to_thread.run_sync(queries.get_run, store, run_id) is None:
        raise Problem(404, f"no run {run_id}")
    reader = sse.EventReader(store, run_id, after or 0, request.app.state.stream_timing)
    return sse.stream_response(request, reader)


async def stream_events(request: Request) -> Response:
    """`GET /events/stream`: SSE of every run's events, from now unless Last-Event-ID or `?after=` says where."""
    store = _store(request)
    after = _last_event_id(request)
    if after is None and "after" in request.query_params:
        after = _integer(request.query_params["after"], "after", 0, MAX_ID)
    if after is None:
        after = await to_thread.run_sync(sse.latest_event_id, store)
    reader = sse.EventReader(store, None, after, request.app.state.stream_timing)
    return sse.stream_response(request, reader)


# --- actions --------------------------------------------------------------------------------------------------


async def retry_step(request: Request) -> Response:
    """`POST /runs/{id}/steps/{step}/retry`: 202 with the run's new state, 409 if the state machine refuses."""
    run_id = _run_id(request)
    step_name = request.path_params["step"]
    store, queue = _store(request), _queue(request)
    found = await to_thread.run_sync(_step_named, store, run_id, step_name) if _STEP_NAME.fullmatch(step_name) else None
    if found is None:
        raise Problem(404, f"no step {step_name!r} in run {run_id}")
    return await _act(store, queue, run_id, lambda: records.retry(store, run_id, step_name, by=API_ACTOR))


async def cancel_run(request: Request) -> Response:
    """`POST /runs/{id}/cancel`: 202 with the run's new state, 409 when it has already finished."""
    run_id = _run_id(request)
    store, queue = _store(request), _queue(request)
    if await to_thread.run_sync(queries.get_run, store, run_id) is None:
        raise Problem(404, f"no run {run_id}")
    return await _act(
        store, queue, run_id, lambda: records.cancel(store, run_id, by=API_ACTOR, reason="cancelled through the API")
    )


async def _act(store: Store, queue: WorkQueue, run_id: str, change: Callable[[], records.Progress]) -> Response:
    try:
        progress = await to_thread.run_sync(change)
    except TransitionError as exc:
        raise Problem(409, str(exc)) from None
    await to_thread.run_sync(enqueue_progress, store, queue, progress, run_id)
    data = await to_thread.run_sync(_run_details, store, run_id)
    return JSONResponse(data, status_code=202)


# --- queries (run in threads) ---------------------------------------------------------------------------------


def _select_runs(
    store: Store, filters: dict[str, Any], after: tuple[datetime, str] | None, limit: int
) -> tuple[list[Run], bool]:
    statement = select(Run)
    for field, value in filters.items():
        statement = statement.where(getattr(Run, field) == value)
    if after is not None:
        created, run_id = after
        statement = statement.where(
            or_(col(Run.created_at) < created, and_(col(Run.created_at) == created, col(Run.id) < run_id))
        )
    statement = statement.order_by(col(Run.created_at).desc(), col(Run.id).desc()).limit(limit + 1)
    with store.session() as session:
        found = list(session.exec(statement))
    return found[:limit], len(found) > limit


def _run_details(store: Store, run_id: str) -> dict[str, Any] | None:
    with store.session() as session:
        run = session.get(Run, run_id)
        if run is None:
            return None
        steps = list(session.exec(select(Step).where(Step.run_id == run_id).order_by(col(Step.position))))
        artifacts = list(session.exec(select(Artifact).where(Artifact.run_id == run_id).order_by(col(Artifact.id))))
        return run_json(run, steps, artifacts)


def _select_events(
    store: Store, run_id: str, prefixes: list[str], after: int, limit: int
) -> tuple[list[RunEvent], bool] | None:
    statement = select(RunEvent).where(RunEvent.run_id == run_id, col(RunEvent.id) > after)
    if prefixes:
        statement = statement.where(or_(*(col(RunEvent.type).startswith(p, autoescape=True) for p in prefixes)))
    with store.session() as session:
        if session.get(Run, run_id) is None:
            return None
        found = list(session.exec(statement.order_by(col(RunEvent.id)).limit(limit + 1)))
    return found[:limit], len(found) > limit


def _step_named(store: Store, run_id: str, name: str) -> Step | None:
    with store.session() as session:
        return session.exec(select(Step).where(Step.run_id == run_id, Step.name == name)).first()


def _find_artifact(store: Store, run_id: str, step_name: str, name: str) -> Artifact | None:
    with store.session() as session:
        statement = (
            select(Artifact)
            .join(Step, col(Step.id) == col(Artifact.step_id))
            .where(Artifact.run_id == run_id, Step.name == step_name, Artifact.name == name)
        )
        return session.exec(statement).first()


# --- parameters -----------------------------------------------------------------------------------------------


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def _queue(request: Request) -> WorkQueue:
    queue: WorkQueue = request.app.state.queue
    return queue


def _run_id(request: Request) -> str:
    """Ids that cannot exist are 404 before any query (and never reach the database as odd bytes)."""
    run_id: str = request.path_params["run_id"]
    if not _RUN_ID.fullmatch(run_id):
        raise Problem(404, f"no run {run_id[:40]!r}")
    return run_id


def _integer(text: str, name: str, low: int, high: int) -> int:
    if not re.fullmatch(r"[0-9]{1,19}", text) or not low <= int(text) <= high:
        raise Problem(400, f"{name} must be a whole number from {low} to {high}")
    return int(text)


def _last_event_id(request: Request) -> int | None:
    header = request.headers.get("last-event-id")
    if header is None or header == "":
        return None
    return _integer(header.strip(), "Last-Event-ID", 0, MAX_ID)


def _encode_cursor(run: Run) -> str:
    """The last run's position, `<created_at in µs since the epoch>-<id>`: any such value is a valid place."""
    micros = (run.created_at - EPOCH) // timedelta(microseconds=1)
    return f"{micros}-{run.id}"


def _decode_cursor(text: str) -> tuple[datetime, str]:
    match = _CURSOR.fullmatch(text)
    if match is None:
        raise Problem(400, "cursor must be a next_cursor from a previous page (<microseconds>-<run id>)")
    return EPOCH + timedelta(microseconds=int(match[1])), match[2]


def _next_link(request: Request, cursor: str | None) -> str | None:
    if cursor is None:
        return None
    params = [(key, value) for key, value in request.query_params.multi_items() if key != "cursor"]
    return f"{request.url.path}?{urlencode([*params, ('cursor', cursor)])}"
