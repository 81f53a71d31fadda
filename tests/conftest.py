"""Shared fixtures: a real queue server, a real database, the real ASGI app and a real GitHub double."""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import OperationalError
from sqlmodel import SQLModel
from starlette.applications import Starlette
from starlette.testclient import TestClient

from bot.models import Installation
from bot.queue import DISPATCH_LANE, WorkQueue, start_embedded_valkey
from bot.settings import Settings
from bot.store import Store
from bot.web.app import create_app
from bot.worker.loop import run_worker
from bot.worker.runtime import Runtime
from tests.support.git_server import GitServer
from tests.support.github_double import GitHubDouble
from tests.support.llm_double import AnthropicDouble
from tests.support.payloads import load_payload, webhook_headers

APP_ID = "4242"
OWNER, REPO, BASE = "Codertocat", "Hello-World", "master"  # the repository of the vendored payloads
CALC = "def add(a, b):\n    return a + b\n"
TEST_CALC = (
    "import unittest\n\nfrom calc import add\n\n\n"
    "class AddTest(unittest.TestCase):\n    def test_add(self):\n        self.assertEqual(add(2, 3), 5)\n"
)
POSTGRES_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="session")
def app_key() -> tuple[str, str]:
    """An RSA key pair for the App, made at test time (keys are never committed)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """This test process's Redis database from NOFX_TEST_REDIS_URL, else a Valkey server of this process's own.

    NOFX_TEST_REDIS_URL is a comma-separated list (CI names the machine's databases 13 and 14): test process
    gwN of pytest-xdist takes the Nth; one the list does not reach starts its own server. Each test flushes its
    database, so processes running at once (also other people's test runs) must never share one.
    """
    configured = [url.strip() for url in os.environ.get("NOFX_TEST_REDIS_URL", "").split(",") if url.strip()]
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    if worker < len(configured):
        yield configured[worker]
        return
    directory = Path(tempfile.mkdtemp(prefix="nofx-vk-"))
    server = start_embedded_valkey(directory)
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def queue(redis_url: str) -> Iterator[WorkQueue]:
    work_queue = WorkQueue.from_url(redis_url)
    work_queue.redis.flushdb()
    yield work_queue
    work_queue.redis.flushdb()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str | None]:
    """A schema of this session's own on the PostgreSQL of NOFX_TEST_POSTGRES_URL, or a local one that answers.

    The schema keeps parallel test runs from dropping each other's tables.
    """
    base = os.environ.get("NOFX_TEST_POSTGRES_URL") or POSTGRES_DEFAULT
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    schema = f"nofx_test_{os.getpid()}_{secrets.token_hex(4)}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
    except OperationalError:
        if os.environ.get("NOFX_TEST_POSTGRES_URL"):
            raise  # configured means required: a missing server is a failure, not a skip
        yield None
        return
    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path, postgres_url: str | None) -> Iterator[Store]:
    """A fresh store on SQLite, and again on PostgreSQL when one answers (required when configured)."""
    if request.param == "sqlite":
        store = Store(f"sqlite:///{tmp_path / 'nofx.db'}")
    else:
        if postgres_url is None:
            pytest.skip("no PostgreSQL answers on 127.0.0.1:5432 (set NOFX_TEST_POSTGRES_URL to require one)")
        store = Store(postgres_url)
        store.create_all()
        tables = ", ".join(table.name for table in SQLModel.metadata.sorted_tables)
        with store.engine.begin() as conn:  # faster than dropping and creating the schema for every test
            conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    store.create_all()
    yield store
    store.dispose()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """The default SQLite store for tests that are not about the database itself."""
    sqlite = Store(f"sqlite:///{tmp_path / 'nofx.db'}")
    sqlite.create_all()
    yield sqlite
    sqlite.dispose()


@pytest.fixture
def github(app_key: tuple[str, str]) -> Iterator[GitHubDouble]:
    with GitHubDouble(app_id=APP_ID, public_key_pem=app_key[1]) as double:
        yield double


@pytest.fixture
def report_interval_s() -> float:
    """No pause between two edits of a run's comment: a test of the pause parametrizes this (it costs a second)."""
    return 0.0


@pytest.fixture
def settings(
    tmp_path: Path,
    app_key: tuple[str, str],
    github: GitHubDouble,
    redis_url: str,
    store: Store,
    report_interval_s: float,
) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=store.url,
        redis_url=redis_url,
        github_api_url=github.base_url,
        app_id=APP_ID,
        private_key=app_key[0],
        webhook_secret="whsec-" + secrets.token_hex(16),
        report_interval_s=report_interval_s,
    )


@pytest.fixture
def app(settings: Settings, store: Store, queue: WorkQueue, tmp_path: Path) -> Starlette:
    return create_app(settings, store=store, queue=queue, env_file=tmp_path / ".env")


@pytest.fixture
def client(app: Starlette) -> Iterator[TestClient]:
    """The real ASGI app; sync, so a test can also run an RQ worker in the main thread (signals)."""
    with TestClient(app, base_url="http://nofx.test", raise_server_exceptions=False) as http:
        yield http


@pytest.fixture
def runtime(settings: Settings, queue: WorkQueue) -> Iterator[Runtime]:
    """A worker's dependencies, as `nofx worker` builds them, on the test's queue and database."""
    worker_runtime = Runtime(settings)
    yield worker_runtime
    worker_runtime.close()


class Deliverer:
    """Posts deliveries signed exactly as GitHub signs them, through the real ASGI app."""

    def __init__(self, client: TestClient, secret: str) -> None:
        self.client = client
        self.secret = secret

    def __call__(
        self, event: str, payload: dict[str, Any], *, delivery_id: str | None = None, secret: str | None = None
    ) -> httpx.Response:
        body = json.dumps(payload).encode()
        headers = webhook_headers(event, body, secret or self.secret, delivery_id=delivery_id)
        response = self.client.post("/webhooks", content=body, headers=headers)
        assert self.client.portal is not None
        self.client.portal.call(self.client.app.state.intake.enqueue.settled)  # the push follows the answer
        return response


@pytest.fixture
def deliver(client: TestClient, settings: Settings) -> Deliverer:
    assert settings.webhook_secret
    return Deliverer(client, settings.webhook_secret)


@pytest.fixture
def work(runtime: Runtime) -> Callable[..., None]:
    """Run real RQ workers over the test queue until they and the scheduled jobs (retries, reports) are done.

    Both lanes, as every `nofx worker` has them: before each job of the work lane (steps, reviews), the dispatch
    lane serves the deliveries and reports waiting, as it does beside it while the step runs."""

    def drain(timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        queue = runtime.queue
        maintenance = True  # in burst mode: the App's identity and the intake list's deliveries
        while True:
            run_worker(runtime, burst=True, lane=DISPATCH_LANE, maintenance=maintenance)
            maintenance = False
            if queue.steps.count or queue.reviews.count:
                run_worker(runtime, burst=True, max_jobs=1, maintenance=False)
                continue
            scheduled = sum(q.scheduled_job_registry.count for q in queue.all)  # delayed jobs not yet due
            if scheduled == 0 and sum(queue.depths().values()) == 0:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"jobs still waiting after {timeout_s} s: {queue.depths()}")
            time.sleep(0.1)
            runtime.queue.enqueue_due()  # what the worker's scheduler thread does
            maintenance = True

    return drain


@pytest.fixture
def installed(store: Store) -> Callable[[dict[str, Any]], None]:
    """Record the installation a payload names, as an earlier `installation.created` would have."""

    def install(payload: dict[str, Any]) -> None:
        with store.session() as session:
            session.merge(
                Installation(id=payload["installation"]["id"], account_login=payload["repository"]["owner"]["login"])
            )

    return install


@pytest.fixture
def example_installation(installed: Callable[[dict[str, Any]], None]) -> None:
    """The installation of the example `issue_comment.created` payload, which most end-to-end tests deliver (a module
    uses it with `pytestmark = pytest.mark.usefixtures("example_installation")`)."""
    installed(load_payload("issue_comment.created"))


@pytest.fixture
def llm() -> Iterator[AnthropicDouble]:
    """A local server speaking Anthropic's wire format; tests script its answers."""
    with AnthropicDouble() as double:
        yield double


def with_model(settings: Settings, llm: AnthropicDouble) -> Settings:
    """Settings whose model is the LLM double (a test module overrides `settings` with this)."""
    return replace(settings, anthropic_api_key=llm.api_key, anthropic_base_url=llm.base_url)


@pytest.fixture
def git(tmp_path: Path, github: GitHubDouble) -> Iterator[GitServer]:
    """The payloads' repository as a real bare repository over git smart HTTP, guarded by the double's tokens."""
    with GitServer(tmp_path / "served", accept_token=github.accepts_token) as server:
        server.create_repo(OWNER, REPO, {"calc.py": CALC, "test_calc.py": TEST_CALC}, default_branch=BASE)
        github.branches[(OWNER, REPO, BASE)] = server.git(OWNER, REPO, "rev-parse", BASE).strip()
        # Steps ask GitHub for tokens by repository id: the double learns the payloads' repository's.
        github.repository_ids[load_payload("issue_comment.created")["repository"]["id"]] = f"{OWNER}/{REPO}"
        yield server


def ask(git: GitServer, body: str, number: int = 1) -> dict[str, Any]:
    """An `issue_comment.created` delivery on issue `number` whose repository clones from `git`."""
    payload = load_payload("issue_comment.created", comment__body=body)
    payload["repository"]["clone_url"] = git.url_for(OWNER, REPO)
    payload["issue"]["number"] = number
    return payload


def expire_routing_caches(queue: WorkQueue) -> None:
    """What HEAD_CACHE_TTL_S and PERMISSION_CACHE_TTL_S passing does to what a worker remembers while routing: the
    default branch's head and senders' permissions are asked of GitHub again (a test changing either, then acting,
    stands for one acting a minute later). The config texts, kept by commit, stay."""
    for pattern in ("nofx:head:*", "nofx:permission:*"):
        keys = list(queue.redis.scan_iter(pattern))
        if keys:
            queue.redis.delete(*keys)
