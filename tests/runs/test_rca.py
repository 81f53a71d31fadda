"""RCA bundles of a real failed run: a comment through the real app, a real worker, a real failing gate; the bundle
downloaded over the API (and by `nofx rca`'s download function) holds everything, with no secret in it."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from bot import logs
from bot.cli import main as cli
from bot.models import Delivery, RunStatus
from bot.queue import WorkQueue
from bot.runs import queries, rca
from bot.settings import Settings
from bot.store import Store
from bot.web.app import create_app
from tests.conftest import OWNER, REPO, Deliverer, ask, with_model
from tests.support.git_server import GitServer
from tests.support.github_double import GitHubDouble
from tests.support.llm_double import AnthropicDouble
from tests.support.payloads import load_payload

API_TOKEN = "api-" + "r" * 30
LEAKY = "ghs_" + "PastedByMistake1" * 2  # a token someone pasted into their request


@pytest.fixture
def settings(settings: Settings, llm: AnthropicDouble) -> Settings:
    return dataclasses.replace(with_model(settings, llm), api_token=API_TOKEN)


@pytest.fixture
def app(settings: Settings, store: Store, queue: WorkQueue, tmp_path: Path) -> Starlette:
    """The web as deployed: a data dir of its own, none of the worker's files (logs, mirrors) on its disk."""
    web = dataclasses.replace(settings, data_dir=tmp_path / "web")
    return create_app(web, store=store, queue=queue, env_file=tmp_path / ".env")


@pytest.fixture(autouse=True)
def _installed(installed: Callable[[dict[str, Any]], None]) -> None:
    installed(load_payload("issue_comment.created"))


@pytest.fixture
def run_logs(settings: Settings) -> Iterator[None]:
    """What `logs.configure(..., data_dir=...)` installs in a worker: per-run log files."""
    handler = logs.RunLogHandler(settings.data_dir, logs.Redactor(settings.secrets))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield
    root.removeHandler(handler)
    root.setLevel(level)


def members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {
            m.name.split("/", 1)[1]: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }


@pytest.mark.usefixtures("run_logs")
def test_the_bundle_of_a_failed_run_explains_it(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
    client: TestClient,
    settings: Settings,
    tmp_path: Path,
) -> None:
    github.files[(OWNER, REPO, ".github/nofx.yml", None)] = (
        "gates:\n  test: python3 -m unittest -q\nrepair:\n  max_attempts: 0\n"
    )
    llm.tool_calls(
        [
            ("replace_in_file", {"path": "calc.py", "old": "a + b", "new": "a - b"}),
            ("finish", {"summary": "Breaks add."}),
        ]
    )
    deliver("issue_comment", ask(git, f"/nofx subtract instead; my token is {LEAKY}"))
    work()
    run = queries.latest_run_on_thread(store, f"{OWNER}/{REPO}", 1)
    assert run is not None and run.status == RunStatus.failed

    assert client.get(f"/runs/{run.id}/rca").status_code == 401
    assert client.get("/runs/nope/rca", headers={"Authorization": f"Bearer {API_TOKEN}"}).status_code == 404
    response = client.get(f"/runs/{run.id}/rca", headers={"Authorization": f"Bearer {API_TOKEN}"})

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/gzip"
    assert f'filename="nofx-rca-{run.id}.tar.gz"' in response.headers["content-disposition"]
    files = members(response.content)
    assert {
        "run.json",
        "steps.json",
        "events.json",
        "llm_usage.json",
        "gates/test.log",
        "checkpoints.json",
        "checkpoints/001-apply.patch",
        "checkpoints/002-test.patch",
        "delivery.json",
        "worker.log",
        "summary.md",
    } <= set(files)
    assert json.loads(files["run.json"])["id"] == run.id
    assert [s["name"] for s in json.loads(files["steps.json"])] == ["generate", "apply", "test", "pull-request", "ci"]
    assert any(e["type"] == "step.failed" and e["step"] == "test" for e in json.loads(files["events.json"]))
    usage = json.loads(files["llm_usage.json"])
    assert usage["totals"]["calls"] >= 1 and usage["totals"]["cost_usd"] > 0
    assert "AssertionError" in files["gates/test.log"].decode()
    assert "-    return a + b\n+    return a - b" in files["checkpoints/001-apply.patch"].decode()
    delivery = json.loads(files["delivery.json"])
    assert delivery["id"] == run.delivery_id and delivery["event"] == "issue_comment"
    assert delivery["payload"]["comment"]["body"] == "/nofx subtract instead; my token is [redacted]"
    # Worker lines of this run, each carrying run and step ids.
    lines = [json.loads(line) for line in files["worker.log"].decode().splitlines()]
    assert lines and all(line["run_id"] == run.id for line in lines)
    assert any(line.get("step") == "test" and line.get("step_id") for line in lines)
    summary = files["summary.md"].decode()
    assert "**failed**" in summary and "Step **test** (`gate:test`)" in summary and "AssertionError" in summary
    assert "## Timeline" in summary and "## Costs" in summary and "| 2 | test | failed |" in summary
    # Nothing secret anywhere in the bundle.
    everything = b"".join(files.values()).decode(errors="replace")
    assert LEAKY not in everything
    for secret in settings.secrets:
        assert secret not in everything
    with store.session() as session:  # the bundle is redacted, the record is not rewritten
        stored = session.get(Delivery, run.delivery_id)
        assert stored is not None and LEAKY in stored.payload["comment"]["body"]

    # `nofx rca` downloads the same bundle into a file.
    target = tmp_path / "bundle.tar.gz"
    client.headers["Authorization"] = f"Bearer {API_TOKEN}"
    size = rca.download(client, run.id, target)
    assert size == target.stat().st_size and set(members(target.read_bytes())) == set(files)
    client.headers["Authorization"] = "Bearer wrong"
    with pytest.raises(rca.RcaError, match="NOFX_API_TOKEN"):
        rca.download(client, run.id, tmp_path / "refused.tar.gz")
    assert not (tmp_path / "refused.tar.gz").exists()


def test_nofx_rca_needs_the_api_token(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NOFX_API_TOKEN", raising=False)
    try:
        assert cli.main(["rca", "abc", "-o", str(tmp_path / "x.tar.gz")]) == 2
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
    assert "NOFX_API_TOKEN" in capsys.readouterr().err
