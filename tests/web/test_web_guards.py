"""The web process's doors besides the webhook: `/login` is throttled, `/metrics` can need a token, and session
cookies are `Secure` behind a TLS proxy (issue 10, finding 10). Through the real app `create_app` builds."""

from __future__ import annotations

from dataclasses import replace

import pytest
from starlette.testclient import TestClient

from bot.settings import Settings
from bot.web import guards
from tests.support.runs_api import TOKEN

METRICS_TOKEN = "metrics-" + "0123456789abcdef" * 2
PUBLIC = "https://nofx.test"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, api_token=TOKEN, metrics_token=METRICS_TOKEN, public_url=PUBLIC)


def test_login_is_throttled_per_client(client: TestClient) -> None:
    answers = [
        client.post("/login", data={"token": f"guess-{n}"}, follow_redirects=False).status_code
        for n in range(guards.LOGIN_ATTEMPTS + 1)
    ]
    assert answers == [401] * guards.LOGIN_ATTEMPTS + [429]
    refused = client.post("/login", data={"token": TOKEN}, follow_redirects=False)
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0  # even the right token waits


def test_the_session_cookie_is_secure_when_tls_ends_at_a_proxy(client: TestClient) -> None:
    """The request reaches nofx as plain http for the public https address: the cookie is still Secure."""
    response = client.post("/login", data={"token": TOKEN}, follow_redirects=False)
    assert response.status_code == 303
    assert "Secure" in response.headers["set-cookie"] and "HttpOnly" in response.headers["set-cookie"]


def test_metrics_need_the_metrics_token_when_one_is_set(client: TestClient) -> None:
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 401  # not the API's
    allowed = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert allowed.status_code == 200 and "nofx_webhook_deliveries" in allowed.text
