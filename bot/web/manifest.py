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
import logging
import re
import secrets
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
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from bot.settings import Settings
from bot.web import guards
from bot.web.env_file import env_value, update_env_file
from bot.web.setup_pages import (
    NO_STORE,
    already_configured,
    escape,
    page,
    setup_body,
    setup_path,
    start_again,
)

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
        return already_configured(settings)
    refused = guards.setup_admission(request, SETUP_COOKIE, setup_path(request))
    if refused is not None:  # no setup code yet: nothing is issued or remembered for this browser
        return refused
    org = request.query_params.get("org", "").strip()
    if org and not _ORG_NAME.fullmatch(org):
        return page(
            "That is not an organization name",
            f"<p>GitHub organization names are letters, digits and single hyphens, up to 39 characters; "
            f"<code>{escape(org)}</code> is not one.</p>"
            f'<p><a href="{escape(request.url.path)}">Start again</a></p>',
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
    response = page("Set up nofx", setup_body(request, manifest, action, web, org, env_file))
    # Lax: the browser still sends it on GitHub's top-level redirect back to the callback.
    response.set_cookie(
        SETUP_COOKIE,
        browser,
        max_age=int(STATE_TTL_S),
        path=setup_path(request),
        secure=guards.cookies_secure(request),
        httponly=True,
        samesite="lax",
    )
    return response


async def setup_callback(request: Request) -> Response:
    """Trade GitHub's one-time code for the App's credentials, save them, then go install the App."""
    settings: Settings = request.app.state.settings
    if settings.app_configured:
        return already_configured(settings)
    code = request.query_params.get("code", "")
    state = request.query_params.get("state", "")
    if not _CODE.fullmatch(code):
        return page(
            "GitHub did not send a code",
            "<p>This address is where GitHub sends you back after creating the App, "
            "with a one-time <code>code</code>; this request has none.</p>" + start_again(request),
            status_code=400,
        )
    pending = _take_state(request.app.state, state, request.cookies.get(SETUP_COOKIE))
    if pending is None:
        return page(
            "This setup link is not one nofx started",
            "<p>Its <code>state</code> is unknown: the setup page was opened in another browser or more "
            "than an hour ago, the link was already used, or nofx restarted in between.</p>" + start_again(request),
            status_code=400,
        )
    async with _setup_lock(request.app.state):
        settings = request.app.state.settings
        if settings.app_configured:  # another callback finished while this one waited
            return already_configured(settings)
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
                "(Developer settings, GitHub Apps), then start again.</p>" + start_again(request)
            )
            return page(
                "GitHub did not hand over the App's credentials",
                f"<p>{escape(str(exc))}</p>{retry}",
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
        return page(
            "Saved, but the environment overrides it",
            f"<p>The App's credentials are in <code>{escape(env_file.name)}</code>, but these environment "
            f"variables take precedence over it: <code>{escape(', '.join(shadowed))}</code>. "
            "Unset them and restart nofx.</p>"
            f'<p>Then <a href="{escape(install_url)}">install the App</a> on your repositories.</p>',
            status_code=500,
        )
    return RedirectResponse(install_url, status_code=303, headers=NO_STORE)


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
        env_value(name)
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
