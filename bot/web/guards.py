"""What keeps strangers out of the web process's doors besides the webhook: the setup code, the login throttle,
the metrics token and the cookie flags.

The setup code works as Jupyter's token does: `nofx serve` (or `nofx web`) makes a fresh one at start while the
App is not registered and prints it; only a browser that presented it may open the setup page, get a `state`
from it, or finish the flow. Without it, whoever reached `/setup` first could register an App of their own.
"""

from __future__ import annotations

import hmac
import html
import secrets
import time
from collections import OrderedDict, deque
from urllib.parse import urlencode, urlsplit

from starlette.datastructures import State
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from bot.settings import Settings

SETUP_CODE_PARAM = "setup_code"
MAX_ADMITTED_BROWSERS = 20
SETUP_ADMISSION_S = 3600.0
LOGIN_ATTEMPTS = 10  # per client address and window
LOGIN_WINDOW_S = 600.0
MAX_CLIENTS_TRACKED = 10_000


def new_setup_code() -> str:
    """A code to print at start: 128 random bits, URL-safe."""
    return secrets.token_urlsafe(16)


def setup_url(base_url: str, code: str) -> str:
    """The address `serve` prints: open it once, the browser is admitted and the code leaves the address bar."""
    return f"{base_url.rstrip('/')}/setup?{SETUP_CODE_PARAM}={code}"


def setup_code_matches(state: State, presented: str) -> bool:
    """True if `presented` is this process's setup code (constant time); False when there is none."""
    expected: str | None = getattr(state, "setup_code", None)
    return bool(expected and presented) and hmac.compare_digest(presented.encode(), str(expected).encode())


def admit_browser(state: State) -> str:
    """A new browser id for a browser that presented the setup code; the oldest admission goes past the cap."""
    admitted = _admitted(state)
    while len(admitted) >= MAX_ADMITTED_BROWSERS:
        admitted.popitem(last=False)
    browser = secrets.token_urlsafe(16)
    admitted[browser] = time.monotonic()
    return browser


def admitted_browser(state: State, browser: str | None) -> bool:
    """True if the browser id (from the setup cookie) was admitted with the setup code within the hour."""
    admitted = _admitted(state).get(browser or "")
    return admitted is not None and time.monotonic() - admitted < SETUP_ADMISSION_S


def setup_finished(state: State) -> None:
    """The App is registered: the code and every admission stop working."""
    state.setup_code = None
    _admitted(state).clear()


def cookies_secure(request: Request) -> bool:
    """`Secure` cookies when the request is https, or came for the https public address (NOFX_PUBLIC_URL) over
    plain http because TLS ends at a proxy in front. A request to another (private) address keeps its scheme:
    a browser would not send a `Secure` cookie back to a plain-http address."""
    settings: Settings = request.app.state.settings
    public = urlsplit(settings.public_url or "")
    return request.url.scheme == "https" or (public.scheme == "https" and public.hostname == request.url.hostname)


def metrics_allowed(request: Request) -> bool:
    """`/metrics` is open without NOFX_METRICS_TOKEN; with it, only `Authorization: Bearer <token>` reads it."""
    expected = request.app.state.settings.metrics_token
    if not expected:
        return True
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), expected.encode())


class Throttle:
    """At most `limit` attempts per client address in any `window_s` seconds (in memory, per web process)."""

    def __init__(self, limit: int = LOGIN_ATTEMPTS, window_s: float = LOGIN_WINDOW_S) -> None:
        self.limit = limit
        self.window_s = window_s
        self._seen: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, client: str) -> int | None:
        """Count an attempt; None if it may go ahead, else the seconds until the next one may."""
        now = time.monotonic()
        attempts = self._seen.pop(client, None) or deque()
        while attempts and now - attempts[0] > self.window_s:
            attempts.popleft()
        self._seen[client] = attempts  # most recent last, so the least recent client is dropped at the cap
        while len(self._seen) > MAX_CLIENTS_TRACKED:
            self._seen.popitem(last=False)
        if len(attempts) >= self.limit:
            return max(1, int(self.window_s - (now - attempts[0])) + 1)
        attempts.append(now)
        return None


def client_address(request: Request) -> str:
    """The client's address as uvicorn saw it (behind a trusted proxy, from X-Forwarded-For)."""
    return request.client.host if request.client else "unknown"


def _admitted(state: State) -> OrderedDict[str, float]:
    admitted: OrderedDict[str, float] | None = getattr(state, "setup_browsers", None)
    if admitted is None:
        admitted = state.setup_browsers = OrderedDict()
    return admitted


def setup_admission(request: Request, cookie: str, cookie_path: str) -> Response | None:
    """None if this browser may use the setup page; else the answer: the code form (403), or, for the right
    `?setup_code=`, a redirect to the same page without it that admits the browser through `cookie`."""
    state = request.app.state
    presented = request.query_params.get(SETUP_CODE_PARAM)
    if presented is None:
        return None if admitted_browser(state, request.cookies.get(cookie)) else _code_form(request, wrong=False)
    if not setup_code_matches(state, presented.strip()):
        return _code_form(request, wrong=True)
    rest = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != SETUP_CODE_PARAM])
    response = RedirectResponse(request.url.path + (f"?{rest}" if rest else ""), status_code=303)
    response.headers["Cache-Control"] = "no-store"
    response.set_cookie(
        cookie,
        admit_browser(state),
        max_age=int(SETUP_ADMISSION_S),
        path=cookie_path,
        secure=cookies_secure(request),
        httponly=True,
        samesite="lax",  # the browser still sends it on GitHub's top-level redirect back to the callback
    )
    return response


def _code_form(request: Request, *, wrong: bool) -> Response:
    note = "<p><strong>That setup code is not right.</strong></p>" if wrong else ""
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Setup code · nofx</title></head>
<body><main><h1>Enter the setup code</h1>{note}
<p>Registering the GitHub App needs the one-time setup code <code>nofx serve</code> printed when it started
(open the address it printed, or paste the code here). It keeps whoever reaches this page first from
registering an App of their own.</p>
<form method="get" action="{html.escape(request.url.path)}">
<label>Setup code <input name="{SETUP_CODE_PARAM}" autocomplete="off" required></label>
<button type="submit">Continue</button></form></main></body></html>
"""
    return HTMLResponse(page, status_code=403, headers={"Cache-Control": "no-store"})
