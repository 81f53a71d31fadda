"""A repository's `setup` is hostile code with network and a writable directory that nofx handles on the host
afterwards: nothing it leaves there may make nofx write, read or follow anything outside. Through the real path:
signed webhook, worker, bubblewrap sandbox."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sqlmodel import select

from bot.models import Run
from bot.runs import queries, setup_cache
from bot.settings import Settings
from bot.store import Store
from tests.conftest import OWNER, REPO, Deliverer, ask, with_model
from tests.support.git_server import GitServer
from tests.support.github_double import GitHubDouble
from tests.support.llm_double import AnthropicDouble

CONFIG = ".github/nofx.yml"


@pytest.fixture
def settings(settings: Settings, llm: AnthropicDouble) -> Settings:
    return with_model(settings, llm)


pytestmark = pytest.mark.usefixtures("example_installation")


def test_a_setup_that_leaves_its_marker_as_a_symlink_to_a_host_file_never_gets_it_written(
    deliver: Deliverer,
    work: Callable[..., None],
    github: GitHubDouble,
    git: GitServer,
    llm: AnthropicDouble,
    store: Store,
    settings: Settings,
    tmp_path: Path,
) -> None:
    victim = tmp_path / "victim.sh"  # say, the worker user's ~/.bashrc: the record holds the repository's commands
    victim.write_text("# the operator's\n")
    github.files[(OWNER, REPO, CONFIG, None)] = (
        f'setup:\n  - ln -s {victim} "$NOFX_SETUP_DIR/{setup_cache.DONE_MARKER}"\n  - echo "$(id)"\n'
        "gates:\n  test: python3 -c pass\n"
    )
    llm.tool_calls(
        [
            ("write_file", {"path": "greet.py", "content": "def greet():\n    pass\n"}),
            ("finish", {"summary": "Greets."}),
        ]
    )

    deliver("issue_comment", ask(git, "/nofx add greet()"))
    work()

    assert victim.read_text() == "# the operator's\n"
    run = only_run(store)
    setup = next(s for s in queries.steps_of(store, run.id) if s.name == "setup")
    key = str(setup.output["key"])
    directory = setup_cache.repository_dir(settings.data_dir / "setup", run) / key
    marker = directory / setup_cache.DONE_MARKER
    assert not marker.is_symlink() and setup_cache.done(directory) is not None


def only_run(store: Store) -> Run:
    with store.session() as session:
        [run] = session.exec(select(Run)).all()
        return run
