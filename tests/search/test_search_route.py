"""`GET /search` through the real app: bearer token, parameter checks, results in the OpenAPI shape."""

from __future__ import annotations

import asyncio
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from starlette.testclient import TestClient

from bot.models import Installation, Repository
from bot.queue import WorkQueue
from bot.search.embeddings import LocalEmbeddings
from bot.search.index import SearchIndex
from bot.settings import Settings
from bot.store import Store
from bot.web.app import create_app
from bot.web.openapi import openapi
from tests.search.test_semantic_search import REQUEST, repo  # noqa: F401  (`repo` is a fixture)
from tests.support.runs_api import AUTH, TOKEN


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, api_token=TOKEN, embeddings_model="local:all-minilm-l6-v2")


@pytest.fixture
def client(settings: Settings, store: Store, queue: WorkQueue, tmp_path: Path) -> TestClient:
    with store.session() as session:
        session.add(Installation(id=5, account_login="o"))
        session.add(Repository(id=55, installation_id=5, full_name="o/toolbox"))
    return TestClient(create_app(settings, store=store, queue=queue, env_file=tmp_path / ".env"))


def test_search_finds_the_file_by_meaning_and_answers_in_the_documented_shape(
    client: TestClient,
    settings: Settings,
    repo: Path,  # noqa: F811
) -> None:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    asyncio.run(SearchIndex.open(settings, LocalEmbeddings()).index_code(5, "o/toolbox", repo, commit))

    answer = client.get("/search", params={"q": REQUEST, "repo": "O/Toolbox", "limit": 2}, headers=AUTH)

    assert answer.status_code == 200, answer.text
    _conforms(answer.json(), "SearchResults")
    assert answer.json()["results"][0]["path"] == "vault/kdf.py"


def test_search_needs_the_token_and_well_formed_parameters(client: TestClient) -> None:
    assert client.get("/search", params={"q": "x", "repo": "o/toolbox"}).status_code == 401
    bad = [{"q": "", "repo": "o/toolbox"}, {"q": "x", "repo": "nope"}, {"q": "x", "repo": "o/t", "kind": "all"}]
    assert [client.get("/search", params=p, headers=AUTH).status_code for p in bad] == [400, 400, 400]
    assert client.get("/search", params={"q": "x", "repo": "someone/else"}, headers=AUTH).status_code == 404


def _conforms(body: Any, schema_name: str) -> None:
    document = openapi()
    validator = Draft202012Validator({**document, "$ref": f"#/components/schemas/{schema_name}"})
    assert not sorted(validator.iter_errors(body), key=str)
