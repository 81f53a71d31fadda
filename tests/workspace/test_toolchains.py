"""Sandboxed commands find the operator's tools (nofx's PATH, NOFX_SANDBOX_PATHS), read-only; a missing one is named."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.settings import Settings
from bot.workspace import isolation as layouts
from bot.workspace import toolchains
from bot.workspace.sandbox import Sandbox
from bot.workspace.worktrees import Worktree

TOOL = '#!/bin/sh\necho "tool from $(dirname "$0")"\n'


def make_tool(prefix: Path) -> Path:
    """A toolchain prefix with `bin/greet-tool`, like ~/.pyenv/versions/3.11.7 or ~/.nvm/versions/node/v20."""
    (prefix / "bin").mkdir(parents=True)
    (prefix / "lib").mkdir()
    tool = prefix / "bin" / "greet-tool"
    tool.write_text(TOOL)
    tool.chmod(0o755)
    return tool


def test_path_dirs_bring_their_prefix_and_keep_their_place_and_extra_dirs_are_shown_whole(tmp_path: Path) -> None:
    make_tool(tmp_path / "versions" / "1.0")
    extra = tmp_path / "sdk"
    make_tool(extra)

    found = toolchains.find(f"{tmp_path / 'versions/1.0/bin'}:/usr/bin:relative/bin:{tmp_path / 'gone'}", [extra])

    assert found.binds == (tmp_path / "versions" / "1.0", extra)  # /usr/bin is visible already; gone is skipped
    assert found.search_path.split(":")[:3] == [str(tmp_path / "versions/1.0/bin"), "/usr/bin", str(extra / "bin")]
    assert found.search_path.endswith(":/sbin:/bin")


def test_a_bin_dir_right_under_a_home_directory_is_shown_alone() -> None:
    home_tools = Path.home() / ".cargo" / "bin"
    if not home_tools.is_dir():
        pytest.skip("no ~/.cargo/bin on this machine")

    assert toolchains.find(str(home_tools)).binds == (home_tools.resolve(),)  # not ~/.cargo with its credentials


def test_a_tool_outside_the_system_dirs_runs_in_the_sandbox_and_a_missing_one_is_named(
    tmp_path: Path, settings: Settings
) -> None:
    if not layouts.probe().ok:
        pytest.skip(layouts.probe().reason)
    make_tool(tmp_path / "toolchain")
    worktree_path = tmp_path / "worktree"
    worktree_path.mkdir()
    worktree = Worktree(
        path=worktree_path, branch="b", base_ref="main", base_sha="0" * 40, mirror=tmp_path / "mirror", run_id="1"
    )
    with_tools = Sandbox(toolchains=toolchains.find("", [tmp_path / "toolchain"]))

    found = asyncio.run(with_tools.run("greet-tool", worktree, timeout_s=10))
    missing = asyncio.run(Sandbox().run("greet-tool", worktree, timeout_s=10))

    assert found.ok and found.output.strip() == f"tool from {tmp_path / 'toolchain' / 'bin'}", found.output
    assert missing.exit_code == 127
    hint = missing.missing_program() or ""
    assert hint.startswith("`greet-tool` was not found in the sandbox") and "NOFX_SANDBOX_PATHS" in hint
