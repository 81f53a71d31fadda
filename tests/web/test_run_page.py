"""The run page: its login and session cookie, safe rendering, and live updates in a real headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from itertools import count
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from bot.blobs import DatabaseBlobs
from bot.queue import WorkQueue
from bot.runs import queries, records
from bot.runs.artifacts import Artifacts
from bot.settings import Settings
from bot.store import Store
from bot.web.app import create_app
from bot.web.run_page import SESSION_COOKIE, session_value
from bot.web.sse import StreamTiming
from tests.support.runs_api import AUTH, TOKEN, live_server, make_run, step_id

if TYPE_CHECKING:
    from websockets.sync.client import ClientConnection

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
STEPS = [
    {"name": "generate", "tool": "codegen", "inputs": {}},
    {"name": "check", "tool": "gate:test", "inputs": {}, "depends_on": ["generate"]},
]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, api_token=TOKEN)


@pytest.fixture
def app(settings: Settings, store: Store, queue: WorkQueue, tmp_path: Path) -> Starlette:
    timing = StreamTiming(poll_s=0.1, heartbeat_s=5)
    return create_app(
        settings,
        store=store,
        queue=queue,
        env_file=tmp_path / ".env",
        stream_timing=timing,
    )


def log_in(client: TestClient, run_id: str, token: str = TOKEN) -> Any:
    return client.post(
        "/login", data={"token": token, "next": f"/runs/{run_id}"}, headers=BROWSER, follow_redirects=False
    )


# --- login and session ----------------------------------------------------------------------------------------


def test_a_browser_without_a_session_gets_the_login_form(client: TestClient, store: Store) -> None:
    run_id = make_run(store)
    response = client.get(f"/runs/{run_id}", headers=BROWSER)
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("text/html")
    assert '<form method="post" action="/login">' in response.text
    assert f'name="next" value="/runs/{run_id}"' in response.text
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert client.get(f"/runs/{run_id}").status_code == 401  # an API client still gets JSON
    assert client.get(f"/runs/{run_id}").json()["error"].startswith("a valid bearer token")


def test_logging_in_sets_a_session_cookie_that_only_reads(client: TestClient, store: Store) -> None:
    run_id = make_run(store)
    wrong = log_in(client, run_id, token="not-the-token")
    assert wrong.status_code == 401
    assert "That token is not right." in wrong.text
    assert "not-the-token" not in wrong.text
    assert "set-cookie" not in wrong.headers

    response = log_in(client, run_id)
    assert response.status_code == 303
    assert response.headers["location"] == f"/runs/{run_id}"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    assert TOKEN not in cookie
    assert all(flag in cookie for flag in ("HttpOnly", "Max-Age=43200", "Path=/", "SameSite=lax"))

    page = client.get(f"/runs/{run_id}", headers=BROWSER)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert TOKEN not in page.text
    assert client.get(f"/runs/{run_id}").json()["id"] == run_id  # the page's refetch of its JSON
    assert client.get(f"/runs/{run_id}/timeline").status_code == 200
    # Actions need the bearer header: a cross-site form carrying the cookie can do nothing.
    assert client.post(f"/runs/{run_id}/cancel").status_code == 401
    assert queries.get_run(store, run_id).status.value == "running"  # type: ignore[union-attr]


def test_a_session_ends_with_its_expiry_a_forgery_or_a_new_token(
    client: TestClient, store: Store, settings: Settings
) -> None:
    run_id = make_run(store)
    url = f"/runs/{run_id}"
    future = int(time.time()) + 60
    client.cookies.set(SESSION_COOKIE, session_value(TOKEN, future))
    assert client.get(url).status_code == 200
    for forged in (session_value(TOKEN, int(time.time()) - 1), session_value("guess", future), f"{future}.", "x.y"):
        client.cookies.set(SESSION_COOKIE, forged)
        assert client.get(url).status_code == 401, forged
    client.cookies.set(SESSION_COOKIE, session_value(TOKEN, future))
    client.app.state.settings = replace(settings, api_token="a-new-token-0123456789")  # type: ignore[attr-defined]
    assert client.get(url).status_code == 401


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example", "/runs/../setup", "/\\evil.example"])
def test_login_never_redirects_off_the_run_pages(client: TestClient, target: str) -> None:
    response = client.post("/login", data={"token": TOKEN, "next": target}, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/"


def test_the_page_embeds_the_run_so_no_text_of_it_can_become_markup(
    client: TestClient, store: Store, settings: Settings
) -> None:
    hostile = "</script><script>alert(1)</script><!-- & \u2028"
    run_id = make_run(store, request=hostile)
    page = client.get(f"/runs/{run_id}", headers={**BROWSER, **AUTH})
    assert page.status_code == 200
    assert "<script>alert(1)" not in page.text
    scripts = re.findall(r"<script[^>]*>", page.text)
    assert len(scripts) == 2  # the data block and the page's own code, nothing injected
    nonce = re.search(r"script-src 'nonce-([^']+)'", page.headers["content-security-policy"])
    assert nonce is not None and f'<script nonce="{nonce.group(1)}">' in page.text
    data = re.search(r'<script type="application/json" id="run-data">(.*?)</script>', page.text, re.S)
    assert data is not None
    assert json.loads(data.group(1))["request"] == hostile


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        ("*/*", False),
        ("application/json", False),
        ("text/html", True),
        ("text/html;q=0.5, application/json", False),
        ("application/json;q=0.1, text/html", True),
        (BROWSER["Accept"], True),
    ],
)
def test_json_is_the_default_and_html_is_for_clients_that_prefer_it(
    client: TestClient, store: Store, accept: str, html: bool
) -> None:
    run_id = make_run(store)
    response = client.get(f"/runs/{run_id}", headers={**AUTH, "Accept": accept})
    assert response.headers["content-type"].startswith("text/html" if html else "application/json")


# --- in a real browser ----------------------------------------------------------------------------------------


class DevTools:
    """A minimal Chrome DevTools Protocol client over one page target's websocket."""

    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket
        self.ids = count(1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        message_id = next(self.ids)
        self.socket.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=10))
            if message.get("id") == message_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 10) -> Any:
        """Poll an expression until it is truthy (the DOM changes asynchronously)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = self.evaluate(expression)
            except RuntimeError:
                value = None  # between documents during a navigation
            if value:
                return value
            if time.monotonic() > deadline:
                text = self.evaluate("document.body && document.body.innerText")
                raise AssertionError(f"timed out waiting for {expression}; the page shows: {text!r}")
            time.sleep(0.05)


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[DevTools]:
    binary = shutil.which("chromium")
    if binary is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    from websockets.sync.client import connect  # a test dependency only this test needs

    profile = tmp_path / "chromium-profile"
    process = subprocess.Popen(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 20
        while not port_file.exists() or not port_file.read_text().strip():
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.05)
        port = int(port_file.read_text().splitlines()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as answer:
            targets = json.load(answer)
        page = next(target for target in targets if target["type"] == "page")
        with connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=10) as socket:
            yield DevTools(socket)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_the_page_shows_step_changes_live_without_a_reload(
    chromium: DevTools, app: Starlette, store: Store, settings: Settings
) -> None:
    run_id = make_run(store, steps=STEPS)
    generate, check = step_id(store, run_id, "generate"), step_id(store, run_id, "check")
    status_of = "document.querySelector('[data-step-name=\"{}\"]')?.dataset.status"

    with live_server(app) as base_url:
        chromium.call("Page.navigate", url=f"{base_url}/runs/{run_id}")
        chromium.wait_for("!!document.getElementById('token')")
        chromium.evaluate(f"document.getElementById('token').value = {json.dumps(TOKEN)}; document.forms[0].submit()")
        assert chromium.wait_for(status_of.format("generate")) == "queued"
        assert chromium.wait_for("document.getElementById('live')?.textContent === 'live'")
        chromium.evaluate("window.notReloaded = true")

        records.claim_step(store, generate, "job-1")
        chromium.wait_for(status_of.format("generate") + " === 'running'")
        records.succeed_step(store, generate, {})
        chromium.wait_for(status_of.format("generate") + " === 'succeeded'")
        chromium.wait_for(status_of.format("check") + " === 'queued'")

        records.claim_step(store, check, "job-2")
        chromium.wait_for(status_of.format("check") + " === 'running'")
        Artifacts(DatabaseBlobs(store), store).put(run_id, check, "output.log", b"3 passed\n")
        records.succeed_step(store, check, {"command": "pytest -q", "exit_code": 0, "output_tail": "3 passed in 0.1s"})

        chromium.wait_for(status_of.format("check") + " === 'succeeded'")
        chromium.wait_for("document.getElementById('run-status')?.dataset.status === 'succeeded'")
        chromium.wait_for("document.getElementById('live')?.textContent === 'finished'")
        # The refetch after the events brings the gate's output, its artifact link and the durations.
        output = chromium.wait_for("document.querySelector('[data-step-name=\"check\"] pre')?.textContent")
        assert output == "3 passed in 0.1s"
        link = chromium.wait_for("document.querySelector('[data-step-name=\"check\"] a')?.getAttribute('href')")
        assert link == f"/runs/{run_id}/artifacts/check/output.log"
        assert chromium.evaluate("window.notReloaded") is True
        assert chromium.evaluate("location.href") == f"{base_url}/runs/{run_id}"
        assert chromium.evaluate("document.cookie") == ""  # HttpOnly: the session is out of the page's reach
        assert TOKEN not in chromium.evaluate("document.documentElement.outerHTML")
        width = chromium.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        assert width is True
