"""The run page behind a check run's "Details" link, and the login that lets a browser read it.

Auth choice: a browser cannot put a bearer token on a link from GitHub or on an `EventSource`, so the
page offers a small login form. The token is posted once; the answer is an HttpOnly, SameSite=Lax
session cookie holding an expiry and an HMAC of it keyed by the token, so the token never appears
in a URL, a page, a log or browser history, and changing NOFX_API_TOKEN ends every session. The
cookie is accepted for reads (GET) only; retry and cancel still need the bearer header, so a forged
cross-site form cannot act on runs.

The page is one HTML document with inline CSS and JS (no build step, no external assets, a CSP nonce);
it renders the run from embedded JSON (the `GET /runs/{id}` body) with `textContent` only, applies
each SSE event to the step it names, and refetches the JSON for outputs, durations and costs.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import re
import secrets
import time
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from bot.settings import Settings
from bot.web import guards

SESSION_COOKIE = "nofx_session"
SESSION_TTL_S = 12 * 3600
MAX_LOGIN_BODY = 4096
_NEXT = re.compile(r"^/runs/[A-Za-z0-9_-]{1,32}$")
_COMMON_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


# --- session cookie -------------------------------------------------------------------------------------------


def _signature(token: str, expires: int) -> str:
    return hmac.new(token.encode(), f"nofx-session:{expires}".encode(), hashlib.sha256).hexdigest()


def session_value(token: str, expires: int) -> str:
    """`<expires>.<hmac>`: proves the holder once knew the token, without containing it."""
    return f"{expires}.{_signature(token, expires)}"


def session_valid(request: Request) -> bool:
    """True for an unexpired session cookie made with the current NOFX_API_TOKEN (compared in constant time)."""
    token = request.app.state.settings.api_token
    expires_text, _, presented = request.cookies.get(SESSION_COOKIE, "").partition(".")
    if not token or not expires_text.isdigit() or len(expires_text) > 12 or not presented:
        return False
    expires = int(expires_text)
    if expires < time.time():
        return False
    return hmac.compare_digest(presented.encode(), _signature(token, expires).encode())


def wants_html(request: Request) -> bool:
    """True when the client prefers HTML to JSON (a browser following a link); JSON is the default."""
    best: dict[str, float] = {}
    for part in request.headers.get("accept", "").split(","):
        media, *params = (piece.strip() for piece in part.split(";"))
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        best[media.lower()] = max(quality, best.get(media.lower(), 0.0))
    html_q = best.get("text/html", 0.0)
    return html_q > 0 and html_q > best.get("application/json", 0.0)


async def login_form(request: Request) -> Response:
    """`GET /login?next=/runs/<id>`: the form a browser fills once."""
    return login_page(request, _safe_next(request.query_params.get("next")), status_code=200)


async def login(request: Request) -> Response:
    """`POST /login`: check the token, set the session cookie, go back to the run page.

    Throttled per client address (`guards.Throttle`): the token cannot be guessed at the speed of the network.
    """
    wait = request.app.state.login_throttle.retry_after(guards.client_address(request))
    if wait is not None:
        return HTMLResponse(
            "too many login attempts; try again later", status_code=429, headers={"Retry-After": str(wait)}
        )
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_LOGIN_BODY:
            return HTMLResponse("login form too large", status_code=413)
    fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=4)
    presented = (fields.get("token") or [""])[0].strip()
    target = _safe_next((fields.get("next") or [""])[0])
    settings: Settings = request.app.state.settings
    expected = settings.api_token
    if not expected or not presented or not hmac.compare_digest(presented.encode(), expected.encode()):
        message = "That token is not right." if expected else "This server has no NOFX_API_TOKEN set."
        return login_page(request, target, status_code=401, message=message)
    response = RedirectResponse(target, status_code=303, headers=_COMMON_HEADERS)
    response.set_cookie(
        SESSION_COOKIE,
        session_value(expected, int(time.time()) + SESSION_TTL_S),
        max_age=SESSION_TTL_S,
        httponly=True,
        secure=guards.cookies_secure(request),
        samesite="lax",  # sent on the top-level navigation from GitHub's "Details" link
        path="/",
    )
    return response


def login_page(request: Request, next_path: str, *, status_code: int = 401, message: str = "") -> Response:
    """The login form (also the answer to an unauthenticated browser asking for a run page)."""
    nonce = secrets.token_urlsafe(16)
    note = f'<p class="error" role="alert">{html.escape(message)}</p>' if message else ""
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>nofx: sign in</title>
<style nonce="{nonce}">{_BASE_CSS}
form{{display:grid;gap:.6rem;max-width:24rem}} input,button{{font:inherit;padding:.5rem}}
.error{{color:var(--bad)}}</style></head>
<body><main><h1>nofx</h1>
<p>Enter the server's API token (<code>NOFX_API_TOKEN</code>) to see this run.
The browser keeps a session cookie for 12 hours; the token itself is not stored.</p>{note}
<form method="post" action="/login">
<input type="hidden" name="next" value="{html.escape(next_path)}">
<label for="token">API token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
<button type="submit">Sign in</button></form></main></body></html>"""
    return HTMLResponse(body, status_code=status_code, headers=_page_headers(nonce))


def _safe_next(value: str | None) -> str:
    """Only a run page of this server: a login must not become an open redirect."""
    return value if value and _NEXT.fullmatch(value) else "/"


def _page_headers(nonce: str) -> dict[str, str]:
    policy = (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; connect-src 'self'; "
        "img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    )
    return {**_COMMON_HEADERS, "Content-Security-Policy": policy}


# --- the page -------------------------------------------------------------------------------------------------


def _script_json(data: dict[str, Any]) -> str:
    """JSON that cannot close its <script> element or start a comment, whatever the run's text holds."""
    text = json.dumps(data, separators=(",", ":"))  # ensure_ascii: U+2028/9 arrive escaped already
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def page(run: dict[str, Any]) -> Response:
    """The run page for `run` (a `run_json` dict); live updates come from `/runs/{id}/stream`."""
    nonce = secrets.token_urlsafe(16)
    title = html.escape(f"nofx run {run['id'][:8]} · {run['repository']}#{run['thread_number']}")
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style nonce="{nonce}">{_BASE_CSS}{_PAGE_CSS}</style></head>
<body><main id="app"><h1>{title}</h1>
<noscript><p>This page needs JavaScript to show the run; the same data is this URL's JSON
(<code>Accept: application/json</code>).</p></noscript></main>
<script type="application/json" id="run-data">{_script_json(run)}</script>
<script nonce="{nonce}">{_PAGE_JS}</script></body></html>"""
    return HTMLResponse(body, headers=_page_headers(nonce))


_BASE_CSS = """
:root{--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;--bg:#fff;--ok:#1a7f37;--bad:#d1242f;--run:#9a6700;--wait:#8250df}
@media (prefers-color-scheme:dark){:root{--fg:#e6edf3;--muted:#9198a1;--line:#3d444d;--bg:#0d1117;
--ok:#3fb950;--bad:#f85149;--run:#d29922;--wait:#a371f7}}
*{box-sizing:border-box}body{margin:0;font:16px/1.5 system-ui,sans-serif;color:var(--fg);background:var(--bg)}
main{max-width:52rem;margin:0 auto;padding:1rem}h1{font-size:1.3rem;margin:.2rem 0 .6rem;overflow-wrap:anywhere}
a{color:inherit}code,pre{font:13px/1.45 ui-monospace,monospace}
"""

_PAGE_CSS = """
h2{font-size:1.05rem;margin:1.4rem 0 .5rem}.muted{color:var(--muted)}
.badge{display:inline-block;padding:0 .5rem;border-radius:1rem;border:1px solid currentColor;font-size:.85rem;
white-space:nowrap}
.s-succeeded{color:var(--ok)}.s-failed{color:var(--bad)}.s-running,.s-queued{color:var(--run)}
.s-waiting{color:var(--wait)}.s-pending,.s-skipped,.s-cancelled{color:var(--muted)}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:.2rem .8rem;margin:0}dl.meta dt{color:var(--muted)}
dl.meta dd{margin:0;overflow-wrap:anywhere}
ol.steps{list-style:none;padding:0;margin:0;display:grid;gap:.6rem}
ol.steps>li{border:1px solid var(--line);border-radius:.5rem;padding:.6rem .8rem}
.step-head{display:flex;flex-wrap:wrap;gap:.4rem .8rem;align-items:baseline}.step-head b{overflow-wrap:anywhere}
.step-error{color:var(--bad);white-space:pre-wrap;overflow-wrap:anywhere}
pre{background:rgba(127,127,127,.1);padding:.5rem;border-radius:.4rem;overflow:auto;max-height:24rem}
ul.events{padding-left:1.1rem;margin:0}#live{font-size:.85rem}
blockquote{margin:.3rem 0;padding-left:.8rem;border-left:3px solid var(--line);white-space:pre-wrap;
overflow-wrap:anywhere}
"""

# Everything from the run is inserted with textContent or as a checked http(s) href: no HTML from data.
_PAGE_JS = r"""
"use strict";
const STEP_STATUS = {"step.enqueued": "queued", "step.started": "running", "step.finished": "succeeded",
  "step.failed": "failed", "step.waiting": "waiting", "step.approved": "succeeded", "step.rejected": "cancelled",
  "step.cancelled": "cancelled", "step.skipped": "skipped", "step.reset": "pending", "step.retrying": "queued"};
const RUN_STATUS = ["queued", "running", "waiting", "succeeded", "failed", "cancelled"];
const FINISHED = ["succeeded", "failed", "skipped", "cancelled"];
let run = JSON.parse(document.getElementById("run-data").textContent);
const events = [];
const openOutputs = {};  // what the reader opened or closed survives re-rendering
let live = "connecting";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value !== null && value !== undefined) node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined || child === "") continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}
function safeUrl(url) {
  return typeof url === "string" && /^(https?:\/\/|\/)/.test(url) && !url.startsWith("//") ? url : null;
}
function link(url, text) {
  const href = safeUrl(url);
  return href ? el("a", {href: href, rel: "noopener noreferrer"}, text) : text;
}
function badge(status) { return el("span", {class: "badge s-" + status, "data-role": "status"}, status); }
function seconds(value) {
  if (value === null || value === undefined) return "";
  if (value < 60) return value.toFixed(1) + " s";
  const minutes = Math.floor(value / 60);
  return minutes + " min " + Math.round(value % 60) + " s";
}
function elapsed(started, finished, stored) {
  if (stored !== null && stored !== undefined) return seconds(stored);
  if (!started) return "";
  const end = finished ? Date.parse(finished) : Date.now();
  return seconds(Math.max(0, (end - Date.parse(started)) / 1000)) + (finished ? "" : " so far");
}
function usd(value) { return "$" + (value || 0).toFixed(4); }

function renderStep(step) {
  const head = el("div", {class: "step-head"}, el("b", {}, step.name), el("span", {class: "muted"}, step.tool),
    badge(step.status));
  const time = elapsed(step.started_at, step.finished_at, step.duration_s);
  if (time) head.append(el("span", {class: "muted", "data-role": "duration"}, time));
  if (step.cost_usd || step.input_tokens) {
    head.append(el("span", {class: "muted"}, usd(step.cost_usd) + " · " + (step.input_tokens + step.output_tokens) +
      " tokens"));
  }
  if (step.attempts > 1) head.append(el("span", {class: "muted"}, "attempt " + step.attempts));
  const item = el("li", {id: "step-" + step.id, "data-step-name": step.name, "data-status": step.status}, head);
  if (step.depends_on.length) item.append(el("div", {class: "muted"}, "after " + step.depends_on.join(", ")));
  if (step.decided_by) item.append(el("div", {class: "muted"}, "decided by @" + step.decided_by));
  if (step.error) item.append(el("div", {class: "step-error"}, step.error));
  const output = step.output || {};
  if (typeof output.pull_request_url === "string") {
    item.append(el("div", {}, "Pull request: ", link(output.pull_request_url, output.pull_request_url)));
  }
  if (typeof output.output_tail === "string" && output.output_tail) {
    const summary = "Output of " + (output.command || step.tool) +
      (output.exit_code === undefined ? "" : " (exit " + output.exit_code + ")");
    const details = el("details", {"data-role": "output"}, el("summary", {}, summary), el("pre", {}, output.output_tail));
    details.open = openOutputs[step.id] ?? step.status === "failed";
    details.addEventListener("toggle", () => { openOutputs[step.id] = details.open; });
    item.append(details);
  }
  const files = run.artifacts.filter(a => a.step_id === step.id);
  if (files.length) {
    const list = el("div", {class: "muted"}, "Artifacts: ");
    files.forEach((a, i) => { if (i) list.append(" · "); list.append(link(a.url, a.name + " (" + a.size + " B)")); });
    item.append(list);
  }
  return item;
}

function render() {
  const app = document.getElementById("app");
  const title = "nofx run " + run.id.slice(0, 8) + " · " + run.repository + "#" + run.thread_number;
  document.title = title;
  const meta = el("dl", {class: "meta"});
  const row = (name, ...value) => meta.append(el("dt", {}, name), el("dd", {}, ...value));
  row("Status", el("span", {id: "run-status", "data-status": run.status}, badge(run.status)), " ",
    el("span", {id: "live", class: "muted"}, live));
  row("Thread", link(run.thread_url, run.repository + "#" + run.thread_number));
  row("Asked by", "@" + run.requester + " (" + run.trigger + ")");
  if (run.pull_request_url) row("Pull request", el("span", {id: "pr"}, link(run.pull_request_url, run.pull_request_url)));
  if (run.branch) row("Branch", el("code", {}, run.branch));
  row("Started", run.started_at ? new Date(run.started_at).toLocaleString() : "not yet");
  const time = elapsed(run.started_at, run.finished_at, run.duration_s);
  if (time) row("Duration", time);
  row("Cost", usd(run.costs.cost_usd) + " · " + run.costs.input_tokens + " in / " + run.costs.output_tokens +
    " out tokens");
  if (run.error) row("Error", el("span", {class: "step-error"}, run.error));
  const steps = el("ol", {class: "steps", id: "steps"}, ...run.steps.map(renderStep));
  const recent = el("ul", {class: "events", id: "events"},
    ...events.slice(-30).reverse().map(e => el("li", {}, new Date(e.created_at).toLocaleTimeString() + " " + e.type +
      (e.payload && e.payload.name ? " " + e.payload.name : ""))));
  app.replaceChildren(el("h1", {}, title), meta, el("h2", {}, "Request"), el("blockquote", {}, run.request),
    el("h2", {}, "Plan"), el("p", {}, (run.plan && run.plan.goal) || ""), steps,
    el("h2", {}, "Activity"), events.length ? recent : el("p", {class: "muted"}, "Live events appear here."));
}

function apply(event) {
  events.push(event);
  const status = STEP_STATUS[event.type];
  const step = run.steps.find(s => s.id === event.step_id);
  if (step && status) {
    step.status = status;
    if (status === "running") { step.started_at = event.created_at; step.finished_at = null; step.duration_s = null; }
    if (FINISHED.includes(status) && step.started_at) { step.finished_at = event.created_at; step.duration_s = null; }
  }
  const runStatus = event.type.startsWith("run.") ? event.type.slice(4) : null;
  if (RUN_STATUS.includes(runStatus)) run.status = runStatus;
}

let refreshTimer = null;
function refresh() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => {
    fetch(location.pathname, {headers: {Accept: "application/json"}, credentials: "same-origin", cache: "no-store"})
      .then(r => r.ok ? r.json() : null).then(fresh => { if (fresh) { run = fresh; render(); } }).catch(() => {});
  }, 400);
}

const source = new EventSource(location.pathname + "/stream");
source.onopen = () => { live = "live"; render(); };
source.onmessage = message => { apply(JSON.parse(message.data)); render(); refresh(); };
source.addEventListener("end", () => { source.close(); live = "finished"; render(); refresh(); });
source.onerror = () => {
  live = source.readyState === EventSource.CLOSED ? "disconnected — reload the page" : "reconnecting…";
  render();
};
setInterval(() => { if (run.steps.some(s => s.status === "running")) render(); }, 1000);
render();
"""
