"""`setup` installs what a repository's tests import, with network, before any model is paid; a later run with the
same manifests reuses it. End to end through real parts: the wheel is built here, served by a package index on
127.0.0.1 that the operator's NOFX_SETUP_EGRESS_ALLOW names, and pip fetches it through setup's egress proxy."""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlmodel import select

from bot.models import Run, RunStatus, StepStatus
from bot.runs import queries
from bot.settings import Settings
from bot.store import Store
from tests.conftest import BASE, OWNER, REPO, Deliverer, ask, with_model
from tests.support.git_server import GitServer
from tests.support.github_double import GitHubDouble
from tests.support.llm_double import AnthropicDouble
from tests.support.package_index import Index

CONFIG = ".github/nofx.yml"
GREET = "from greeting import hello\n\n\ndef greet(name):\n    return hello(name)\n"
TEST_GREET = (
    "import unittest\n\nfrom greet import greet\n\n\n"
    "class GreetTest(unittest.TestCase):\n    def test_greet(self):\n        self.assertEqual(greet('ada'), 'hello ada')\n"
)
SETUP = """\
setup:
  - python3 -m venv --without-pip "$NOFX_SETUP_DIR"
  - /usr/bin/python3 -m pip --python "$NOFX_SETUP_DIR/bin/python" install -q --index-url {index}/simple/ \
--trusted-host {host} greeting
setup_cache_key: [requirements.txt]
gates:
  test: python3 -m unittest -q
"""


WHEEL = "greeting-1.0-py3-none-any.whl"


@pytest.fixture
def index(tmp_path: Path) -> Iterator[Index]:
    """A package index (PEP 503) on 127.0.0.1 serving the wheel: what `pip install` reaches through the proxy."""
    page = f'<a href="../../files/{WHEEL}">{WHEEL}</a>\n'.encode()
    with Index.serving(tmp_path / "index", {"simple/greeting/index.html": page, f"files/{WHEEL}": wheel()}) as served:
        yield served


@pytest.fixture
def settings(settings: Settings, llm: AnthropicDouble, index: Index) -> Settings:
    return replace(with_model(settings, llm), setup_egress_allow=f"127.0.0.1:{index.port}")


pytestmark = pytest.mark.usefixtures("example_installation")


def wheel() -> bytes:
    """A real wheel of a package `greeting`, made here: nothing comes from the internet."""
    files = {
        "greeting/__init__.py": "def hello(name):\n    return f'hello {name}'\n",
        "greeting-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: greeting\nVersion: 1.0\n",
        "greeting-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
            digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
            record.append(f"{name},sha256={digest},{len(text)}")
        archive.writestr("greeting-1.0.dist-info/RECORD", "\n".join([*record, "greeting-1.0.dist-info/RECORD,,", ""]))
    return buffer.getvalue()


def runs_in(store: Store) -> list[Run]:
    with store.session() as session:
        return list(session.exec(select(Run).order_by(Run.created_at)))  # type: ignore[arg-type]


def script_greet(llm: AnthropicDouble, name: str) -> None:
    llm.tool_calls(
        [
            ("write_file", {"path": f"{name}.py", "content": GREET}),
            ("write_file", {"path": f"test_{name}.py", "content": TEST_GREET.replace("from greet", f"from {name}")}),
            ("finish", {"summary": "Greets."}),
        ]
    )


def test_setup_installs_a_dependency_once_and_a_warm_run_reuses_it(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
    index: Index,
) -> None:
    config = SETUP.format(index=index.url, host=urlsplit(index.url).netloc)
    sha = git.commit_many(OWNER, REPO, {"requirements.txt": "greeting\n", CONFIG: config}, branch=BASE)
    github.branches[(OWNER, REPO, BASE)] = sha
    github.files[(OWNER, REPO, CONFIG, None)] = config
    script_greet(llm, "greet")

    deliver("issue_comment", ask(git, "/nofx add greet()"))
    work()

    [cold] = runs_in(store)
    assert cold.status == RunStatus.succeeded, cold.error
    steps = {s.name: s for s in queries.steps_of(store, cold.id)}
    assert list(steps)[:2] == ["setup", "generate"]  # before any model call
    assert steps["setup"].output["cached"] is False
    assert index.paths == ["/simple/greeting/", f"/files/{WHEEL}"]  # through the proxy: the sandbox has no network
    egress = [e.payload for e in queries.events_of(store, cold.id) if e.type == "setup.egress"]
    assert egress == [{"step": "setup", "reached": [f"127.0.0.1:{index.port}"], "refused": []}]
    assert "Ran 2 tests" in steps["test"].output["output_tail"]  # test_greet imported the installed package
    comment = github.issue_comments[(OWNER, REPO, 1)][-1]["body"]
    assert "install the dependencies" in comment

    script_greet(llm, "welcome")
    deliver("issue_comment", ask(git, "/nofx add welcome()", number=2))
    work()

    warm = runs_in(store)[1]
    assert warm.status == RunStatus.succeeded, warm.error
    setup = next(s for s in queries.steps_of(store, warm.id) if s.name == "setup")
    assert setup.output["cached"] is True and setup.output["key"] == steps["setup"].output["key"]
    assert "reused from an earlier run" in github.issue_comments[(OWNER, REPO, 2)][-1]["body"]


def test_a_failing_setup_fails_the_run_with_its_output_before_any_model_is_paid(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
) -> None:
    github.files[(OWNER, REPO, CONFIG, None)] = "setup: \"echo 'no such package: grteeing' >&2; exit 3\"\n"

    deliver("issue_comment", ask(git, "/nofx add greet()"))
    work()

    [run] = runs_in(store)
    assert run.status == RunStatus.failed
    steps = {s.name: s for s in queries.steps_of(store, run.id)}
    assert steps["setup"].status == StepStatus.failed
    assert "failed with exit code 3" in (steps["setup"].error or "")
    assert "no such package: grteeing" in (steps["setup"].error or "")
    assert steps["generate"].status == StepStatus.skipped
    assert llm.requests == []
    assert "no such package: grteeing" in github.issue_comments[(OWNER, REPO, 1)][-1]["body"]
