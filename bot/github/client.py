"""GitHub App authentication and the one factory for GitHub API clients.

Every GitHub call nofx makes goes through a `NofxGitHubAPI` built by `GitHubApp`:
app-level calls carry a short-lived JWT, installation calls carry an installation
token taken from a per-installation cache on every request, and all of them share
one retry policy for GitHub's 5xx answers, rate limits and dropped connections.
"""

from __future__ import annotations

import asyncio
import copy
import email.utils
import random
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import gidgethub.httpx as gh_httpx
import jwt as pyjwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from gidgethub import sansio

from bot.github.checks import LogUnavailable
from bot.single_flight import SingleFlight

if TYPE_CHECKING:
    import httpx2 as httpx  # what gidgethub.httpx is typed against

    from bot.settings import Settings
else:
    httpx = gh_httpx.httpx  # gidgethub picks httpx2 when it is installed, else httpx; use whichever it uses

REQUESTER = "nofx"
API_VERSION = "2022-11-28"
# GitHub refuses a JWT whose exp is more than 10 minutes ahead: backdate iat for clock drift and
# keep exp 8 minutes ahead, so a local clock up to 2 minutes fast is still accepted.
JWT_BACKDATE_S = 60
JWT_LIFETIME_S = 9 * 60
# Reissue the JWT this long before it expires, so a request never carries a dying one.
JWT_REFRESH_MARGIN_S = 2 * 60
# Installation tokens live an hour; refresh 5 minutes early so a request in flight never expires.
TOKEN_REFRESH_MARGIN_S = 5 * 60
# GitHub asks clients hit by a secondary rate limit without a hint to wait at least a minute.
SECONDARY_LIMIT_WAIT_S = 60.0
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
SECONDARY_LIMIT_MARKERS = (b"secondary rate limit", b"abuse detection")

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]
SecretHook = Callable[[str], None]
ResponseHook = Callable[[str, int, Mapping[str, str]], None]


class GitHubAppError(Exception):
    """Something about the App's own credentials or GitHub's answer to them is wrong."""


class GitHubAppNotConfigured(GitHubAppError):
    """The App's id or private key is missing or unusable; the message names the variable."""


@dataclass(frozen=True)
class RetryPolicy:
    """How hard a client tries before letting GitHub's error reach the caller.

    `max_attempts` counts every try of one logical request, transport errors included;
    `max_wait_s` caps any single wait, and a wait GitHub demands beyond it (a primary
    rate limit resetting in 40 minutes) raises at once instead of stalling a worker.
    """

    max_attempts: int = 5
    max_wait_s: float = 60.0
    backoff_base_s: float = 1.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.max_wait_s < 0 or self.backoff_base_s < 0:
            raise ValueError("waits must not be negative")


@dataclass(frozen=True)
class _Token:
    value: str = field(repr=False)
    expires_at: float


class NofxGitHubAPI(gh_httpx.GitHubAPI):
    """A gidgethub client that authenticates each request afresh and retries what is worth retrying.

    Retries live in `_request` rather than gidgethub's `handle_rate_limit_error` hook so one
    attempt budget covers both HTTP answers and transport errors, and so `graphql()` (which
    bypasses the hook) gets them too.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        base_url: str,
        authorization: Callable[[], Awaitable[str]],
        retry: RetryPolicy | None = None,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        on_response: ResponseHook | None = None,
    ) -> None:
        super().__init__(client, REQUESTER, base_url=base_url.rstrip("/"))
        self._authorization = authorization
        self._retry = retry or RetryPolicy()
        self._clock = clock
        self._sleep = sleep
        self._on_response = on_response

    @property
    def graphql_url(self) -> str:
        """GraphQL endpoint next to the REST base: `/api/graphql` on GHES, `/graphql` on github.com."""
        if self.base_url.endswith("/api/v3"):
            return self.base_url.removesuffix("/v3") + "/graphql"
        return self.base_url + "/graphql"

    async def graphql(self, query: str, *, endpoint: str | None = None, **variables: Any) -> Any:
        """Query GraphQL on this client's server (gidgethub's default is api.github.com)."""
        return await super().graphql(query, endpoint=endpoint or self.graphql_url, **variables)

    async def download_redirected(self, url: str, url_vars: Mapping[str, Any], *, max_bytes: int) -> bytes:
        """GET an API route that answers with a redirect (job logs), then the target without nofx's token.

        The target is short-lived storage off GitHub's API host: it gets no Authorization header, and only the
        last `max_bytes` of its body are kept.
        """
        headers = sansio.create_headers(self.requester, accept=sansio.accept_format())
        status, response_headers, _ = await self._request(
            "GET", sansio.format_url(url, url_vars, base_url=self.base_url), headers
        )
        location = response_headers.get("location") or ""
        if status not in (301, 302, 303, 307, 308) or urlsplit(location).scheme not in ("http", "https"):
            raise LogUnavailable(f"GitHub answered {status} without a usable redirect")
        kept = bytearray()
        try:
            async with self._client.stream("GET", location, headers={"user-agent": REQUESTER}) as response:
                if response.status_code != 200:
                    raise LogUnavailable(f"the log storage answered {response.status_code}")
                async for chunk in response.aiter_bytes():
                    kept += chunk
                    if len(kept) > max_bytes:
                        del kept[: len(kept) - max_bytes]
        except httpx.HTTPError as exc:
            raise LogUnavailable(f"the log storage could not be read: {type(exc).__name__}") from None
        return bytes(kept)

    async def sleep(self, seconds: float) -> None:
        """Wait through the injected sleep, so tests never really wait."""
        await self._sleep(seconds)

    async def _request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes = b""
    ) -> tuple[int, Mapping[str, str], bytes]:
        """Send one logical request, retrying per the policy; the last answer goes back to gidgethub.

        Returning (rather than raising on) a final error answer lets gidgethub raise its own
        exception for it: `GitHubBroken`, `RateLimitExceeded`, `BadRequest`.
        """
        request_headers = dict(headers)
        request_headers["x-github-api-version"] = API_VERSION
        explicit_auth = "authorization" in request_headers
        attempt = 0
        while True:
            attempt += 1
            if not explicit_auth:
                # Asked for on every attempt: a retry after a long wait must not reuse a dying token.
                request_headers["authorization"] = await self._authorization()
            try:
                response = await self._client.request(method, url, headers=request_headers, content=body)
            except httpx.TransportError as exc:
                if attempt >= self._retry.max_attempts or not _transport_retryable(method, exc):
                    raise
                await self._sleep(self._backoff(attempt))
                continue
            status, response_headers, content = response.status_code, response.headers, response.content
            if self._on_response is not None:
                self._on_response(method, status, response_headers)
            if attempt >= self._retry.max_attempts:
                return status, response_headers, content
            delay = self._retry_delay(status, response_headers, content, attempt)
            if delay is None:
                return status, response_headers, content
            await self._sleep(delay)

    def _retry_delay(self, status: int, headers: Mapping[str, str], body: bytes, attempt: int) -> float | None:
        """Seconds to wait before retrying this answer, or None to hand it to the caller."""
        if status >= 500:
            delay = _retry_after(headers, self._clock)
            if delay is None:
                delay = self._backoff(attempt)
        elif status == 429 or (status == 403 and _secondary_or_exhausted(headers, body)):
            delay = _retry_after(headers, self._clock)
            if delay is None and headers.get("x-ratelimit-remaining") == "0":
                delay = _until_reset(headers, self._clock)
            if delay is None:
                delay = self._backoff(attempt, base=SECONDARY_LIMIT_WAIT_S, jitter=(1.0, 1.2))
        else:
            return None
        # GitHub said to wait longer than we are willing to: fail now instead of sleeping for an hour.
        return delay if delay <= self._retry.max_wait_s else None

    def _backoff(self, attempt: int, *, base: float | None = None, jitter: tuple[float, float] = (0.5, 1.0)) -> float:
        """Exponential backoff with jitter, so many workers hitting the same outage spread out."""
        start = self._retry.backoff_base_s if base is None else base
        delay = start * 2.0 ** (attempt - 1) * random.uniform(*jitter)
        return min(self._retry.max_wait_s, delay)


class Credentials:
    """The App's JWT and installation tokens, shared by the `GitHubApp`s of one process (one per event loop), so
    a token is minted once per installation however many threads use it. Thread-safe: a token being minted is a
    call the other threads wait on."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.jwt: _Token | None = None
        self.tokens: dict[int, _Token] = {}
        self.minting: SingleFlight[str] = SingleFlight()


class GitHubApp:
    """The one place GitHub credentials live and GitHub clients are made.

    `on_secret` receives every JWT and installation token the moment it is minted, so the
    log redactor knows it before it can leak; `on_response` sees (method, status, headers)
    of every HTTP answer, retried ones included, for metrics. Both run inline and must not
    raise. One instance per event loop (its HTTP connection pool belongs to the loop that first
    uses it); instances made by `for_another_loop` share the tokens (`Credentials`).
    """

    def __init__(
        self,
        app_id: str,
        private_key: str,
        api_url: str,
        *,
        http: httpx.AsyncClient | None = None,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        retry: RetryPolicy | None = None,
        on_secret: SecretHook | None = None,
        on_response: ResponseHook | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        if not app_id:
            raise GitHubAppNotConfigured("GITHUB_APP_ID is not set")
        self.app_id = str(app_id)
        self.api_url = api_url.rstrip("/")
        self._key = _load_private_key(private_key)
        self._owns_http = http is None
        self._http = http if http is not None else http_client()
        self._clock = clock
        self._sleep = sleep
        self._retry = retry or RetryPolicy()
        self._on_secret = on_secret
        self._on_response = on_response
        self._credentials = credentials or Credentials()

    def __repr__(self) -> str:
        return f"GitHubApp(app_id={self.app_id!r}, api_url={self.api_url!r})"

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        http: httpx.AsyncClient | None = None,
        retry: RetryPolicy | None = None,
        on_secret: SecretHook | None = None,
        on_response: ResponseHook | None = None,
    ) -> GitHubApp:
        """Build the App from process settings; refuse clearly when it has not been set up yet."""
        if not settings.app_id or not settings.private_key:
            missing = [
                name
                for name, value in (
                    ("GITHUB_APP_ID", settings.app_id),
                    ("GITHUB_PRIVATE_KEY or GITHUB_PRIVATE_KEY_PATH", settings.private_key),
                )
                if not value
            ]
            raise GitHubAppNotConfigured(
                f"the GitHub App is not configured: set {' and '.join(missing)} "
                "(or run `nofx serve` and finish the setup page)"
            )
        return cls(
            settings.app_id,
            settings.private_key,
            settings.github_api_url,
            http=http,
            retry=retry,
            on_secret=on_secret,
            on_response=on_response,
        )

    def for_another_loop(self) -> GitHubApp:
        """A GitHubApp for another thread's event loop: HTTP connections of its own, this one's credentials."""
        other = copy.copy(self)
        other._http, other._owns_http = http_client(), True
        return other

    def jwt(self) -> str:
        """The App's JWT (RS256, iat 60 s back, exp 8 min ahead), reissued 2 minutes before it expires."""
        credentials = self._credentials
        with credentials.lock:
            now = self._clock()
            if credentials.jwt is None or now >= credentials.jwt.expires_at - JWT_REFRESH_MARGIN_S:
                issued_at = int(now) - JWT_BACKDATE_S
                expires_at = issued_at + JWT_LIFETIME_S
                claims = {"iat": issued_at, "exp": expires_at, "iss": self.app_id}
                credentials.jwt = _Token(pyjwt.encode(claims, self._key, algorithm="RS256"), expires_at)
                self._register_secret(credentials.jwt.value)
            return credentials.jwt.value

    def app_client(self) -> NofxGitHubAPI:
        """A client authenticated as the App itself (installations, manifests, app metadata)."""

        async def authorization() -> str:
            return f"bearer {self.jwt()}"

        return self._client(authorization)

    def installation_client(self, installation_id: int) -> NofxGitHubAPI:
        """A client acting as one installation; each request takes a current token from the cache."""

        async def authorization() -> str:
            return f"token {await self.installation_token(installation_id)}"

        return self._client(authorization)

    async def installation_token(self, installation_id: int) -> str:
        """An installation token valid for at least 5 more minutes, fetched once for concurrent callers (of
        every event loop sharing these credentials)."""
        token = self._fresh_token(installation_id)
        if token is not None:
            return token
        return await self._credentials.minting.do(str(installation_id), lambda: self._mint(installation_id))

    async def _mint(self, installation_id: int) -> str:
        token = self._fresh_token(installation_id)  # minted by the call that was under way when we looked
        if token is not None:
            return token
        data = await self.app_client().post(
            "/app/installations/{installation_id}/access_tokens",
            {"installation_id": installation_id},
            data=b"",
        )
        issued = _parse_token_response(data, installation_id)
        self._register_secret(issued.value)
        with self._credentials.lock:
            self._credentials.tokens[installation_id] = issued
        return issued.value

    async def repository_token(
        self, installation_id: int, repository: str, repository_id: int | None, permissions: Mapping[str, str]
    ) -> tuple[str, float]:
        """A new token for one repository (by id; by name for runs recorded without one) and only `permissions`,
        with its expiry. Not cached: the caller revokes it (`revoke_token`) when done."""
        scope: dict[str, Any] = {"permissions": dict(permissions)}
        if repository_id is not None:
            scope["repository_ids"] = [repository_id]
        else:
            scope["repositories"] = [repository.split("/", 1)[-1]]
        data = await self.app_client().post(
            "/app/installations/{installation_id}/access_tokens", {"installation_id": installation_id}, data=scope
        )
        issued = _parse_token_response(data, installation_id)
        self._register_secret(issued.value)
        return issued.value, issued.expires_at

    def token_client(self, token: Callable[[], Awaitable[str]]) -> NofxGitHubAPI:
        """A client acting with the token `token()` gives (a step's repository token)."""

        async def authorization() -> str:
            return f"token {await token()}"

        return self._client(authorization)

    async def revoke_token(self, token: str) -> None:
        """`DELETE /installation/token`: the token stops working at once."""

        async def authorization() -> str:
            return f"token {token}"

        await self._client(authorization).delete("/installation/token")

    async def aclose(self) -> None:
        """Close the HTTP client if this App created it; a client passed in belongs to the caller."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> GitHubApp:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _client(self, authorization: Callable[[], Awaitable[str]]) -> NofxGitHubAPI:
        return NofxGitHubAPI(
            self._http,
            base_url=self.api_url,
            authorization=authorization,
            retry=self._retry,
            clock=self._clock,
            sleep=self._sleep,
            on_response=self._on_response,
        )

    def _fresh_token(self, installation_id: int) -> str | None:
        token = self._credentials.tokens.get(installation_id)
        if token is None or self._clock() >= token.expires_at - TOKEN_REFRESH_MARGIN_S:
            return None
        return token.value

    def _register_secret(self, secret: str) -> None:
        if self._on_secret is not None:
            self._on_secret(secret)


def _load_private_key(private_key: str) -> RSAPrivateKey:
    """Parse the PEM once, so a bad key fails at start-up with a message that never quotes it."""
    if not private_key or not private_key.strip():
        raise GitHubAppNotConfigured("GITHUB_PRIVATE_KEY is not set")
    try:
        key = serialization.load_pem_private_key(private_key.encode(), password=None)
    except (ValueError, TypeError):
        # `from None`: the parser's own exception may carry fragments of the key.
        raise GitHubAppNotConfigured(
            "GITHUB_PRIVATE_KEY is not a readable PEM private key "
            "(expected the unencrypted RSA key downloaded from the App's settings)"
        ) from None
    if not isinstance(key, RSAPrivateKey):
        raise GitHubAppNotConfigured("GITHUB_PRIVATE_KEY must be an RSA private key: GitHub Apps sign with RS256")
    return key


def http_client() -> httpx.AsyncClient:
    """The HTTP client every GitHub API client of nofx uses."""
    # GitHub answers some calls (large diffs, searches) slowly; httpx's 5 s default is too tight.
    return httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=10.0))


def _parse_token_response(data: Any, installation_id: int) -> _Token:
    """Read GitHub's access-token answer; an error message must never echo the body (it holds the token)."""
    try:
        value = data["token"]
        expires_at = datetime.fromisoformat(data["expires_at"]).timestamp()
    except (TypeError, KeyError, ValueError):
        raise GitHubAppError(
            f"GitHub's access token answer for installation {installation_id} lacks a token or expires_at"
        ) from None
    if not isinstance(value, str) or not value:
        raise GitHubAppError(f"GitHub's access token answer for installation {installation_id} has no token")
    return _Token(value, expires_at)


def _transport_retryable(method: str, exc: Exception) -> bool:
    """A failed connect never reached GitHub, so any method may retry; a lost answer only if idempotent."""
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return True
    retryable = isinstance(exc, httpx.NetworkError | httpx.TimeoutException | httpx.RemoteProtocolError)
    return retryable and method.upper() in IDEMPOTENT_METHODS


def _secondary_or_exhausted(headers: Mapping[str, str], body: bytes) -> bool:
    """Tell a rate-limit 403 from a permission 403, which retrying cannot fix."""
    if "retry-after" in headers or headers.get("x-ratelimit-remaining") == "0":
        return True
    lowered = body.lower()
    return any(marker in lowered for marker in SECONDARY_LIMIT_MARKERS)


def _retry_after(headers: Mapping[str, str], clock: Clock) -> float | None:
    """Seconds from `Retry-After`, which GitHub sends as seconds but HTTP also allows as a date."""
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - clock())


def _until_reset(headers: Mapping[str, str], clock: Clock) -> float | None:
    """Seconds until `x-ratelimit-reset` (epoch), plus one for clock skew between us and GitHub."""
    try:
        reset = float(headers["x-ratelimit-reset"])
    except (KeyError, ValueError):
        return None
    return max(0.0, reset - clock()) + 1.0
