"""The web process: `create_app()` builds its dependencies; it verifies, records and enqueues only."""

from __future__ import annotations

import html
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from anyio import to_thread
from sqlmodel import col, select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from bot import blobs, handled_events
from bot.metrics.runs import RunMetrics
from bot.metrics.web import CONTENT_TYPE, Metrics
from bot.metrics.workers import WorkerMetrics
from bot.models import AppIdentity
from bot.queue import WorkQueue
from bot.runs.artifacts import Artifacts
from bot.settings import ENV_FILE, Settings
from bot.store import Store
from bot.web import api, guards, search_route, trace_routes
from bot.web import manifest as setup
from bot.web.intake import Intake
from bot.web.sse import StreamTiming

log = logging.getLogger(__name__)
access_log = logging.getLogger("nofx.access")


WEBHOOK_PATH = "/webhooks"


class App(Starlette):
    """Starlette, except that /webhooks goes straight to the intake (`bot.web.intake`): past the middleware
    stack and the routing, which cost a busy intake more than its own work.

    It also writes the access log (uvicorn's is off): one line per request but deliveries, which are recorded
    in the database and whose refusals the intake logs. uvicorn's logger built a record per delivery only for
    a filter to drop it.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
        elif scope["path"] == WEBHOOK_PATH:
            await self.state.intake(scope, receive, send)
        else:
            await super().__call__(scope, receive, _access_logged(scope, send))


def _access_logged(scope: Scope, send: Send) -> Send:
    """`send`, logging the request line and status as the response starts (the path only: a query string may
    carry a code or token)."""

    async def logged(message: Message) -> None:
        if message["type"] == "http.response.start":
            client = scope.get("client")
            access_log.info(
                "%s %s %s %d", client[0] if client else "-", scope["method"], scope["path"], message["status"]
            )
        await send(message)

    return logged


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    queue: WorkQueue | None = None,
    env_file: Path | None = None,
    stream_timing: StreamTiming | None = None,
    setup_code: str | None = None,
) -> App:
    """Build the ASGI app; tests pass their own store and queue, `nofx web` builds them from settings.

    While the App is not registered, the app holds a setup code (`setup_code`, else a new one) that the command
    prints: only a browser that presents it may register the App (`bot.web.guards`).
    """
    if store is None:
        store = Store(settings.database_url, run_limits=settings.run_limits, auto_checkpoint=False)
        store.create_all()
    if queue is None:
        if not settings.redis_url:
            raise RuntimeError("REDIS_URL is required by the web process (`nofx serve` sets it)")
        queue = WorkQueue.from_url(settings.redis_url)
    metrics = Metrics(queue.depths, queue.waits)
    metrics.registry.register(RunMetrics(store))
    metrics.registry.register(WorkerMetrics(queue.shared))
    app = App(
        lifespan=_lifespan,
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics_endpoint),
            Route("/", home),
            *setup.routes(),
            *trace_routes.routes(),
            *api.routes(),
            *search_route.routes(),
        ],
    )
    app.state.settings = settings
    app.state.env_file = env_file or Path(ENV_FILE)
    app.state.store = store
    app.state.queue = queue
    app.state.metrics = metrics
    app.state.artifacts = Artifacts(blobs.from_settings(settings, store), store)
    app.state.stream_timing = stream_timing or StreamTiming()
    app.state.setup_code = None if settings.app_configured else (setup_code or guards.new_setup_code())
    app.state.login_throttle = guards.Throttle()
    app.state.intake = Intake(
        store=store,
        queue=queue,
        metrics=metrics,
        # Read per request: the setup flow may write the secret while the app runs.
        secret=lambda: app.state.settings.webhook_secret,
        ignore_reason=handled_events.ignore_reason,
    )
    return app


@asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    yield
    await app.state.intake.close()


async def healthz(_request: Request) -> Response:
    """Liveness: the process answers."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Readiness: the database and the queue both answer."""
    checks = await to_thread.run_sync(_dependency_checks, request.app.state.store, request.app.state.queue)
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse({"status": "ok" if ready else "unavailable", **checks}, status_code=200 if ready else 503)


async def metrics_endpoint(request: Request) -> Response:
    if not guards.metrics_allowed(request):
        return JSONResponse(
            {"error": "a valid bearer token (NOFX_METRICS_TOKEN) is required"},
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer realm="nofx metrics"'},
        )
    metrics: Metrics = request.app.state.metrics
    body = await to_thread.run_sync(metrics.render)
    return Response(body, media_type=CONTENT_TYPE)


async def home(request: Request) -> Response:
    """The setup page until the App is registered, then a status page."""
    settings: Settings = request.app.state.settings
    if not settings.app_configured:
        return await setup.setup_page(request)
    status = await to_thread.run_sync(_queue_status, request.app.state.store, request.app.state.queue)
    return HTMLResponse(_status_page(settings, **status))


def _dependency_checks(store: Store, queue: WorkQueue) -> dict[str, str]:
    checks: dict[str, str] = {}
    for name, ping in (("database", store.ping), ("queue", queue.ping)):
        try:
            ping()
            checks[name] = "ok"
        except Exception as exc:  # readiness reports any failure; the type is enough to act on
            log.warning("%s not ready: %s", name, type(exc).__name__)
            checks[name] = f"unavailable ({type(exc).__name__})"
    return checks


def _queue_status(store: Store, queue: WorkQueue) -> dict[str, str]:
    with store.session() as session:  # the identity a worker recorded (bot.github.identity); none before one ran
        app = session.exec(select(AppIdentity).order_by(col(AppIdentity.updated_at).desc())).first()
    try:
        queue.ping()
        depth = sum(queue.depths().values())
        workers = queue.worker_count()
        queue_text = f"healthy: {depth} job(s) waiting, {workers} worker(s)"
    except Exception as exc:  # the status page shows the outage rather than failing
        queue_text = f"unavailable ({type(exc).__name__})"
    return {
        "app_name": app.name if app else "",
        "app_url": (app.html_url or "") if app else "",
        "queue": queue_text,
    }


def _sandbox_text(mode: str) -> str:
    if mode == "none":
        return (
            '<strong style="color:#b00">NONE: NOFX_SANDBOX=none, repository code (gates) runs WITHOUT isolation, '
            "seeing this machine as the workers do</strong>"
        )
    return "bubblewrap: gates run isolated, without network; where a worker cannot build the sandbox, no gate runs (<code>nofx doctor</code> checks a machine)"


def _status_page(settings: Settings, *, app_name: str, app_url: str, queue: str) -> str:
    name = html.escape(app_name or f"GitHub App {settings.app_id}")
    link = f' (<a href="{html.escape(app_url)}">on GitHub</a>)' if app_url else ""
    pending = "" if app_name else "<p>The App's name appears once a worker has started and asked GitHub.</p>"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>nofx: {name}</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem}}
dt{{font-weight:600}}</style></head>
<body><h1>nofx is running</h1>
<dl><dt>App</dt><dd>{name}{link}</dd>
<dt>GitHub API</dt><dd>{html.escape(settings.github_api_url)}</dd>
<dt>Queue</dt><dd>{html.escape(queue)}</dd>
<dt>Sandbox</dt><dd>{_sandbox_text(settings.sandbox)}</dd></dl>{pending}
<p>Health: <a href="/healthz">/healthz</a> · <a href="/readyz">/readyz</a> · <a href="/metrics">/metrics</a></p>
</body></html>"""
