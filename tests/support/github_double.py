"""A real HTTP server that plays GitHub's REST API in tests and refuses any call GitHub would refuse.

The app under test talks to it through `GITHUB_API_URL`, over real sockets,
with its real client. Every request is matched to an operation of GitHub's
official OpenAPI description (the vendored subset) and checked: path, query
and JSON body against the schemas, and auth like GitHub (an RS256 App JWT for
`/app…`, an installation token it issued for everything else). Anything off is
answered 401/404/422 as GitHub would and recorded in `violations`; leaving the
`with` block raises if there were any.

    with GitHubDouble(app_id=APP_ID, public_key_pem=key.public_pem) as gh:
        monkeypatch.setenv("GITHUB_API_URL", gh.base_url)
        ...
        assert [c.json["body"] for c in gh.calls("POST", "/repos/{o}/{r}/issues/{n}/comments")] == [...]

GitHub's data and the default answer of each operation live in
`github_resources.GitHubResources`, which this class extends: every repository
and issue exists, every user may write, there are no files, and all of it is
plain public dicts to adjust (`gh.files[...]`, `gh.permissions[...]`) or read
(`gh.check_runs`, `gh.issue_comments`). `respond()` and `handler()` override
answers per operation.
"""

from __future__ import annotations

import functools
import json
import secrets
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from . import openapi
from .github_ci import BLOB_PREFIX, CiResources
from .github_resources import (
    DEFAULT_EVENTS,
    DEFAULT_INSTALLATION_PERMISSIONS,
    DOCS_URL,
    Call,
    Installation,
    Reply,
    Token,
    default_reply,
    error_body,
)
from .openapi import MISSING, Operation

__all__ = [
    "APP_ID",
    "DEFAULT_EVENTS",
    "DEFAULT_INSTALLATION_PERMISSIONS",
    "DOCS_URL",
    "SECONDARY_RATE_LIMIT",
    "AppKey",
    "Call",
    "GitHubDouble",
    "Handler",
    "Installation",
    "Reply",
    "Token",
    "Violation",
    "app_key",
    "github_double",
    "make_app_jwt",
]

SECONDARY_RATE_LIMIT = {
    "message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
    "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
}
_JWT_LEEWAY_S = 10


@dataclass(frozen=True)
class Violation:
    """A request GitHub would refuse: `kind` is unknown_operation, invalid_request, unauthorized or double_error."""

    kind: str
    method: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"[{self.kind}] {self.method} {self.path}: {self.message}"


@dataclass(frozen=True)
class AppKey:
    """An RSA key pair for a test App, PEM text."""

    private_pem: str
    public_pem: str


Handler = Callable[[Call], Reply | None]


@dataclass
class _Canned:
    reply: Reply
    times: int | None


# ---------------------------------------------------------------- helpers for tests


APP_ID = 4242


@functools.cache
def app_key() -> AppKey:
    """One RSA key per test process: generating is slow-ish, and no key is ever committed."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return AppKey(private.decode(), public.decode())


def make_app_jwt(app_id: int | str, private_key_pem: str, *, now: float | None = None, ttl_s: int = 540) -> str:
    """An App JWT the way GitHub documents it (iat 60 s in the past against clock drift)."""
    issued = int(time.time() if now is None else now)
    claims = {"iat": issued - 60, "exp": issued + ttl_s, "iss": str(app_id)}
    return jwt.encode(claims, _private_key(private_key_pem), algorithm="RS256")


@functools.cache
def _private_key(pem: str) -> rsa.RSAPrivateKey:
    """Parsing a PEM key checks it, which costs ~30 ms; tests sign many JWTs with the same key."""
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


@pytest.fixture
def github_double() -> Iterator[GitHubDouble]:
    """A running double for App `APP_ID` with key `app_key()`; fails the test on any violation."""
    with GitHubDouble(app_id=APP_ID, public_key_pem=app_key().public_pem) as double:
        yield double


# ---------------------------------------------------------------- the double


class GitHubDouble(CiResources):
    """GitHub's REST API on 127.0.0.1, strict about requests, generous with defaults."""

    def __init__(
        self,
        *,
        app_id: int | str,
        public_key_pem: str | bytes,
        slug: str = "nofx-test",
        name: str = "nofx test",
        client_id: str = "Iv23liTESTCLIENTID",
        path_prefix: str = "",
        html_url: str = "https://github.com",
        token_ttl: timedelta = timedelta(hours=1),
        clock: Callable[[], float] = time.time,
        check_on_exit: bool = True,
        allow: Iterable[str] = (),
    ) -> None:
        self.app_id = int(app_id)
        self.slug = slug
        self.name = name
        self.client_id = client_id
        self.path_prefix = path_prefix.rstrip("/")
        self.html_url = html_url.rstrip("/")
        self.token_ttl = token_ttl
        self.clock = clock
        self.check_on_exit = check_on_exit
        self.allow = tuple(allow)
        self.spec = openapi.load()
        self._public_keys = [_as_text(public_key_pem)]
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._calls: list[Call] = []
        self._canned: dict[tuple[str, str], list[_Canned]] = {}
        self._handlers: dict[tuple[str, str], Handler] = {}
        self._gates: dict[tuple[str, str], Callable[[], None]] = {}

        self.violations: list[Violation] = []
        self._init_resources()
        self._init_ci()

    # ------------------------------------------------------------ lifecycle

    @property
    def base_url(self) -> str:
        """The REST base URL, for `GITHUB_API_URL`."""
        if self._server is None:
            raise RuntimeError("the GitHub double is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}{self.path_prefix}"

    def start(self) -> GitHubDouble:
        """Listen on a free port of 127.0.0.1 and serve from a daemon thread."""
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, name="github-double", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and free the port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> GitHubDouble:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        self.stop()
        # Do not hide the test's own failure behind a list of violations.
        if exc_type is None and self.check_on_exit:
            self.assert_clean(allow=self.allow)

    # ------------------------------------------------------------ programming it

    def respond(
        self,
        method: str,
        template: str,
        status: int,
        json: Any = None,
        headers: dict[str, str] | None = None,
        times: int | None = 1,
    ) -> None:
        """Queue a canned answer for an operation (after auth and validation); `times=None` is forever.

        Queued answers are used in order, then the default behaviour resumes:
        `respond("POST", t, 502, times=2)` fails twice and then works.
        """
        key = self._key(method, template)
        body = json if json is not None or status < 400 else error_body(status)
        with self._lock:
            self._canned.setdefault(key, []).append(_Canned(Reply(status, body, dict(headers or {})), times))

    def handler(self, method: str, template: str, fn: Handler) -> None:
        """Replace the default behaviour of an operation; `fn` returning None falls back to it."""
        with self._lock:
            self._handlers[self._key(method, template)] = fn

    def gate(self, method: str, template: str, wait: Callable[[], None]) -> None:
        """Call `wait` before answering each request of an operation, outside the double's lock (which answers one
        request at a time), so it may block: concurrency tests hold requests until enough are in flight."""
        with self._lock:
            self._gates[self._key(method, template)] = wait

    # ------------------------------------------------------------ inspecting it

    def calls(self, method: str | None = None, template: str | None = None) -> list[Call]:
        """Requests received, in order; `template` is an OpenAPI path (parameter names ignored) or a path."""
        wanted = openapi.normalize_template(template) if template and "{" in template else None
        with self._lock:
            return [
                call
                for call in self._calls
                if (method is None or call.method == method.upper())
                and (
                    template is None
                    or (wanted is not None and call.template and openapi.normalize_template(call.template) == wanted)
                    or template in (call.path, call.path.removeprefix(self.path_prefix))
                )
            ]

    def assert_clean(self, *, allow: Iterable[str] = ()) -> None:
        """Raise AssertionError listing violations whose kind is not in `allow`."""
        allowed = set(allow)
        with self._lock:
            found = [v for v in self.violations if v.kind not in allowed]
        if found:
            raise AssertionError(f"{len(found)} request(s) GitHub would refuse:\n" + "\n".join(f"  {v}" for v in found))

    # ------------------------------------------------------------ request pipeline

    def dispatch(self, method: str, target: str, headers: dict[str, str], raw_body: bytes) -> Reply:
        """Answer one HTTP request (the server thread calls this; tests rarely need to)."""
        self._pass_gate(method.upper(), target)
        with self._lock:
            try:
                reply, call = self._dispatch(method.upper(), target, headers, raw_body)
            except Exception:
                self.violations.append(Violation("double_error", method, target, traceback.format_exc()))
                return Reply(500, error_body(500))
            call.status, call.response = reply.status, reply.json
            return reply

    def _pass_gate(self, method: str, target: str) -> None:
        with self._lock:
            gates = dict(self._gates)
        matched = self.spec.match(method, urlsplit(target).path.removeprefix(self.path_prefix)) if gates else None
        if matched is not None:
            wait = gates.get((matched[0].method, openapi.normalize_template(matched[0].template)))
            if wait is not None:
                wait()

    def _dispatch(self, method: str, target: str, headers: dict[str, str], raw_body: bytes) -> tuple[Reply, Call]:
        split = urlsplit(target)
        path = split.path
        query = parse_qsl(split.query, keep_blank_values=True)
        call = Call(method, path, None, None, {}, dict(query), headers, None)
        self._calls.append(call)

        if raw_body.strip():
            try:
                call.json = body = json.loads(raw_body)
            except ValueError:
                return self._refuse(call, "invalid_request", 400, "Problems parsing JSON", "body is not JSON"), call
        else:
            body = MISSING

        if path.startswith(self.path_prefix + BLOB_PREFIX):
            return self.serve_blob(call), call
        if self.path_prefix and not path.startswith(self.path_prefix + "/"):
            return self._refuse(
                call, "unknown_operation", 404, "Not Found", f"path lacks prefix {self.path_prefix}"
            ), call
        matched = self.spec.match(method, path.removeprefix(self.path_prefix))
        if matched is None:
            others = self.spec.templates_for(path.removeprefix(self.path_prefix))
            hint = f" (that path has: {', '.join(others)})" if others else ""
            return self._refuse(call, "unknown_operation", 404, "Not Found", f"no such operation{hint}"), call
        op, call.path_params = matched
        call.template, call.operation_id = op.template, op.operation_id

        refused = self._authenticate(call, op)
        if refused is not None:
            return refused, call

        call.query, errors = op.validate_query(query)
        errors += op.validate_body(body)
        if errors:
            detail = "; ".join(errors)
            return self._refuse(call, "invalid_request", 422, f"Invalid request.\n\n{detail}", detail), call

        key = (op.method, openapi.normalize_template(op.template))
        canned = self._canned.get(key)
        if canned:
            entry = canned[0]
            if entry.times is not None:
                entry.times -= 1
                if entry.times <= 0:
                    canned.pop(0)
            return entry.reply, call
        custom = self._handlers.get(key)
        if custom is not None:
            reply = custom(call)
            if reply is not None:
                return reply, call
        return default_reply(self, call), call

    def _refuse(self, call: Call, kind: str, status: int, message: str, detail: str) -> Reply:
        """Record a violation and answer the way GitHub does."""
        self.violations.append(Violation(kind, call.method, call.path, detail))
        return Reply(status, error_body(status, message))

    def _key(self, method: str, template: str) -> tuple[str, str]:
        op = self.spec.operation(method, template)  # KeyError on a typo in the test
        return op.method, openapi.normalize_template(op.template)

    # ------------------------------------------------------------ auth

    def _authenticate(self, call: Call, op: Operation) -> Reply | None:
        """GitHub's three auth regimes: none for manifests, an App JWT for /app…, else an installation token."""
        if op.template.startswith("/app-manifests/"):
            return None
        scheme, _, credential = call.headers.get("authorization", "").partition(" ")
        if op.template == "/app" or op.template.startswith("/app/"):
            if scheme.lower() != "bearer":
                return self._unauthorized(call, "an App JWT (Authorization: Bearer <jwt>) is required")
            problem = self._check_jwt(credential.strip())
            return None if problem is None else self._unauthorized(call, problem)

        if scheme.lower() not in ("token", "bearer"):
            return self._unauthorized(call, "an installation token (Authorization: token <t>) is required")
        token = self._tokens.get(credential.strip())
        if token is None:
            looks_like_jwt = credential.count(".") == 2
            reason = "an App JWT cannot call this endpoint" if looks_like_jwt else "unknown token"
            return self._unauthorized(call, reason, "Bad credentials")
        if token.expires_at <= self.clock():
            return self._unauthorized(call, "the installation token has expired", "Bad credentials")
        if token.revoked:
            return self._unauthorized(call, "the installation token was revoked", "Bad credentials")
        call.installation_id = token.installation_id
        owner, repo = call.path_params.get("owner"), call.path_params.get("repo")
        if owner and repo and not self._token_reaches(token, owner, repo):
            return self._refuse(
                call,
                "unauthorized",
                404,
                "Not Found",
                f"installation {token.installation_id} cannot see {owner}/{repo}",
            )
        return None

    def _unauthorized(self, call: Call, detail: str, message: str = "A JSON web token could not be decoded") -> Reply:
        return self._refuse(call, "unauthorized", 401, message, detail)

    def _check_jwt(self, credential: str) -> str | None:
        """Why GitHub would refuse this App JWT, or None."""
        claims = None
        problem = "no public key to check the JWT with"
        for key in self._public_keys:
            try:
                claims = jwt.decode(
                    credential,
                    key,
                    algorithms=["RS256"],
                    options={"verify_exp": False, "verify_iat": False, "require": ["iat", "exp", "iss"]},
                )
                break
            except jwt.PyJWTError as exc:
                problem = f"JWT rejected: {exc}"
        if claims is None:
            return problem
        now = self.clock()
        if str(claims["iss"]) not in (str(self.app_id), self.client_id):
            return f"'iss' is {claims['iss']!r}, not the App id {self.app_id}"
        if not isinstance(claims["exp"], int | float) or claims["exp"] <= now - _JWT_LEEWAY_S:
            return "'exp' must be a time in the future (the JWT has expired)"
        if claims["exp"] > now + 600 + _JWT_LEEWAY_S:
            return "'exp' is too far in the future (at most 10 minutes)"
        if not isinstance(claims["iat"], int | float) or claims["iat"] > now + 60:
            return "'iat' is in the future"
        return None

    def _token_reaches(self, token: Token, owner: str, repo: str) -> bool:
        full_name = f"{owner}/{repo}".lower()
        inst = self._installation(token.installation_id)
        scopes = [token.repositories, inst.repositories if inst else None]
        return all(scope is None or full_name in {r.lower() for r in scope} for scope in scopes)


# ---------------------------------------------------------------- HTTP plumbing


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, double: GitHubDouble) -> None:
        super().__init__(("127.0.0.1", 0), _RequestHandler)
        self.double = double


class _RequestHandler(BaseHTTPRequestHandler):
    """Hands each request to the double; HTTP/1.1 keep-alive, since real clients pool connections."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle on, each answer waits for a delayed ACK (~40 ms).
    disable_nagle_algorithm = True
    server: _Server

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PATCH = do_PUT = do_DELETE = do_HEAD = do_GET

    def _handle(self) -> None:
        headers = {name.lower(): value for name, value in self.headers.items()}
        reply = self.server.double.dispatch(self.command, self.path, headers, self._read_body(headers))
        if reply.body is not None:
            payload = reply.body
        elif reply.json is None and reply.status in (204, 304):
            payload = b""
        else:
            payload = json.dumps(reply.json).encode()
        self.send_response(reply.status)
        out = {
            "content-type": "application/json; charset=utf-8",
            "x-github-request-id": secrets.token_hex(8).upper(),
            "x-github-media-type": "github.v3; format=json",
            "x-ratelimit-limit": "5000",
            "x-ratelimit-remaining": "4999",
            "x-ratelimit-used": "1",
            "x-ratelimit-reset": str(int(time.time()) + 3600),
            "x-ratelimit-resource": "core",
            **{k.lower(): v for k, v in reply.headers.items()},
            "content-length": str(len(payload)),
        }
        for name, value in out.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _read_body(self, headers: dict[str, str]) -> bytes:
        if headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            self.rfile.readline()
            return b"".join(chunks)
        return self.rfile.read(int(headers.get("content-length") or 0))

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the double's record is `calls()`, not stderr."""


def _as_text(pem: str | bytes) -> str:
    return pem.decode() if isinstance(pem, bytes) else pem
