"""The manifest flow end to end: setup page, GitHub's round trip, credentials in a private `.env`.

GitHub is the HTTP double, run as a GitHub Enterprise Server (REST under
`/api/v3`) so the web/API URL split is exercised too; it refuses any request
GitHub's OpenAPI description would refuse.
"""

from __future__ import annotations

import dataclasses
import html
import json
import os
import re
import socket
import stat
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.testclient import TestClient

from bot.settings import Settings, read_env_file
from bot.web import guards
from bot.web import manifest as setup
from bot.web.env_file import env_value, update_env_file
from tests.support.github_double import GitHubDouble

BASE = "https://nofx.example.com"
CONVERSION = "/app-manifests/{code}/conversions"
APP_ID = 4242
CLIENT_SECRET = "client-secret-0123456789abcdef"
WEBHOOK_SECRET = "webhook-secret-0123456789abcdef"
SETUP_CODE = guards.new_setup_code()
# Which permission GitHub wants before it lets a manifest subscribe to an event.
EVENT_PERMISSION = {
    "issues": "issues",
    "issue_comment": "issues",
    "pull_request": "pull_requests",
    "pull_request_review": "pull_requests",
    "pull_request_review_comment": "pull_requests",
    "check_run": "checks",
    "check_suite": "checks",
    "workflow_run": "actions",
}


@pytest.fixture(scope="session")
def app_pem() -> tuple[str, str]:
    """The private key GitHub hands over (PKCS#1, as GitHub writes it) and its public half."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public.decode()


@pytest.fixture
def pem(app_pem: tuple[str, str]) -> str:
    return app_pem[0]


@pytest.fixture
def ghes(app_pem: tuple[str, str]) -> Iterator[GitHubDouble]:
    """A GitHub Enterprise Server; leaving it fails the test if nofx sent a request GitHub would refuse."""
    with GitHubDouble(
        app_id=APP_ID, public_key_pem=app_pem[1], path_prefix="/api/v3", slug="nofx-acme", name="nofx (acme)"
    ) as double:
        double.html_url = web_url(double)
        yield double


@pytest.fixture
def env_file(tmp_path: Path) -> Path:
    return tmp_path / ".env"


@pytest.fixture
def environ(monkeypatch: pytest.MonkeyPatch, ghes: GitHubDouble) -> None:
    """A process environment with no App in it, pointing at the GitHub double."""
    for name in (
        "GITHUB_APP_ID",
        "GITHUB_PRIVATE_KEY",
        "GITHUB_PRIVATE_KEY_PATH",
        "GITHUB_WEBHOOK_SECRET",
        "NOFX_PUBLIC_URL",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GITHUB_API_URL", ghes.base_url)


@pytest.fixture
def setup_app(environ: None, env_file: Path) -> Starlette:
    """The setup routes with the state `create_app` gives them, and the default HTTP client."""
    app = Starlette(routes=setup.routes())
    app.state.settings = Settings.from_env(env_file=env_file)
    app.state.env_file = env_file
    app.state.setup_code = SETUP_CODE  # what `nofx serve` printed
    return app


async def admitted(client: httpx.AsyncClient) -> httpx.AsyncClient:
    """A browser that opened the address `nofx serve` printed: it now holds an admitted setup cookie."""
    response = await client.get(f"/setup?setup_code={SETUP_CODE}")
    assert response.status_code == 303 and response.headers["location"] == "/setup", response.text
    return client


@pytest.fixture
async def browser(setup_app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """The admin's browser: admitted with the setup code, it keeps the setup cookie between pages."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(setup_app), base_url=BASE) as client:
        yield await admitted(client)


@pytest.fixture(autouse=True)
def _no_stray_env_file_in_cwd() -> Iterator[None]:
    """Settings.from_env defaults to `./.env`; make sure no test writes one by accident."""
    existed = Path(".env").exists()
    yield
    assert Path(".env").exists() == existed


def web_url(ghes: GitHubDouble) -> str:
    return setup.github_web_url(ghes.base_url)


def define_code(ghes: GitHubDouble, code: str, pem: str) -> None:
    """Make `code` convertible, as GitHub does once someone creates the App from the manifest."""
    ghes.manifest_codes[code] = {"pem": pem, "client_secret": CLIENT_SECRET, "webhook_secret": WEBHOOK_SECRET}


def closed_port_url() -> str:
    """An address where nothing listens: GitHub is down."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/api/v3"


def form_of(page: str) -> tuple[str, dict[str, Any]]:
    """The setup form's action and the manifest it posts, read the way a browser would."""
    action = re.search(r'<form method="post" action="([^"]*)">', page)
    manifest = re.search(r'<input type="hidden" name="manifest" value="([^"]*)">', page)
    assert action and manifest, page
    return html.unescape(action.group(1)), json.loads(html.unescape(manifest.group(1)))


async def start_setup(browser: httpx.AsyncClient, query: str = "") -> str:
    """Open the setup page and return the state GitHub would hand back."""
    response = await browser.get(f"/setup{query}")
    assert response.status_code == 200
    action, _ = form_of(response.text)
    return httpx.URL(action).params["state"]


def write(path: Path, text: str, *, mode: int = 0o600) -> None:
    path.write_text(text)
    path.chmod(mode)


def read(path: Path) -> str | None:
    """The file's text, or None when it does not exist."""
    return path.read_text() if path.exists() else None


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def shows_no_secret(response: httpx.Response) -> bool:
    text = response.text + json.dumps(dict(response.headers))
    return not any(s in text for s in ("secret-0123456789abcdef", "PRIVATE KEY", "stale-secret"))


# ---------------------------------------------------------------------------- manifest


def test_manifest_points_github_at_this_deployment() -> None:
    manifest = setup.load_manifest(setup.APP_YML, BASE + "/")

    assert manifest["name"] == "nofx"
    assert manifest["url"] == BASE
    assert manifest["hook_attributes"] == {"url": f"{BASE}/webhooks", "active": True}
    assert manifest["redirect_url"] == f"{BASE}/setup/callback"
    assert manifest["public"] is False
    assert manifest["default_permissions"] == {
        "actions": "read",
        "checks": "write",
        "contents": "write",
        "issues": "write",
        "pull_requests": "write",
        "metadata": "read",
    }


def test_manifest_leaves_out_events_github_refuses() -> None:
    listed = setup.yaml.safe_load(setup.APP_YML.read_text())["default_events"]
    manifest = setup.load_manifest(setup.APP_YML, BASE)

    assert {"installation", "installation_repositories"} <= set(listed)
    assert manifest["default_events"] == [e for e in listed if e not in setup.ALWAYS_DELIVERED_EVENTS]
    # GitHub also refuses an event that no requested permission covers.
    for event in manifest["default_events"]:
        assert EVENT_PERMISSION[event] in manifest["default_permissions"], event


def test_manifest_keeps_a_homepage_the_file_names(tmp_path: Path) -> None:
    app_yml = tmp_path / "app.yml"
    app_yml.write_text("name: x\nurl: https://example.org/nofx\nhook_attributes: {url: placeholder}\n")

    manifest = setup.load_manifest(app_yml, BASE)

    assert manifest["url"] == "https://example.org/nofx"
    assert manifest["hook_attributes"] == {"url": f"{BASE}/webhooks"}
    assert manifest["default_events"] == []


def test_manifest_sends_webhooks_to_the_public_url_when_known() -> None:
    manifest = setup.load_manifest(setup.APP_YML, "http://localhost:3000", public_url="https://nofx.example.com/")

    assert manifest["url"] == BASE
    assert manifest["hook_attributes"]["url"] == f"{BASE}/webhooks"
    assert manifest["redirect_url"] == "http://localhost:3000/setup/callback"  # back to this browser's cookie


def test_manifest_sends_webhooks_to_the_proxy_channel_when_set() -> None:
    channel = "https://smee.io/c6cnRNjYW9wqx1Y3"
    manifest = setup.load_manifest(setup.APP_YML, "http://localhost:3000", webhook_proxy_url=channel)

    assert manifest["hook_attributes"]["url"] == channel  # `serve` relays from it (WEBHOOK_PROXY_URL)
    assert manifest["redirect_url"] == "http://localhost:3000/setup/callback"


@pytest.mark.parametrize(
    ("api_url", "web"),
    [
        ("https://api.github.com", "https://github.com"),
        ("https://api.github.com/", "https://github.com"),
        ("https://ghe.example.com/api/v3", "https://ghe.example.com"),
        ("https://ghe.example.com/api/v3/", "https://ghe.example.com"),
        ("https://api.acme.ghe.com", "https://acme.ghe.com"),
        ("http://127.0.0.1:8765", "http://127.0.0.1:8765"),
        ("http://127.0.0.1:8765/some/prefix", "http://127.0.0.1:8765"),
    ],
)
def test_github_web_url(api_url: str, web: str) -> None:
    assert setup.github_web_url(api_url) == web


# ---------------------------------------------------------------------------- setup page


async def test_setup_page_posts_the_manifest_to_github(
    browser: httpx.AsyncClient, setup_app: Starlette, ghes: GitHubDouble
) -> None:
    response = await browser.get("/setup")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-store"
    assert 'name="viewport"' in response.text
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", response.text)  # no external assets
    action, manifest = form_of(response.text)
    assert action.startswith(f"{web_url(ghes)}/settings/apps/new?state=")
    assert httpx.URL(action).params["state"] in setup_app.state.setup_states
    assert manifest == setup.load_manifest(setup.APP_YML, BASE)
    assert f"{BASE}/webhooks" in response.text
    assert "cannot reach" not in response.text


async def test_every_visit_gets_its_own_state(browser: httpx.AsyncClient, setup_app: Starlette) -> None:
    first, second = await start_setup(browser), await start_setup(browser)

    assert first != second
    assert set(setup_app.state.setup_states) == {first, second}


async def test_pending_states_are_capped(browser: httpx.AsyncClient, setup_app: Starlette) -> None:
    states = [await start_setup(browser) for _ in range(setup.MAX_PENDING_STATES + 5)]

    assert len(setup_app.state.setup_states) == setup.MAX_PENDING_STATES
    assert states[0] not in setup_app.state.setup_states
    assert states[-1] in setup_app.state.setup_states


async def test_setup_page_for_an_organization(browser: httpx.AsyncClient, ghes: GitHubDouble) -> None:
    response = await browser.get("/setup", params={"org": "acme-corp"})

    action, manifest = form_of(response.text)
    assert action.startswith(f"{web_url(ghes)}/organizations/acme-corp/settings/apps/new?state=")
    assert httpx.URL(action).params["state"]
    assert manifest["redirect_url"] == f"{BASE}/setup/callback"
    assert "acme-corp" in response.text


@pytest.mark.parametrize("org", ["<script>alert(1)</script>", "-acme", "acme-", "a--b", "x" * 40, "a/b"])
async def test_setup_page_refuses_what_is_not_an_organization(browser: httpx.AsyncClient, org: str) -> None:
    response = await browser.get("/setup", params={"org": org})

    assert response.status_code == 400
    assert "<script>" not in response.text
    assert html.escape(org) in response.text
    assert 'method="post"' not in response.text


async def test_setup_page_escapes_what_the_manifest_says(
    browser: httpx.AsyncClient, setup_app: Starlette, tmp_path: Path
) -> None:
    setup_app.state.app_yml = tmp_path / "app.yml"
    write(
        setup_app.state.app_yml,
        'name: \'nofx"><script>alert(1)</script>\'\ndefault_permissions: {"issues<marquee>": write}\n',
    )

    response = await browser.get("/setup")

    assert "<script>" not in response.text
    assert "<marquee>" not in response.text
    _, manifest = form_of(response.text)
    assert manifest["name"] == 'nofx"><script>alert(1)</script>'


async def test_setup_page_warns_when_github_cannot_deliver_webhooks(setup_app: Starlette) -> None:
    transport = httpx.ASGITransport(setup_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:3000") as local:
        response = await (await admitted(local)).get("/setup")

    assert "cannot reach <code>127.0.0.1</code>" in response.text
    assert "WEBHOOK_PROXY_URL" in response.text and "smee.io/new" in response.text  # the laptop's way out
    _, manifest = form_of(response.text)
    assert manifest["hook_attributes"]["url"] == "http://127.0.0.1:3000/webhooks"


async def test_setup_page_uses_the_public_url_for_webhooks(
    setup_app: Starlette, env_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOFX_PUBLIC_URL", BASE)
    setup_app.state.settings = Settings.from_env(env_file=env_file)
    transport = httpx.ASGITransport(setup_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:3000") as local:
        response = await (await admitted(local)).get("/setup")

    _, manifest = form_of(response.text)
    assert manifest["hook_attributes"]["url"] == f"{BASE}/webhooks"
    assert manifest["redirect_url"] == "http://127.0.0.1:3000/setup/callback"
    assert "cannot reach" not in response.text


async def test_setup_cookie_reaches_only_the_setup_routes(browser: httpx.AsyncClient) -> None:
    response = await browser.get("/setup")

    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{setup.SETUP_COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" in cookie
    assert "Path=/setup" in cookie
    again = await browser.get("/setup")
    assert again.headers["set-cookie"].split(";")[0] == cookie.split(";")[0]  # one browser, one id


# ---------------------------------------------------------------------------- setup code


async def test_the_setup_page_needs_the_code_serve_printed(setup_app: Starlette) -> None:
    """Whoever reaches /setup first cannot register an App of their own (issue 10, finding 6)."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(setup_app), base_url=BASE) as stranger:
        first = await stranger.get("/setup")
        wrong = await stranger.get("/setup", params={"setup_code": "a-guessed-code"})
        stranger.cookies.set(setup.SETUP_COOKIE, "A" * 22)  # a made-up browser id
        forged = await stranger.get("/setup")
        for refused in (first, wrong, forged):
            assert refused.status_code == 403
            assert "set-cookie" not in refused.headers
            assert "settings/apps/new" not in refused.text and 'name="setup_code"' in refused.text
        assert not getattr(setup_app.state, "setup_states", {})
        stranger.cookies.clear()
        page = await (await admitted(stranger)).get("/setup")
    assert page.status_code == 200 and "settings/apps/new?state=" in page.text


async def test_strangers_cannot_evict_the_admins_pending_setup(
    browser: httpx.AsyncClient, setup_app: Starlette, ghes: GitHubDouble, env_file: Path, pem: str
) -> None:
    state = await start_setup(browser)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(setup_app), base_url=BASE) as stranger:
        for _ in range(setup.MAX_PENDING_STATES + 5):
            assert (await stranger.get("/setup")).status_code == 403
    assert list(setup_app.state.setup_states) == [state]

    define_code(ghes, "c0ffee", pem)
    response = await browser.get("/setup/callback", params={"code": "c0ffee", "state": state})

    assert response.status_code == 303
    assert setup_app.state.setup_code is None  # registered: the code is spent


def test_setup_cookies_are_secure_behind_a_tls_proxy(
    environ: None, env_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TLS ends at a proxy: the request is plain http to the public host, and the cookie is still Secure."""
    monkeypatch.setenv("NOFX_PUBLIC_URL", BASE)
    app = Starlette(routes=setup.routes())
    app.state.settings = Settings.from_env(env_file=env_file)
    app.state.env_file = env_file
    app.state.setup_code = SETUP_CODE
    with TestClient(app, base_url=BASE.replace("https://", "http://")) as proxied:
        response = proxied.get(f"/setup?setup_code={SETUP_CODE}", follow_redirects=False)
    assert response.status_code == 303
    assert "Secure" in response.headers["set-cookie"]


# ---------------------------------------------------------------------------- callback


async def test_callback_saves_the_credentials_and_goes_to_the_install_page(
    browser: httpx.AsyncClient, setup_app: Starlette, ghes: GitHubDouble, env_file: Path, pem: str
) -> None:
    write(env_file, "# mine\nOPENAI_API_KEY=sk-keep\nGITHUB_APP_ID=\nexport GITHUB_APP_SLUG=old\n", mode=0o644)
    define_code(ghes, "c0ffee", pem)
    state = await start_setup(browser)

    response = await browser.get("/setup/callback", params={"code": "c0ffee", "state": state})

    assert response.status_code == 303
    assert response.headers["location"] == f"{web_url(ghes)}/apps/nofx-acme/installations/new"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert shows_no_secret(response)
    assert mode_of(env_file) == 0o600
    assert read_env_file(env_file) == {
        "OPENAI_API_KEY": "sk-keep",
        "GITHUB_APP_ID": str(APP_ID),
        "GITHUB_APP_SLUG": "nofx-acme",
        "GITHUB_APP_NAME": "nofx (acme)",
        "GITHUB_CLIENT_ID": ghes.client_id,
        "GITHUB_CLIENT_SECRET": CLIENT_SECRET,
        "GITHUB_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "GITHUB_PRIVATE_KEY": pem,
    }
    assert (read(env_file) or "").startswith("# mine\nOPENAI_API_KEY=sk-keep\nGITHUB_APP_ID=4242\n")
    escaped = pem.replace("\n", "\\n")  # one line in double quotes, newlines written as \n
    assert f'\nGITHUB_PRIVATE_KEY="{escaped}"' in (read(env_file) or "")
    assert [p.name for p in env_file.parent.iterdir()] == [".env"]  # no temporary file left behind
    settings: Settings = setup_app.state.settings
    assert settings.app_configured
    assert (settings.app_id, settings.private_key, settings.webhook_secret) == (str(APP_ID), pem, WEBHOOK_SECRET)
    assert settings.github_api_url == ghes.base_url

    (call,) = ghes.calls("POST", CONVERSION)
    assert call.path == "/api/v3/app-manifests/c0ffee/conversions"
    assert call.headers["accept"] == "application/vnd.github+json"
    assert call.headers["x-github-api-version"] == "2022-11-28"
    assert "authorization" not in call.headers
    assert call.status == 201


async def test_a_setup_link_works_once(
    browser: httpx.AsyncClient, setup_app: Starlette, ghes: GitHubDouble, pem: str
) -> None:
    define_code(ghes, "c0ffee", pem)
    state = await start_setup(browser)
    await browser.get("/setup/callback", params={"code": "c0ffee", "state": state})
    setup_app.state.settings = Settings.from_env(env_file=Path("/nonexistent/.env"))  # as if not configured

    response = await browser.get("/setup/callback", params={"code": "c0ffee", "state": state})

    assert response.status_code == 400
    assert len(ghes.calls("POST", CONVERSION)) == 1


@pytest.mark.parametrize("state", [None, "", "forged"])
async def test_callback_refuses_a_flow_it_did_not_start(
    browser: httpx.AsyncClient, ghes: GitHubDouble, env_file: Path, pem: str, state: str | None
) -> None:
    define_code(ghes, "c0ffee", pem)
    await start_setup(browser)
    params = {"code": "c0ffee"} | ({"state": state} if state is not None else {})

    response = await browser.get("/setup/callback", params=params)

    assert response.status_code == 400
    assert "not one nofx started" in response.text
    assert 'href="/setup"' in response.text
    assert ghes.calls("POST", CONVERSION) == []
    assert read(env_file) is None


async def test_callback_refuses_a_state_issued_to_another_browser(
    browser: httpx.AsyncClient, setup_app: Starlette, ghes: GitHubDouble, env_file: Path, pem: str
) -> None:
    """Someone who opened the setup page themselves cannot make the admin's browser finish their flow."""
    define_code(ghes, "attacker", pem)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(setup_app), base_url=BASE) as attacker:
        state = await start_setup(await admitted(attacker))

    response = await browser.get("/setup/callback", params={"code": "attacker", "state": state})

    assert response.status_code == 400
    assert ghes.calls("POST", CONVERSION) == []
    assert read(env_file) is None


@pytest.mark.parametrize("code", [None, "", "../../user", "a b"])
async def test_callback_refuses_a_missing_or_strange_code(
    browser: httpx.AsyncClient, ghes: GitHubDouble, env_file: Path, code: str | None
) -> None:
    state = await start_setup(browser)
    params = {"state": state} | ({"code": code} if code is not None else {})

    response = await browser.get("/setup/callback", params=params)

    assert response.status_code == 400
    assert "did not send a code" in response.text
    assert ghes.calls("POST", CONVERSION) == []
    assert read(env_file) is None


async def test_expired_code_says_to_start_again_and_writes_nothing(
    browser: httpx.AsyncClient, setup_app: Starlette, ghes: GitHubDouble, env_file: Path
) -> None:
    ghes.respond("POST", CONVERSION, 404)
    state = await start_setup(browser)

    response = await browser.get("/setup/callback", params={"code": "expired", "state": state})

    assert response.status_code == 400
    assert "expires an hour after" in response.text
    assert "Start again" in response.text
    assert len(ghes.calls("POST", CONVERSION)) == 1
    assert read(env_file) is None
    assert not setup_app.state.settings.app_configured
    assert state not in setup_app.state.setup_states


async def test_github_server_error_can_be_retried_by_reloading(
    browser: httpx.AsyncClient, setup_app: Starlette, ghes: GitHubDouble, env_file: Path, pem: str
) -> None:
    ghes.respond("POST", CONVERSION, 502)
    define_code(ghes, "c0ffee", pem)
    params = {"code": "c0ffee", "state": await start_setup(browser)}

    failed = await browser.get("/setup/callback", params=params)
    assert failed.status_code == 502
    assert "GitHub answered HTTP 502: Server Error" in failed.text
    assert "Reload this page" in failed.text
    assert read(env_file) is None

    retried = await browser.get("/setup/callback", params=params)
    assert retried.status_code == 303
    assert setup_app.state.settings.app_id == str(APP_ID)


async def test_unreachable_github_can_be_retried_by_reloading(
    browser: httpx.AsyncClient, setup_app: Starlette, ghes: GitHubDouble, env_file: Path, pem: str
) -> None:
    define_code(ghes, "c0ffee", pem)
    params = {"code": "c0ffee", "state": await start_setup(browser)}
    settings: Settings = setup_app.state.settings
    down = closed_port_url()
    setup_app.state.settings = dataclasses.replace(settings, github_api_url=down)

    failed = await browser.get("/setup/callback", params=params)
    assert failed.status_code == 502
    assert f"could not reach GitHub at {down} (ConnectError)" in failed.text
    assert "c0ffee" not in failed.text
    assert read(env_file) is None

    setup_app.state.settings = settings  # GitHub is back
    retried = await browser.get("/setup/callback", params=params)
    assert retried.status_code == 303


async def test_callback_refuses_when_the_app_is_already_configured(
    browser: httpx.AsyncClient, setup_app: Starlette, ghes: GitHubDouble, env_file: Path, pem: str
) -> None:
    define_code(ghes, "c0ffee", pem)
    state = await start_setup(browser)
    write(env_file, "GITHUB_APP_ID=7\nGITHUB_PRIVATE_KEY=old-key\n")
    setup_app.state.settings = Settings.from_env(env_file=env_file)

    response = await browser.get("/setup/callback", params={"code": "c0ffee", "state": state})

    assert response.status_code == 409
    assert "already set up" in response.text
    assert "old-key" not in response.text
    assert ghes.calls("POST", CONVERSION) == []
    assert read(env_file) == "GITHUB_APP_ID=7\nGITHUB_PRIVATE_KEY=old-key\n"
    assert (await browser.get("/setup")).status_code == 409


async def test_environment_that_overrides_the_new_app_is_named(
    browser: httpx.AsyncClient, ghes: GitHubDouble, monkeypatch: pytest.MonkeyPatch, pem: str
) -> None:
    define_code(ghes, "c0ffee", pem)
    state = await start_setup(browser)
    monkeypatch.setenv("GITHUB_WEBHOOK_SECRET", "stale-secret")

    response = await browser.get("/setup/callback", params={"code": "c0ffee", "state": state})

    assert response.status_code == 500
    assert "GITHUB_WEBHOOK_SECRET" in response.text
    assert shows_no_secret(response)
    assert f"{web_url(ghes)}/apps/nofx-acme/installations/new" in response.text


async def test_nothing_secret_is_logged(
    browser: httpx.AsyncClient, ghes: GitHubDouble, pem: str, caplog: pytest.LogCaptureFixture
) -> None:
    define_code(ghes, "c0ffee", pem)
    state = await start_setup(browser)

    with caplog.at_level("DEBUG", logger="bot.web.manifest"):
        await browser.get("/setup/callback", params={"code": "c0ffee", "state": state})

    assert "GitHub App nofx-acme (id 4242) registered" in caplog.text
    assert not any(s in caplog.text for s in (CLIENT_SECRET, WEBHOOK_SECRET, "PRIVATE KEY", "c0ffee"))


# ---------------------------------------------------------------------------- .env file


def test_env_file_is_private_even_with_a_permissive_umask(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    old = os.umask(0)
    try:
        update_env_file(path, {"GITHUB_APP_ID": "1"})
    finally:
        os.umask(old)

    assert mode_of(path) == 0o600
    assert path.read_text().endswith("GITHUB_APP_ID=1\n")


def test_env_file_none_removes_a_stale_value(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text("GITHUB_WEBHOOK_SECRET=stale\nGITHUB_WEBHOOK_SECRET=again\nPORT=8080\n")

    update_env_file(path, {"GITHUB_WEBHOOK_SECRET": None, "GITHUB_APP_ID": "1"})

    assert read_env_file(path) == {"PORT": "8080", "GITHUB_APP_ID": "1"}


@given(st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=60))
def test_env_file_values_read_back_unchanged(value: str) -> None:
    try:
        env_value(value)
    except ValueError:
        return  # refused up front rather than written wrong
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / ".env"
        update_env_file(path, {"A": value, "B": "after"})
        assert read_env_file(path) == {"A": value, "B": "after"}


def test_a_github_pem_round_trips_through_settings(tmp_path: Path, pem: str) -> None:
    path = tmp_path / ".env"

    update_env_file(path, {"GITHUB_APP_ID": "1", "GITHUB_PRIVATE_KEY": pem})

    assert Settings.from_env({}, env_file=path).private_key == pem
