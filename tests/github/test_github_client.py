"""The App's credentials and clients, exercised against the GitHub double over real sockets.

Time is injected: the App and the double share one fake clock (so token expiry and
JWT checks agree), and `sleep` only records how long the client would have waited.
Transport failures (a reset connection) cannot be staged by a real server on cue,
so those few tests put an httpx `MockTransport` at the I/O seam instead.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import gidgethub
import gidgethub.httpx as gh_httpx
import jwt
import pytest

from bot.github.client import API_VERSION, GitHubApp, GitHubAppError, GitHubAppNotConfigured, RetryPolicy
from bot.settings import Settings
from tests.support.github_double import SECONDARY_RATE_LIMIT, GitHubDouble, app_key

httpx = gh_httpx.httpx
APP_ID = 4242
INSTALLATION = 7
REPO = "/repos/{owner}/{repo}"
TOKENS = "/app/installations/{installation_id}/access_tokens"
POLICY = RetryPolicy(max_attempts=3, max_wait_s=60.0, backoff_base_s=1.0)


class FakeClock:
    """Wall-clock seconds that only move when a test says so."""

    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Recorder:
    """Stands in for `asyncio.sleep`, `on_secret` and `on_response`, keeping what it was given."""

    def __init__(self) -> None:
        self.waits: list[float] = []
        self.secrets: list[str] = []
        self.responses: list[tuple[str, int, dict[str, str]]] = []

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)

    def secret(self, value: str) -> None:
        self.secrets.append(value)

    def response(self, method: str, status: int, headers: Mapping[str, str]) -> None:
        self.responses.append((method, status, dict(headers)))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def seen() -> Recorder:
    return Recorder()


@pytest.fixture
def double(clock: FakeClock) -> Iterator[GitHubDouble]:
    with GitHubDouble(app_id=APP_ID, public_key_pem=app_key().public_pem, clock=clock) as github:
        yield github


@pytest.fixture
async def make_app(clock: FakeClock, seen: Recorder) -> AsyncIterator[Callable[..., GitHubApp]]:
    """Build Apps wired to the fake clock and the recorder; closes them after the test."""
    apps: list[GitHubApp] = []

    def make(api_url: str, **options: Any) -> GitHubApp:
        options = {
            "clock": clock,
            "sleep": seen.sleep,
            "retry": POLICY,
            "on_secret": seen.secret,
            "on_response": seen.response,
            **options,
        }
        app = GitHubApp(str(APP_ID), app_key().private_pem, api_url, **options)
        apps.append(app)
        return app

    yield make
    for app in apps:
        await app.aclose()


@pytest.fixture
def gh_app(double: GitHubDouble, make_app: Callable[..., GitHubApp]) -> GitHubApp:
    return make_app(double.base_url)


# ---------------------------------------------------------------- the App's JWT


async def test_jwt_is_rs256_backdated_and_short_lived(gh_app: GitHubApp, clock: FakeClock) -> None:
    token = gh_app.jwt()

    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, app_key().public_pem, algorithms=["RS256"], options={"verify_exp": False})
    assert header["alg"] == "RS256"
    assert claims["iss"] == str(APP_ID)
    assert claims["iat"] == clock() - 60
    assert 0 < claims["exp"] - clock() <= 540


async def test_app_client_authenticates_with_the_jwt(gh_app: GitHubApp, double: GitHubDouble) -> None:
    app = await gh_app.app_client().getitem("/app")

    (call,) = double.calls("GET", "/app")
    assert app["id"] == APP_ID
    assert call.headers["authorization"] == f"bearer {gh_app.jwt()}"
    assert call.headers["x-github-api-version"] == API_VERSION
    assert call.headers["user-agent"] == "nofx"


async def test_jwt_is_reused_then_reissued_before_it_expires(
    gh_app: GitHubApp, clock: FakeClock, seen: Recorder
) -> None:
    first = gh_app.jwt()
    clock.advance(60)
    assert gh_app.jwt() == first
    clock.advance(6 * 60)

    second = gh_app.jwt()

    assert second != first
    assert seen.secrets == [first, second]


# ---------------------------------------------------------------- installation tokens


async def test_installation_token_is_fetched_once_then_cached(
    gh_app: GitHubApp, double: GitHubDouble, seen: Recorder
) -> None:
    first = await gh_app.installation_token(INSTALLATION)
    second = await gh_app.installation_token(INSTALLATION)

    assert first == second
    assert len(double.calls("POST", TOKENS)) == 1
    assert double.tokens_issued == 1
    assert first in seen.secrets


async def test_installation_token_is_refreshed_five_minutes_before_expiry(
    gh_app: GitHubApp, double: GitHubDouble, clock: FakeClock
) -> None:
    first = await gh_app.installation_token(INSTALLATION)
    clock.advance(55 * 60 - 1)  # the double's tokens live an hour
    assert await gh_app.installation_token(INSTALLATION) == first
    clock.advance(2)

    second = await gh_app.installation_token(INSTALLATION)

    assert second != first
    assert double.tokens_issued == 2


async def test_concurrent_callers_share_one_token_request(gh_app: GitHubApp, double: GitHubDouble) -> None:
    tokens = await asyncio.gather(*(gh_app.installation_token(INSTALLATION) for _ in range(5)))
    other = await gh_app.installation_token(INSTALLATION + 1)

    assert len(set(tokens)) == 1
    assert other != tokens[0]
    assert [call.path_params["installation_id"] for call in double.calls("POST", TOKENS)] == [
        INSTALLATION,
        INSTALLATION + 1,
    ]


def test_event_loops_of_other_threads_share_one_token_request(gh_app: GitHubApp, double: GitHubDouble) -> None:
    """A dispatch lane's routing threads each run a loop of their own: a burst for one installation mints once."""
    in_flight = threading.Barrier(4, timeout=10)
    double.gate("POST", TOKENS, lambda: time.sleep(0.2))  # the first mint is still on its way when all ask

    def token_on_a_loop_of_its_own() -> str:
        other = gh_app.for_another_loop()

        async def ask() -> str:
            in_flight.wait()
            try:
                return await other.installation_token(INSTALLATION)
            finally:
                await other.aclose()

        return asyncio.run(ask())

    with ThreadPoolExecutor(4) as pool:
        tokens = list(pool.map(lambda _: token_on_a_loop_of_its_own(), range(4)))

    assert len(set(tokens)) == 1
    assert double.tokens_issued == 1


async def test_a_failed_token_request_fails_its_waiters_and_the_next_call_asks_again(
    gh_app: GitHubApp, double: GitHubDouble
) -> None:
    double.respond("POST", TOKENS, 404)

    outcomes = await asyncio.gather(
        *(gh_app.installation_token(INSTALLATION) for _ in range(3)), return_exceptions=True
    )

    assert all(isinstance(outcome, gidgethub.BadRequest) for outcome in outcomes)
    assert len(double.calls("POST", TOKENS)) == 1
    assert await gh_app.installation_token(INSTALLATION)
    assert double.tokens_issued == 1


async def test_installation_client_sends_token_version_and_user_agent(gh_app: GitHubApp, double: GitHubDouble) -> None:
    gh = gh_app.installation_client(INSTALLATION)

    repo = await gh.getitem(REPO, {"owner": "octo-org", "repo": "widgets"})

    (call,) = double.calls("GET", REPO)
    assert repo["full_name"] == "octo-org/widgets"
    assert call.installation_id == INSTALLATION
    assert call.headers["authorization"] == f"token {await gh_app.installation_token(INSTALLATION)}"
    assert call.headers["x-github-api-version"] == API_VERSION
    assert call.headers["user-agent"] == "nofx"


async def test_long_lived_installation_client_never_sends_an_expired_token(
    gh_app: GitHubApp, double: GitHubDouble, clock: FakeClock
) -> None:
    gh = gh_app.installation_client(INSTALLATION)
    await gh.getitem(REPO, {"owner": "octo-org", "repo": "widgets"})
    clock.advance(58 * 60)

    await gh.getitem(REPO, {"owner": "octo-org", "repo": "widgets"})

    first, second = double.calls("GET", REPO)
    assert first.headers["authorization"] != second.headers["authorization"]
    assert double.tokens_issued == 2


async def test_enterprise_server_base_path_is_kept(clock: FakeClock, make_app: Callable[..., GitHubApp]) -> None:
    with GitHubDouble(app_id=APP_ID, public_key_pem=app_key().public_pem, clock=clock, path_prefix="/api/v3") as ghes:
        app = make_app(ghes.base_url)
        gh = app.installation_client(INSTALLATION)

        await gh.getitem(REPO, {"owner": "octo-org", "repo": "widgets"})

        assert [call.path for call in ghes.calls()] == [
            f"/api/v3/app/installations/{INSTALLATION}/access_tokens",
            "/api/v3/repos/octo-org/widgets",
        ]
    assert gh.graphql_url == ghes.base_url.removesuffix("/v3") + "/graphql"


async def test_token_answer_without_expiry_fails_without_echoing_the_token(
    gh_app: GitHubApp, double: GitHubDouble
) -> None:
    double.respond("POST", TOKENS, 201, json={"token": "ghs_leakme", "expires_at": "soon"})

    with pytest.raises(GitHubAppError) as raised:
        await gh_app.installation_token(INSTALLATION)

    assert "ghs_leakme" not in str(raised.value)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


# ---------------------------------------------------------------- retries


async def test_502_is_retried_with_backoff_then_succeeds(
    gh_app: GitHubApp, double: GitHubDouble, seen: Recorder
) -> None:
    double.respond("GET", REPO, 502)
    gh = gh_app.installation_client(INSTALLATION)

    repo = await gh.getitem(REPO, {"owner": "octo-org", "repo": "widgets"})

    assert repo["name"] == "widgets"
    assert [call.status for call in double.calls("GET", REPO)] == [502, 200]
    assert len(seen.waits) == 1 and 0.5 <= seen.waits[0] <= 1.0
    assert [(method, status) for method, status, _ in seen.responses] == [
        ("POST", 201),
        ("GET", 502),
        ("GET", 200),
    ]


async def test_429_honours_retry_after(gh_app: GitHubApp, double: GitHubDouble, seen: Recorder) -> None:
    double.respond("GET", REPO, 429, headers={"retry-after": "7"})
    gh = gh_app.installation_client(INSTALLATION)

    await gh.getitem(REPO, {"owner": "octo-org", "repo": "widgets"})

    assert seen.waits == [7.0]
    assert len(double.calls("GET", REPO)) == 2


async def test_secondary_rate_limit_403_is_retried_after_a_minute(
    gh_app: GitHubApp, double: GitHubDouble, seen: Recorder
) -> None:
    # No retry-after and plenty of primary quota left: only the message tells it apart.
    double.respond("POST", "/repos/{owner}/{repo}/issues/{issue_number}/comments", 403, json=SECONDARY_RATE_LIMIT)
    gh = gh_app.installation_client(INSTALLATION)

    comment = await gh.post(
        "/repos/{owner}/{repo}/issues/{issue_number}/comments",
        {"owner": "octo-org", "repo": "widgets", "issue_number": 1},
        data={"body": "hello"},
    )

    assert comment["body"] == "hello"
    assert seen.waits == [60.0]


async def test_secondary_rate_limit_with_retry_after_waits_that_long(
    gh_app: GitHubApp, double: GitHubDouble, seen: Recorder
) -> None:
    double.respond("GET", REPO, 403, json=SECONDARY_RATE_LIMIT, headers={"retry-after": "3"})
    gh = gh_app.installation_client(INSTALLATION)

    await gh.getitem(REPO, {"owner": "octo-org", "repo": "widgets"})

    assert seen.waits == [3.0]


async def test_primary_rate_limit_resetting_soon_waits_for_the_reset(
    gh_app: GitHubApp, double: GitHubDouble, clock: FakeClock, seen: Recorder
) -> None:
    exhausted = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(clock()) + 10)}
    double.respond("GET", REPO, 403, json={"message": "API rate limit exceeded"}, headers=exhausted)
    gh = gh_app.installation_client(INSTALLATION)

    await gh.getitem(REPO, {"owner": "octo-org", "repo": "widgets"})

    assert seen.waits == [11.0]  # one second of slack for clock skew


async def test_primary_rate_limit_resetting_in_an_hour_raises_at_once(
    gh_app: GitHubApp, double: GitHubDouble, clock: FakeClock, seen: Recorder
) -> None:
    exhausted = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(clock()) + 3600)}
    double.respond("GET", REPO, 403, json={"message": "API rate limit exceeded"}, headers=exhausted)
    gh = gh_app.installation_client(INSTALLATION)

    with pytest.raises(gidgethub.RateLimitExceeded):
        await gh.getitem(REPO, {"owner": "octo-org", "repo": "widgets"})

    assert seen.waits == []
    assert len(double.calls("GET", REPO)) == 1


async def test_retry_after_beyond_the_cap_raises_at_once(
    gh_app: GitHubApp, double: GitHubDouble, seen: Recorder
) -> None:
    double.respond("GET", REPO, 429, headers={"retry-after": "600"})
    gh = gh_app.installation_client(INSTALLATION)

    with pytest.raises(gidgethub.BadRequest) as raised:
        await gh.getitem(REPO, {"owner": "octo-org", "repo": "widgets"})

    assert raised.value.status_code == 429
    assert seen.waits == []


async def test_permission_403_is_not_retried(gh_app: GitHubApp, double: GitHubDouble, seen: Recorder) -> None:
    double.respond("GET", REPO, 403, json={"message": "Resource not accessible by integration"})
    gh = gh_app.installation_client(INSTALLATION)

    with pytest.raises(gidgethub.BadRequest):
        await gh.getitem(REPO, {"owner": "octo-org", "repo": "widgets"})

    assert seen.waits == []
    assert len(double.calls("GET", REPO)) == 1


async def test_attempts_are_capped(gh_app: GitHubApp, double: GitHubDouble, seen: Recorder) -> None:
    double.respond("GET", REPO, 503, times=None)
    gh = gh_app.installation_client(INSTALLATION)

    with pytest.raises(gidgethub.GitHubBroken):
        await gh.getitem(REPO, {"owner": "octo-org", "repo": "widgets"})

    assert len(double.calls("GET", REPO)) == POLICY.max_attempts
    assert len(seen.waits) == POLICY.max_attempts - 1
    assert all(wait <= POLICY.max_wait_s for wait in seen.waits)


# ---------------------------------------------------------------- transport errors (MockTransport)


def _flaky(failure: Exception, *, fail_times: int) -> tuple[Any, list[str]]:
    """A transport that raises `failure` on the first requests past the token, then answers 200."""
    methods: list[str] = []

    def handle(request: Any) -> Any:
        if request.url.path.endswith("/access_tokens"):
            return httpx.Response(201, json={"token": "ghs_mock", "expires_at": "2999-01-01T00:00:00Z"})
        methods.append(request.method)
        if len(methods) <= fail_times:
            raise failure
        return httpx.Response(200, json={"ok": True})

    return httpx.MockTransport(handle), methods


async def test_connection_reset_is_retried_for_idempotent_methods(
    make_app: Callable[..., GitHubApp], seen: Recorder
) -> None:
    transport, methods = _flaky(httpx.ReadError("connection reset by peer"), fail_times=2)
    async with httpx.AsyncClient(transport=transport) as http:
        gh = make_app("https://ghe.example/api/v3", http=http).installation_client(INSTALLATION)

        assert await gh.getitem("/repos/o/r") == {"ok": True}

    assert methods == ["GET", "GET", "GET"]
    assert len(seen.waits) == 2


async def test_lost_answer_to_a_post_is_not_retried(make_app: Callable[..., GitHubApp], seen: Recorder) -> None:
    transport, methods = _flaky(httpx.ReadError("connection reset by peer"), fail_times=1)
    async with httpx.AsyncClient(transport=transport) as http:
        gh = make_app("https://ghe.example/api/v3", http=http).installation_client(INSTALLATION)

        with pytest.raises(httpx.ReadError):
            await gh.post("/repos/o/r/issues/1/comments", data={"body": "x"})

    assert methods == ["POST"]
    assert seen.waits == []


async def test_failed_connect_is_retried_even_for_a_post(make_app: Callable[..., GitHubApp]) -> None:
    transport, methods = _flaky(httpx.ConnectError("connection refused"), fail_times=1)
    async with httpx.AsyncClient(transport=transport) as http:
        gh = make_app("https://ghe.example/api/v3", http=http).installation_client(INSTALLATION)

        await gh.post("/repos/o/r/issues/1/comments", data={"body": "x"})

    assert methods == ["POST", "POST"]


async def test_graphql_goes_to_the_enterprise_server_not_api_github_com(
    make_app: Callable[..., GitHubApp],
) -> None:
    requests: list[Any] = []

    def handle(request: Any) -> Any:
        requests.append(request)
        if request.url.path.endswith("/access_tokens"):
            return httpx.Response(201, json={"token": "ghs_mock", "expires_at": "2999-01-01T00:00:00Z"})
        return httpx.Response(200, json={"data": {"viewer": {"login": "nofx[bot]"}}})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as http:
        gh = make_app("https://ghe.example/api/v3", http=http).installation_client(INSTALLATION)

        assert await gh.graphql("{ viewer { login } }") == {"viewer": {"login": "nofx[bot]"}}

    query = requests[-1]
    assert str(query.url) == "https://ghe.example/api/graphql"
    assert query.headers["authorization"] == "token ghs_mock"
    assert query.headers["x-github-api-version"] == API_VERSION


# ---------------------------------------------------------------- configuration


def _settings(tmp_path: Path, **fields: Any) -> Settings:
    return Settings(data_dir=tmp_path, database_url="sqlite://", redis_url=None, **fields)


async def test_from_settings_uses_the_configured_api_url(tmp_path: Path, double: GitHubDouble) -> None:
    settings = _settings(
        tmp_path, app_id=str(APP_ID), private_key=app_key().private_pem, github_api_url=double.base_url
    )

    async with GitHubApp.from_settings(settings) as app:
        assert (await app.app_client().getitem("/app"))["id"] == APP_ID


def test_from_settings_refuses_an_unconfigured_app(tmp_path: Path) -> None:
    with pytest.raises(GitHubAppNotConfigured, match="GITHUB_APP_ID and GITHUB_PRIVATE_KEY"):
        GitHubApp.from_settings(_settings(tmp_path))


def test_unreadable_key_is_refused_without_quoting_it() -> None:
    broken = app_key().private_pem[:200]

    with pytest.raises(GitHubAppNotConfigured) as raised:
        GitHubApp(str(APP_ID), broken, "https://ghe.example/api/v3")

    assert "PRIVATE KEY" not in str(raised.value).replace("GITHUB_PRIVATE_KEY", "")
    assert broken[40:80] not in str(raised.value)
    assert raised.value.__cause__ is None
