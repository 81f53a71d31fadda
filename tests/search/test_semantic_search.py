"""Semantic search with a real embedding model (all-MiniLM-L6-v2 on the CPU) and a real Chroma."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.cli import main as cli
from bot.search.chunks import chunker_of
from bot.search.code_search import search_repository
from bot.search.embeddings import LocalEmbeddings
from bot.search.index import SearchIndex
from bot.settings import Settings
from bot.store import Store
from bot.workspace.local import local_repository

FILES = {
    # The request below shares no identifier, path or word with this file.
    "vault/kdf.py": '''import hashlib
import hmac
import os


def derive(pw: str, salt: bytes | None = None) -> tuple[bytes, bytes]:
    """PBKDF2-HMAC-SHA256 with 600k iterations and a random 16-byte salt."""
    salt = salt or os.urandom(16)
    return salt, hashlib.pbkdf2_hmac("sha256", pw.encode(), salt, 600_000)


def matches(pw: str, salt: bytes, expected: bytes) -> bool:
    return hmac.compare_digest(derive(pw, salt)[1], expected)
''',
    "geo/haversine.py": """from math import asin, cos, radians, sin, sqrt

EARTH_KM = 6371.0


def km_between(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    dlat, dlon = radians(lat2 - lat1), radians(lon2 - lon1)
    a = sin(dlat / 2) ** 2 + cos(radians(lat1)) * cos(radians(lat2)) * sin(dlon / 2) ** 2
    return 2 * EARTH_KM * asin(sqrt(a))
""",
    "shop/basket.py": """class Basket:
    def __init__(self) -> None:
        self.items: dict[str, int] = {}

    def add(self, sku: str, qty: int = 1) -> None:
        self.items[sku] = self.items.get(sku, 0) + qty

    def total(self, prices: dict[str, float]) -> float:
        return sum(prices[sku] * qty for sku, qty in self.items.items())
""",
    "mail/outbox.py": """import smtplib
from email.message import EmailMessage


def send(to: str, subject: str, body: str, host: str = "localhost") -> None:
    message = EmailMessage()
    message["To"], message["Subject"] = to, subject
    message.set_content(body)
    with smtplib.SMTP(host) as smtp:
        smtp.send_message(message)
""",
    "README.md": "# toolbox\n\nSmall utilities.\n",
}
REQUEST = "keep user credentials safe when we store them"


@pytest.fixture(scope="module")
def embedder() -> LocalEmbeddings:
    return LocalEmbeddings()


@pytest.fixture
def index(tmp_path: Path, embedder: LocalEmbeddings) -> Iterator[SearchIndex]:
    settings = Settings(data_dir=tmp_path / "data", database_url="sqlite://", redis_url=None)
    yield SearchIndex.open(settings, embedder)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "toolbox"
    for path, text in FILES.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    _git(root, "init", "-q", "-b", "main")
    _commit(root, "toolbox")
    return root


def test_the_request_names_nothing_in_the_file_and_the_file_ranks_first(index: SearchIndex, repo: Path) -> None:
    words = {w.strip(".,").lower() for w in REQUEST.split()}
    text = FILES["vault/kdf.py"].lower()
    assert not any(word in text or word in "vault/kdf.py" for word in words if len(word) > 2)

    asyncio.run(index.index_code(7, "o/toolbox", repo, _head(repo)))
    hits = index.search_files(7, REQUEST, repo="o/toolbox", limit=3)

    assert hits[0].path == "vault/kdf.py"
    assert hits[0].start == 1 and hits[0].score > hits[1].score


async def test_a_push_is_indexed_incrementally_and_a_deleted_file_is_gone(index: SearchIndex, repo: Path) -> None:
    first = await index.index_code(7, "o/toolbox", repo, _head(repo))
    assert first.full and first.files == len(FILES)

    (repo / "mail" / "outbox.py").unlink()
    (repo / "geo" / "haversine.py").write_text(
        "def km_between(a: float, b: float) -> float:\n    return abs(a - b) * 111.0\n"
    )
    (repo / "sched" / "cron.py").parent.mkdir()
    (repo / "sched" / "cron.py").write_text("def next_run(expr: str, now: float) -> float:\n    ...\n")
    _commit(repo, "push")
    second = await index.index_code(7, "o/toolbox", repo, _head(repo))

    assert (second.full, second.files) == (False, 2)  # the two changed files, not the whole repository
    paths = {hit.path for hit in index.search(7, "deliver an e-mail message", repo="o/toolbox", limit=20)}
    assert "mail/outbox.py" not in paths and "sched/cron.py" in paths
    assert index.indexed_commit(7, "o/toolbox") == _head(repo)


async def test_a_repository_that_lacks_the_indexed_commit_is_indexed_afresh(
    index: SearchIndex, repo: Path, tmp_path: Path
) -> None:
    """The name was another repository's when it was indexed (renamed, then made again; say the first was private),
    or its history was rewritten: the diff against that commit fails, and an empty diff kept the other's code."""
    await index.index_code(7, "o/toolbox", repo, _head(repo))
    since = tmp_path / "since"
    (since / "shop").mkdir(parents=True)
    (since / "shop" / "till.py").write_text("def change(paid: float, due: float) -> float:\n    return paid - due\n")
    _git(since, "init", "-q", "-b", "main")
    _commit(since, "another repository")

    again = await index.index_code(7, "o/toolbox", since, _head(since))

    assert again.full
    assert {hit.path for hit in index.search(7, REQUEST, repo="o/toolbox", limit=20)} == {"shop/till.py"}


async def test_another_embeddings_model_rebuilds_the_collection(index: SearchIndex, repo: Path) -> None:
    await index.index_code(7, "o/toolbox", repo, _head(repo))

    class Other:
        name = "local:other-model"

        def embed(self, texts: list[str]) -> list[list[float]]:
            return [[1.0, 0.0, 0.0] for _ in texts]

    other = SearchIndex(index.client, Other())
    assert other.indexed_commit(7, "o/toolbox") is None  # the old vectors are gone with their model
    assert other.search(7, "anything", repo="o/toolbox") == []


async def test_another_chunker_reindexes_the_repository(index: SearchIndex, repo: Path) -> None:
    await index.index_code(7, "o/toolbox", repo, _head(repo))
    collection = index.client.get_collection("i7-code")
    kept = {k: v for k, v in collection.metadata.items() if not k.startswith("hnsw:")}
    collection.modify(metadata={**kept, "chunker:o/toolbox": "lines-40"})  # as it was before chunks fit the window

    again = await index.index_code(7, "o/toolbox", repo, _head(repo))

    assert again.full and again.files == len(FILES)
    assert (index.client.get_collection("i7-code").metadata or {})["chunker:o/toolbox"] == chunker_of(index.embedder)


async def test_search_repository_merges_regex_matches_with_semantic_hits(index: SearchIndex, repo: Path) -> None:
    lines = await search_repository(index, 0, repo, "km_between", limit=3)
    assert lines[0].startswith("geo/haversine.py:6:")  # the exact match first, with its line
    assert any("(semantic" in line for line in lines[1:])


def _head(repo: Path) -> str:
    return _git(repo, "rev-parse", "HEAD").strip()


def _commit(repo: Path, message: str) -> None:
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", message)


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def test_server_mode_against_a_real_chroma_server(tmp_path: Path, embedder: LocalEmbeddings, repo: Path) -> None:
    port = _free_port()
    chroma = shutil.which("chroma", path=str(Path(sys.executable).parent))
    assert chroma is not None, "the chromadb package installs the `chroma` command"
    with (tmp_path / "chroma.log").open("wb") as log:
        server = subprocess.Popen(
            [chroma, "run", "--path", str(tmp_path / "chroma-server"), "--host", "127.0.0.1", "--port", str(port)],
            stdout=log,
            stderr=log,
        )
        try:
            _wait_for_port(port, server)
            settings = Settings(
                data_dir=tmp_path / "unused",
                database_url="sqlite://",
                redis_url=None,
                chroma_url=f"http://127.0.0.1:{port}",
            )
            index = SearchIndex.open(settings, embedder)
            report = asyncio.run(index.index_code(3, "o/toolbox", repo, _head(repo)))
            hits = index.search_files(3, REQUEST, repo="o/toolbox", limit=2)
        finally:
            server.terminate()
            server.wait(timeout=15)
    assert report.files == len(FILES) and hits[0].path == "vault/kdf.py"
    assert not (tmp_path / "unused" / "chroma").exists()  # nothing went to the embedded store


def test_nofx_search_prints_semantic_and_regex_results(
    tmp_path: Path, repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # In this process: the model is already loaded for the session; a subprocess would load torch again (seconds).
    monkeypatch.setenv("NOFX_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("NOFX_EMBEDDINGS_MODEL", "local:all-minilm-l6-v2")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)

    assert cli.main(["search", "--repo", str(repo), "--limit", "2", REQUEST]) == 0

    assert capsys.readouterr().out.splitlines()[0].startswith("vault/kdf.py:1-")


def test_nofx_search_finds_the_runs_of_nofx_run_and_refuses_a_repository_this_server_does_not_serve(
    tmp_path: Path,
    repo: Path,
    embedder: LocalEmbeddings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'nofx.db'}", redis_url=None)
    Store(settings.database_url).create_all()
    index = SearchIndex.open(settings, embedder)
    index.add_run(
        0, local_repository(repo), "r1", "hash the passwords", "generate (codegen)", "succeeded", repository_id=None
    )
    monkeypatch.setenv("NOFX_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("NOFX_EMBEDDINGS_MODEL", "local:all-minilm-l6-v2")

    assert cli.main(["search", "--repo", str(repo), "--kind", "runs", "password storage"]) == 0
    assert capsys.readouterr().out.splitlines()[:2] == [
        "run r1 (similarity " + _score(index) + ")",
        "    request: hash the passwords",
    ]
    assert cli.main(["search", "--repo", "someone/else", "--kind", "runs", "passwords"]) == 2
    assert "does not serve someone/else" in capsys.readouterr().err


def _score(index: SearchIndex) -> str:
    [hit] = index.search(0, "password storage", kind="runs", repo="local/toolbox")
    return f"{hit.score:.2f}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, "chroma run exited"
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.2)
    raise AssertionError("chroma run did not listen within 60 s")
