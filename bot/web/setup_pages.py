"""The setup pages' HTML: every value escaped, never cached, no referrer sent on."""

from __future__ import annotations

import html
import ipaddress
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from bot.settings import Settings

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
NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


def escape(text: str) -> str:
    return html.escape(text, quote=True)


def setup_path(request: Request) -> str:
    return urlsplit(str(request.base_url)).path.rstrip("/") + "/setup"


def start_again(request: Request) -> str:
    return f'<p><a href="{escape(setup_path(request))}">Start again from the setup page</a>.</p>'


def page(title: str, body: str, *, status_code: int = 200) -> HTMLResponse:
    """A complete, self-contained page; `body` is HTML whose every dynamic part is already escaped."""
    document = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)} · nofx</title><style>{_STYLE}</style></head>"
        f"<body><main><h1>{escape(title)}</h1>{body}</main></body></html>\n"
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


def already_configured(settings: Settings) -> Response:
    return page(
        "nofx is already set up",
        f"<p>nofx already works as GitHub App id <code>{escape(settings.app_id or '')}</code>, so it will not "
        "register another one.</p><p>To start over with a new App, remove <code>GITHUB_APP_ID</code> and "
        "<code>GITHUB_PRIVATE_KEY</code> from the environment and the <code>.env</code> file, then "
        "restart nofx.</p>",
        status_code=409,
    )


def setup_body(request: Request, manifest: Mapping[str, Any], action: str, web: str, org: str, env_file: Path) -> str:
    hook_url = str(manifest["hook_attributes"]["url"])
    owner = f"the organization <b>{escape(org)}</b>" if org else "your GitHub account"
    permissions = "".join(
        f"<li><code>{escape(str(name))}</code>: {escape(str(level))}</li>"
        for name, level in (manifest.get("default_permissions") or {}).items()
    )
    events = ", ".join(f"<code>{escape(str(event))}</code>" for event in manifest.get("default_events") or [])
    if org:
        switch = f'<p><a href="{escape(request.url.path)}">Register it under your own account instead</a>.</p>'
    else:
        switch = (
            f'<form method="get" action="{escape(request.url.path)}"><p><label>Or register it under an '
            'organization you administer:<br><input name="org" required maxlength="39" autocapitalize="off" '
            'pattern="[A-Za-z0-9\\-]{1,39}" placeholder="organization">'
            '</label> <button class="secondary" type="submit">Use it</button></p></form>'
        )
    return (
        "<p>nofx is running, but it is not a GitHub App yet. The button below asks GitHub to register "
        f"one, owned by {owner}, from nofx's manifest; you only choose its name.</p>"
        f'<form method="post" action="{escape(action)}">'
        f'<input type="hidden" name="manifest" value="{escape(json.dumps(manifest))}">'
        f'<button type="submit">Create the GitHub App on {escape(urlsplit(web).netloc)}</button></form>'
        f"{switch}"
        "<h2>What happens next</h2><ol>"
        "<li>GitHub shows the new App's settings, filled in from the manifest. Pick a name (names are "
        "unique on GitHub, so plain <i>nofx</i> may be taken) and click "
        "<b>Create GitHub App</b>.</li>"
        f"<li>GitHub sends you back to <code>{escape(str(manifest['redirect_url']))}</code>. nofx fetches the "
        f"App's id, private key and webhook secret and saves them in <code>{escape(env_file.name)}</code>, "
        "readable only by the account running nofx. Nothing is shown on screen.</li>"
        "<li>You land on the App's install page, where you choose the repositories nofx may work on.</li>"
        "</ol><p>Do it within an hour: the link back expires.</p>"
        "<h2>What the App may do</h2>"
        f"<ul>{permissions}</ul>"
        f"<p>Events it receives: {events}, and the installation events GitHub sends every App.</p>"
        f"<p>GitHub delivers them to <code>{escape(hook_url)}</code>.</p>"
        f"{unreachable_note(hook_url)}"
        f"<details><summary>The manifest</summary><pre>{escape(json.dumps(manifest, indent=2))}</pre></details>"
    )


def unreachable_note(hook_url: str) -> str:
    """Warn when github.com could never deliver a webhook to the address this page was opened on."""
    host = urlsplit(hook_url).hostname or ""
    try:
        private = ipaddress.ip_address(host).is_private
    except ValueError:
        private = host == "localhost" or host.endswith((".localhost", ".local", ".internal"))
    if not private:
        return ""
    return (
        f'<p class="note">github.com cannot reach <code>{escape(host)}</code>, so webhooks would never arrive. '
        "On a laptop, use a webhook proxy channel: open "
        '<a href="https://smee.io/new">smee.io/new</a>, set <code>WEBHOOK_PROXY_URL</code> to the '
        "channel's address and restart <code>nofx serve</code>; GitHub then delivers to the channel and "
        "<code>serve</code> relays each delivery to itself, signature and all. Or open this page through "
        "the public address nofx will have (a tunnel or your deployment), unless you use a GitHub "
        "Enterprise Server that can reach this host.</p>"
    )
