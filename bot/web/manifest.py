"""First run without credentials: register the GitHub App from `app.yml` with GitHub's manifest flow.

Until an App id and private key are configured, `/setup` shows a button that
posts the manifest to GitHub. GitHub creates the App and sends the browser back
to `/setup/callback` with a one-time code, which nofx trades for the App's
credentials, saves to `.env` (mode 0600) and starts using at once. This is the
flow Probot made familiar; nobody has to copy a private key around by hand.
"""

from __future__ import annotations

import asyncio
import functools
import html
import ipaddress
import json
import logging
import os
import re
import secrets
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import yaml
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import State
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from bot.settings import Settings
from bot.web import guards

log = logging.getLogger(__name__)

APP_YML = Path(__file__).resolve().parents[2] / "app.yml"
API_VERSION = "2022-11-28"
# GitHub delivers these to every App and refuses a manifest that subscribes to
# them ("Default events unsupported: installation"), so they stay out of the JSON.
ALWAYS_DELIVERED_EVENTS = frozenset({"installation", "installation_repositories"})
# A manifest code is good for one hour, so a setup page older than that is useless.
STATE_TTL_S = 3600.0
MAX_PENDING_STATES = 100
SETUP_COOKIE = "nofx_setup"
HttpFactory = Callable[[], httpx.AsyncClient]

_ORG_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}")
_CODE = re.compile(r"[A-Za-z0-9_-]{1,200}")
_BARE_ENV_VALUE = re.compile(r"[A-Za-z0-9_./:@+-]*")
_LINE_BREAKS = frozenset("\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


class ManifestError(ValueError):
    """`app.yml` is not a usable manifest; the message names the file."""


class ConversionError(Exception):
    """GitHub did not hand over the App's credentials; the message tells the user what to do."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


def routes() -> list[BaseRoute]:
    """The setup routes, for `create_app` to mount."""
    return [
        Route("/setup", setup_page, methods=["GET"], name="setup"),
        Route("/setup/callback", setup_callback, methods=["GET"], name="setup_callback"),
    ]


def load_manifest(
    app_yml: Path, base_url: str, *, public_url: str | None = None, webhook_proxy_url: str | None = None
) -> dict[str, Any]:
    """Read `app.yml` and point its webhook and redirect at `base_url`, as GitHub expects the JSON.

    `public_url` (NOFX_PUBLIC_URL), when known, takes the homepage and the webhook
    instead: the admin may open the page on a private address, but the redirect
    must come back to that same address for the setup cookie to be sent. With
    `webhook_proxy_url` (WEBHOOK_PROXY_URL), GitHub delivers to that channel.
    """
    try:
        data = yaml.safe_load(app_yml.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ManifestError(f"{app_yml} cannot be read: {exc}") from exc
    if not isinstance(data, dict):
        raise ManifestError(f"{app_yml} must be a YAML mapping")
    base = base_url.rstrip("/")
    public = (public_url or base).rstrip("/")
    manifest = dict(data)
    manifest["url"] = manifest.get("url") or public
    manifest["hook_attributes"] = {
        **(manifest.get("hook_attributes") or {}),
        "url": webhook_proxy_url or f"{public}/webhooks",
    }
    manifest["redirect_url"] = f"{base}/setup/callback"
    events = manifest.get("default_events") or []
    manifest["default_events"] = [event for event in events if event not in ALWAYS_DELIVERED_EVENTS]
    return manifest


def github_web_url(api_url: str) -> str:
    """The browser-facing GitHub for a REST base: github.com, a GHES host, or a test double's origin."""
    parts = urlsplit(api_url.rstrip("/"))
    host = parts.hostname or ""
    if host == "api.github.com":
        return "https://github.com"
    if host.startswith("api.") and host.endswith(".ghe.com"):  # GitHub Enterprise Cloud with data residency
        return f"{parts.scheme}://{parts.netloc.removeprefix('api.')}"
    if parts.path.endswith("/api/v3"):  # GitHub Enterprise Server
        return f"{parts.scheme}://{parts.netloc}{parts.path.removesuffix('/api/v3')}"
    return f"{parts.scheme}://{parts.netloc}"


async def setup_page(request: Request) -> Response:
    """Show what the App will be and a button that asks GitHub to register it from the manifest."""
    settings: Settings = request.app.state.settings
    if settings.app_configured:
        return _already_configured(settings)
    refused = guards.setup_admission(request, SETUP_COOKIE, _setup_path(request))
    if refused is not None:  # no setup code yet: nothing is issued or remembered for this browser
        return refused
    org = request.query_params.get("org", "").strip()
    if org and not _ORG_NAME.fullmatch(org):
        return _page(
            "That is not an organization name",
            f"<p>GitHub organization names are letters, digits and single hyphens, up to 39 characters; "
            f"<code>{_e(org)}</code> is not one.</p>"
            f'<p><a href="{_e(request.url.path)}">Start again</a></p>',
            status_code=400,
        )
    base_url = str(request.base_url).rstrip("/")
    app_yml: Path = getattr(request.app.state, "app_yml", None) or APP_YML
    manifest = await run_in_threadpool(
        functools.partial(
            load_manifest,
            app_yml,
            base_url,
            public_url=settings.public_url,
            webhook_proxy_url=settings.webhook_proxy_url,
        )
    )
    web = github_web_url(settings.github_api_url)
    owner = f"/organizations/{quote(org)}" if org else ""
    browser = request.cookies[SETUP_COOKIE]
    action = f"{web}{owner}/settings/apps/new?state={_remember_state(request.app.state, browser)}"
    env_file: Path = request.app.state.env_file
    response = _page("Set up nofx", _setup_body(request, manifest, action, web, org, env_file))
    # Lax: the browser still sends it on GitHub's top-level redirect back to the callback.
    response.set_cookie(
        SETUP_COOKIE,
        browser,
        max_age=int(STATE_TTL_S),
        path=_setup_path(request),
        secure=guards.cookies_secure(request),
        httponly=True,
        samesite="lax",
    )
    return response


async def setup_callback(request: Request) -> Response:
    """Trade GitHub's one-time code for the App's credentials, save them, then go install the App."""
    settings: Settings = request.app.state.settings
    if settings.app_configured:
        return _already_configured(settings)
    code = request.query_params.get("code", "")
    state = request.query_params.get("state", "")
    if not _CODE.fullmatch(code):
        return _page(
            "GitHub did not send a code",
            "<p>This address is where GitHub sends you back after creating the App, "
            "with a one-time <code>code</code>; this request has none.</p>" + _start_again(request),
            status_code=400,
        )
    pending = _take_state(request.app.state, state, request.cookies.get(SETUP_COOKIE))
    if pending is None:
        return _page(
            "This setup link is not one nofx started",
            "<p>Its <code>state</code> is unknown: the setup page was opened in another browser or more "
            "than an hour ago, the link was already used, or nofx restarted in between.</p>" + _start_again(request),
            status_code=400,
        )
    async with _setup_lock(request.app.state):
        settings = request.app.state.settings
        if settings.app_configured:  # another callback finished while this one waited
            return _already_configured(settings)
        try:
            app = await _convert_code(_http_factory(request), settings.github_api_url, code)
            values = _credentials(app)
        except ConversionError as exc:
            if exc.retryable:  # the code was not spent, so reloading this page can still work
                _restore_state(request.app.state, state, pending)
            retry = (
                "<p>Reload this page to try again.</p>"
                if exc.retryable
                else "<p>If GitHub created the App anyway, delete it in your GitHub settings "
                "(Developer settings, GitHub Apps), then start again.</p>" + _start_again(request)
            )
            return _page(
                "GitHub did not hand over the App's credentials",
                f"<p>{_e(str(exc))}</p>{retry}",
                status_code=502 if exc.retryable else 400,
            )
        env_file: Path = request.app.state.env_file
        reloaded = await run_in_threadpool(_save_and_reload, env_file, values)
        request.app.state.settings = reloaded
        _pending_states(request.app.state).clear()
        guards.setup_finished(request.app.state)
    log.info("GitHub App %s (id %s) registered; credentials saved to %s", app["slug"], app["id"], env_file)
    install_url = f"{_app_html_url(app, settings.github_api_url)}/installations/new"
    shadowed = _shadowed_by_environment(reloaded, values)
    if shadowed:
        log.warning("the environment overrides the new App's settings in %s: %s", env_file, shadowed)
        return _page(
            "Saved, but the environment overrides it",
            f"<p>The App's credentials are in <code>{_e(env_file.name)}</code>, but these environment "
            f"variables take precedence over it: <code>{_e(', '.join(shadowed))}</code>. "
            "Unset them and restart nofx.</p>"
            f'<p>Then <a href="{_e(install_url)}">install the App</a> on your repositories.</p>',
            status_code=500,
        )
    return RedirectResponse(install_url, status_code=303, headers=_NO_STORE)


def update_env_file(path: Path, values: Mapping[str, str | None]) -> None:
    """Set keys in a dotenv file (None removes one), keeping every other line; never readable by others.

    The file is written to a temporary file created with mode 0600 and renamed
    over the old one, so a private key is never world-readable, not even for an
    instant, and a crash leaves either the old file or the new one.
    """
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    written: set[str] = set()
    out: list[str] = []
    for raw in lines:
        key = _env_key(raw)
        if key is None or key not in values:
            out.append(raw)
            continue
        value = values[key]
        if value is not None and key not in written:
            out.append(f"{key}={_env_value(value)}")
            written.add(key)
    missing = [key for key, value in values.items() if value is not None and key not in written]
    if missing:
        if out and out[-1].strip():
            out.append("")
        out.append("# GitHub App credentials, written by the nofx setup page")
        out.extend(f"{key}={_env_value(values[key] or '')}" for key in missing)
    _write_private(path, "\n".join(out) + "\n")


# ---------------------------------------------------------------------------- exchange


async def _convert_code(factory: HttpFactory, api_url: str, code: str) -> dict[str, Any]:
    """POST /app-manifests/{code}/conversions: the only call in the flow, and it needs no auth."""
    url = f"{api_url.rstrip('/')}/app-manifests/{quote(code, safe='')}/conversions"
    headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": API_VERSION}
    try:
        async with factory() as client:
            response = await client.post(url, headers=headers)
    except httpx.HTTPError as exc:
        # Only the class name: the exception text carries the URL, and the URL carries the code.
        log.warning("manifest code conversion failed: %s", type(exc).__name__)
        raise ConversionError(
            f"nofx could not reach GitHub at {api_url} ({type(exc).__name__}).", retryable=True
        ) from None
    if response.status_code == 201:
        try:
            app = response.json()
        except ValueError:
            app = None
        if not isinstance(app, dict):
            raise ConversionError("GitHub answered with something that is not an App.", retryable=False)
        return app
    message = _github_message(response)
    log.warning("manifest code conversion refused: HTTP %s %s", response.status_code, message)
    if response.status_code == 404:
        raise ConversionError(
            "GitHub does not know this code. A code works once and expires an hour after the App was created.",
            retryable=False,
        )
    retryable = response.status_code >= 500 or response.status_code in (403, 429)
    detail = f": {message}" if message else "."
    raise ConversionError(f"GitHub answered HTTP {response.status_code}{detail}", retryable=retryable)


def _credentials(app: Mapping[str, Any]) -> dict[str, str | None]:
    """The `.env` values for a converted App; a key GitHub left out is removed, not kept stale."""
    app_id, slug, pem = app.get("id"), app.get("slug"), app.get("pem")
    if not isinstance(app_id, int) or not isinstance(slug, str) or not isinstance(pem, str) or not pem:
        raise ConversionError("GitHub's answer lacks the App's id, slug or private key.", retryable=False)

    def text(key: str) -> str | None:
        value = app.get(key)
        return str(value) if value not in (None, "") else None

    name = text("name") or slug
    try:
        _env_value(name)
    except ValueError:  # a display name is not worth losing the App over; the slug always fits
        name = slug
    return {
        "GITHUB_APP_ID": str(app_id),
        "GITHUB_APP_SLUG": slug,
        "GITHUB_APP_NAME": name,
        "GITHUB_CLIENT_ID": text("client_id"),
        "GITHUB_CLIENT_SECRET": text("client_secret"),
        "GITHUB_WEBHOOK_SECRET": text("webhook_secret"),
        "GITHUB_PRIVATE_KEY": pem.replace("\r\n", "\n"),
    }


def _app_html_url(app: Mapping[str, Any], api_url: str) -> str:
    """The App's page on GitHub, refusing anything that is not an http(s) URL."""
    html_url = app.get("html_url")
    if isinstance(html_url, str) and urlsplit(html_url).scheme in ("http", "https"):
        return html_url.rstrip("/")
    return f"{github_web_url(api_url)}/apps/{quote(str(app['slug']))}"


def _github_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    message = body.get("message") if isinstance(body, dict) else None
    return message[:300] if isinstance(message, str) else ""


def _http_factory(request: Request) -> HttpFactory:
    factory: HttpFactory | None = getattr(request.app.state, "http_factory", None)
    return factory or (lambda: httpx.AsyncClient(timeout=30.0))


def _save_and_reload(env_file: Path, values: Mapping[str, str | None]) -> Settings:
    update_env_file(env_file, values)
    return Settings.from_env(env_file=env_file)


def _shadowed_by_environment(settings: Settings, values: Mapping[str, str | None]) -> list[str]:
    """Names of variables whose environment value wins over what setup just wrote to `.env`."""
    checks = {
        "GITHUB_APP_ID": settings.app_id,
        "GITHUB_PRIVATE_KEY": settings.private_key,
        "GITHUB_WEBHOOK_SECRET": settings.webhook_secret,
    }
    return [name for name, actual in checks.items() if actual != values.get(name)]


# ---------------------------------------------------------------------------- state (CSRF)


@dataclass(frozen=True)
class _Pending:
    """A `state` we handed out: when, and to which browser (the value of its setup cookie)."""

    issued: float
    browser: str


def _pending_states(state: State) -> dict[str, _Pending]:
    pending: dict[str, _Pending] | None = getattr(state, "setup_states", None)
    if pending is None:
        pending = state.setup_states = {}
    return pending


def _remember_state(state: State, browser: str) -> str:
    """A fresh random `state` for GitHub to hand back, so the callback only accepts flows we started."""
    pending = _pending_states(state)
    now = time.monotonic()
    for token, entry in list(pending.items()):
        if now - entry.issued > STATE_TTL_S:
            del pending[token]
    while len(pending) >= MAX_PENDING_STATES:  # dicts keep insertion order: drop the oldest
        del pending[next(iter(pending))]
    token = secrets.token_urlsafe(32)
    pending[token] = _Pending(now, browser)
    return token


def _take_state(state: State, token: str, browser: str | None) -> _Pending | None:
    """Spend `token` if we issued it within the hour to this same browser; a link works once.

    Tying the state to a cookie is what makes it CSRF protection: someone who
    opened the setup page themselves cannot lure the admin's browser into
    finishing their flow.
    """
    entry = _pending_states(state).pop(token, None) if token else None
    if entry is None or entry.browser != browser or time.monotonic() - entry.issued > STATE_TTL_S:
        return None
    return entry


def _restore_state(state: State, token: str, entry: _Pending) -> None:
    _pending_states(state)[token] = entry


def _setup_lock(state: State) -> asyncio.Lock:
    lock: asyncio.Lock | None = getattr(state, "setup_lock", None)
    if lock is None:
        lock = state.setup_lock = asyncio.Lock()
    return lock


# ---------------------------------------------------------------------------- .env file


def _env_key(line: str) -> str | None:
    """The key a dotenv line sets, parsed the way `read_env_file` does."""
    stripped = line.strip()
    if not stripped or stripped.startswith("#") or "=" not in stripped:
        return None
    return stripped.partition("=")[0].removeprefix("export ").strip()


def _env_value(value: str) -> str:
    """Quote a value so `read_env_file` gives it back unchanged (it knows `\\n` and `\\"` only)."""
    if _BARE_ENV_VALUE.fullmatch(value):
        return value
    if any(c in _LINE_BREAKS for c in value):  # `str.splitlines` would cut the line there
        raise ValueError("a value with a line break other than \\n cannot go in a .env file")
    if "\\" not in value:
        return '"' + value.replace('"', '\\"').replace("\n", "\\n") + '"'
    if "\n" not in value and "'" not in value:
        return f"'{value}'"
    raise ValueError("a value with a backslash and a newline or a quote cannot go in a .env file")


def _write_private(path: Path, text: str) -> None:
    """Replace `path` atomically with a file only its owner can read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp creates the file with O_EXCL and mode 0600 before a byte of the key is written.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------- HTML

_STYLE = """
body{font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;
color:#1f2328;background:#f6f8fa}
main{max-width:40rem;margin:0 auto;padding:1.5rem 1rem 3rem}
h1{font-size:1.6rem;margin:.5rem 0 1rem}h2{font-size:1.15rem;margin:1.75rem 0 .5rem}
code,pre{font:.9em ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;overflow-wrap:anywhere}
pre{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:.75rem;white-space:pre-wrap}
button{font:inherit;font-weight:600;color:#fff;background:#1f883d;border:0;border-radius:6px;
padding:.75rem 1.25rem;width:100%;cursor:pointer}
button.secondary{color:#1f2328;background:#fff;border:1px solid #d0d7de;width:auto;padding:.4rem .9rem}
input{font:inherit;padding:.35rem .5rem;border:1px solid #d0d7de;border-radius:6px;max-width:100%}
.note{background:#fff8c5;border:1px solid #d4a72c;border-radius:6px;padding:.5rem .75rem}
li{margin:.25rem 0}a{color:#0969da}
@media (prefers-color-scheme:dark){body{color:#e6edf3;background:#0d1117}pre,input,button.secondary{
background:#161b22;color:#e6edf3;border-color:#30363d}.note{background:#3b2e00;border-color:#9e6a03}a{color:#4493f8}}
"""
_NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _setup_path(request: Request) -> str:
    return urlsplit(str(request.base_url)).path.rstrip("/") + "/setup"


def _start_again(request: Request) -> str:
    return f'<p><a href="{_e(_setup_path(request))}">Start again from the setup page</a>.</p>'


def _page(title: str, body: str, *, status_code: int = 200) -> HTMLResponse:
    """A complete, self-contained page; `body` is HTML whose every dynamic part is already escaped."""
    document = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{_e(title)} · nofx</title><style>{_STYLE}</style></head>"
        f"<body><main><h1>{_e(title)}</h1>{body}</main></body></html>\n"
    )
    headers = {
        "Cache-Control": "no-store",  # the page holds a single-use state token
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
        "frame-ancestors 'none'; base-uri 'none'",
        "X-Content-Type-Options": "nosniff",
        # Never a path or query in a Referer (a callback URL holds the code), yet still an Origin
        # header on the form's POST to GitHub, which "no-referrer" would turn into "null".
        "Referrer-Policy": "strict-origin",
    }
    return HTMLResponse(document, status_code=status_code, headers=headers)


def _already_configured(settings: Settings) -> Response:
    return _page(
        "nofx is already set up",
        f"<p>nofx already works as GitHub App id <code>{_e(settings.app_id or '')}</code>, so it will not "
        "register another one.</p><p>To start over with a new App, remove <code>GITHUB_APP_ID</code> and "
        "<code>GITHUB_PRIVATE_KEY</code> from the environment and the <code>.env</code> file, then "
        "restart nofx.</p>",
        status_code=409,
    )


def _setup_body(request: Request, manifest: Mapping[str, Any], action: str, web: str, org: str, env_file: Path) -> str:
    hook_url = str(manifest["hook_attributes"]["url"])
    owner = f"the organization <b>{_e(org)}</b>" if org else "your GitHub account"
    permissions = "".join(
        f"<li><code>{_e(str(name))}</code>: {_e(str(level))}</li>"
        for name, level in (manifest.get("default_permissions") or {}).items()
    )
    events = ", ".join(f"<code>{_e(str(event))}</code>" for event in manifest.get("default_events") or [])
    if org:
        switch = f'<p><a href="{_e(request.url.path)}">Register it under your own account instead</a>.</p>'
    else:
        switch = (
            f'<form method="get" action="{_e(request.url.path)}"><p><label>Or register it under an '
            'organization you administer:<br><input name="org" required maxlength="39" autocapitalize="off" '
            'pattern="[A-Za-z0-9\\-]{1,39}" placeholder="organization">'
            '</label> <button class="secondary" type="submit">Use it</button></p></form>'
        )
    return (
        "<p>nofx is running, but it is not a GitHub App yet. The button below asks GitHub to register "
        f"one, owned by {owner}, from nofx's manifest; you only choose its name.</p>"
        f'<form method="post" action="{_e(action)}">'
        f'<input type="hidden" name="manifest" value="{_e(json.dumps(manifest))}">'
        f'<button type="submit">Create the GitHub App on {_e(urlsplit(web).netloc)}</button></form>'
        f"{switch}"
        "<h2>What happens next</h2><ol>"
        "<li>GitHub shows the new App's settings, filled in from the manifest. Pick a name (names are "
        "unique on GitHub, so plain <i>nofx</i> may be taken) and click "
        "<b>Create GitHub App</b>.</li>"
        f"<li>GitHub sends you back to <code>{_e(str(manifest['redirect_url']))}</code>. nofx fetches the "
        f"App's id, private key and webhook secret and saves them in <code>{_e(env_file.name)}</code>, "
        "readable only by the account running nofx. Nothing is shown on screen.</li>"
        "<li>You land on the App's install page, where you choose the repositories nofx may work on.</li>"
        "</ol><p>Do it within an hour: the link back expires.</p>"
        "<h2>What the App may do</h2>"
        f"<ul>{permissions}</ul>"
        f"<p>Events it receives: {events}, and the installation events GitHub sends every App.</p>"
        f"<p>GitHub delivers them to <code>{_e(hook_url)}</code>.</p>"
        f"{_unreachable_note(hook_url)}"
        f"<details><summary>The manifest</summary><pre>{_e(json.dumps(manifest, indent=2))}</pre></details>"
    )


def _unreachable_note(hook_url: str) -> str:
    """Warn when github.com could never deliver a webhook to the address this page was opened on."""
    host = urlsplit(hook_url).hostname or ""
    try:
        private = ipaddress.ip_address(host).is_private
    except ValueError:
        private = host == "localhost" or host.endswith((".localhost", ".local", ".internal"))
    if not private:
        return ""
    return (
        f'<p class="note">github.com cannot reach <code>{_e(host)}</code>, so webhooks would never arrive. '
        "On a laptop, use a webhook proxy channel: open "
        '<a href="https://smee.io/new">smee.io/new</a>, set <code>WEBHOOK_PROXY_URL</code> to the '
        "channel's address and restart <code>nofx serve</code>; GitHub then delivers to the channel and "
        "<code>serve</code> relays each delivery to itself, signature and all. Or open this page through "
        "the public address nofx will have (a tunnel or your deployment), unless you use a GitHub "
        "Enterprise Server that can reach this host.</p>"
    )
