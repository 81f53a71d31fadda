"""What sandboxed code can reach: the layout comes from nofx's records, never from the worktree's own `.git`."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bot.workspace import isolation as layouts
from bot.workspace.egress import EgressPolicy
from bot.workspace.sandbox import GitLayout, Sandbox, WorkspaceTampered, run_command
from bot.workspace.worktrees import Worktree

NO_BWRAP = "bwrap is not installed or cannot create namespaces here (isolation.probe() says why)"


@pytest.fixture(params=["none", "bwrap"])
def isolation(request: pytest.FixtureRequest) -> str:
    if request.param == "bwrap" and not layouts.probe().ok:
        pytest.skip(NO_BWRAP)
    return str(request.param)


@pytest.fixture
def bwrap() -> None:
    if not layouts.probe().ok:
        pytest.skip(NO_BWRAP)


@dataclass
class Checkouts:
    """A bare mirror with three linked worktrees, as nofx lays them out (one inside the mirror, for good measure)."""

    mirror: Path
    mine: Path
    theirs: Path
    inner: Path

    @property
    def layout(self) -> GitLayout:
        return GitLayout(git_dir=self.mirror / "worktrees" / self.mine.name, common_dir=self.mirror)


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def checkouts(tmp_path: Path) -> Checkouts:
    seed, mirror = tmp_path / "seed", tmp_path / "mirror.git"
    made = Checkouts(mirror, tmp_path / "run-mine", tmp_path / "run-theirs", mirror / "checkouts" / "run-inner")
    seed.mkdir()
    _git("init", "-q", "-b", "main", cwd=seed)
    (seed / "a.txt").write_text("a\n")
    _git("add", "a.txt", cwd=seed)
    _git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "a", cwd=seed)
    _git("clone", "-q", "--bare", str(seed), str(mirror), cwd=tmp_path)
    for branch, path in (("mine", made.mine), ("theirs", made.theirs), ("inner", made.inner)):
        _git("worktree", "add", "-q", "-b", branch, str(path), cwd=mirror)
        (path / "draft.txt").write_text(f"{branch}'s work\n")
    (made.mine / "a.txt").write_text("changed\n")
    (tmp_path / "nofx.db").write_text("the database\n")
    return made


async def test_git_works_in_a_linked_worktree_without_showing_the_others(bwrap: None, checkouts: Checkouts) -> None:
    result = await run_command(
        f"git status --porcelain; cat {checkouts.theirs}/draft.txt {checkouts.inner}/draft.txt 2>/dev/null "
        f"|| echo others-hidden; ls {checkouts.mirror}/worktrees",
        cwd=checkouts.mine,
        git=checkouts.layout,
        timeout_s=10,
    )

    assert result.output.splitlines() == [" M a.txt", "?? draft.txt", "others-hidden", "run-mine"], result.output


def test_the_layout_never_depends_on_the_worktrees_dot_git(checkouts: Checkouts) -> None:
    """Finding 1 at its root: the same recorded layout gives the same mounts, whatever `.git` says."""
    before = layouts.bwrap_args(checkouts.mine, git=checkouts.layout)
    (checkouts.mine / ".git").write_text("gitdir: /\n")

    assert layouts.bwrap_args(checkouts.mine, git=checkouts.layout) == before
    assert "/" not in [before[i + 1] for i, arg in enumerate(before) if arg in ("--ro-bind", "--bind")]


async def test_a_planted_dot_git_gives_no_view_of_the_host_and_stops_the_run(
    isolation: str, checkouts: Checkouts
) -> None:
    """A gate writes `gitdir: /`; nofx refuses at once, and the next command is refused before it starts."""
    database = checkouts.mirror.parent / "nofx.db"
    with pytest.raises(WorkspaceTampered, match="refuses to run anything more"):
        await run_command(
            "echo 'gitdir: /' > .git", cwd=checkouts.mine, git=checkouts.layout, timeout_s=10, isolation=isolation
        )

    with pytest.raises(WorkspaceTampered, match=r"`\.git` was changed or replaced"):
        await run_command(
            f"cat {database} > stolen.txt", cwd=checkouts.mine, git=checkouts.layout, timeout_s=10, isolation=isolation
        )
    assert not (checkouts.mine / "stolen.txt").exists()


async def test_a_replaced_dot_git_directory_stops_the_run(isolation: str, checkouts: Checkouts) -> None:
    command = "rm .git && mkdir .git && printf '[core]\\n\\tfsmonitor = touch /tmp/pwned\\n' > .git/config"

    with pytest.raises(WorkspaceTampered):
        await run_command(command, cwd=checkouts.mine, git=checkouts.layout, timeout_s=10, isolation=isolation)


async def test_git_config_written_by_the_command_stops_the_run(checkouts: Checkouts) -> None:
    """Without isolation the mirror is writable; a planted filter or fsmonitor would run inside nofx's own git."""
    command = f"git config --file {checkouts.mirror}/config core.fsmonitor 'touch /tmp/pwned'"

    with pytest.raises(WorkspaceTampered, match=r"core\.fsmonitor"):
        await run_command(command, cwd=checkouts.mine, git=checkouts.layout, timeout_s=10, isolation="none")


async def test_the_mirror_and_git_dir_are_read_only_inside(bwrap: None, checkouts: Checkouts) -> None:
    command = (
        f"git config --file {checkouts.mirror}/config core.fsmonitor x 2>/dev/null || echo mirror-read-only; "
        f"touch {checkouts.layout.git_dir}/HEAD 2>/dev/null || echo gitdir-read-only; ls {checkouts.mirror.parent}"
    )

    result = await run_command(command, cwd=checkouts.mine, git=checkouts.layout, timeout_s=10)

    lines = result.output.splitlines()
    assert lines[:2] == ["mirror-read-only", "gitdir-read-only"], result.output
    assert "nofx.db" not in lines and "run-theirs" not in lines and "seed" not in lines


async def test_no_other_process_is_visible(bwrap: None, tmp_path: Path) -> None:
    command = "for p in /proc/[0-9]*; do cat $p/cmdline | tr '\\0' ' '; echo; done"

    result = await run_command(command, cwd=tmp_path, timeout_s=10)

    programs = {line.split()[0] for line in result.output.splitlines() if line.strip()}
    assert programs <= {layouts.probe().bwrap, "/bin/sh", "cat", "tr"}, result.output  # bwrap is the namespace's init


@pytest.fixture
def listener() -> Iterator[int]:
    server = socket.create_server(("127.0.0.1", 0))
    try:
        yield server.getsockname()[1]
    finally:
        server.close()


async def test_network_only_when_asked_for(bwrap: None, tmp_path: Path, listener: int) -> None:
    """Gates get no network; setup (network=True) reaches out only through its egress proxy, unless the operator's
    NOFX_SETUP_EGRESS=host shares the host's network (`none`: as a gate)."""
    command = f"python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {listener}), 2)' && echo connected"

    offline = await run_command(command, cwd=tmp_path, timeout_s=10)
    proxied = await run_command(command, cwd=tmp_path, timeout_s=10, network=True)
    cut_off = await run_command(command, cwd=tmp_path, timeout_s=10, network=True, egress=EgressPolicy("none"))
    shared = await run_command(command, cwd=tmp_path, timeout_s=10, network=True, egress=EgressPolicy("host"))

    for result in (offline, proxied, cut_off):
        assert not result.ok and "connected" not in result.output and "Connection refused" in result.output
    assert shared.ok and shared.output == "connected\n"


async def test_tool_directories_are_visible_read_only(bwrap: None, tmp_path: Path) -> None:
    tools, work = tmp_path / "toolchain" / "bin", tmp_path / "work"
    tools.mkdir(parents=True)
    work.mkdir()
    (tools / "greet").write_text("#!/bin/sh\necho hello from the toolchain\n")
    (tools / "greet").chmod(0o755)

    result = await run_command(
        f"{tools}/greet; touch {tools}/x 2>/dev/null || echo tools-read-only; ls {tmp_path}",
        cwd=work,
        timeout_s=10,
        readonly=[tools, tmp_path / "missing"],
    )

    assert result.output.splitlines() == ["hello from the toolchain", "tools-read-only", "toolchain", "work"]


async def test_nofx_own_paths_stay_hidden_even_under_a_bound_directory(bwrap: None, tmp_path: Path) -> None:
    """A data dir or `.env` under a directory the sandbox shows (think /opt/nofx) is masked; the worktree is not."""
    install = tmp_path / "opt-nofx"
    data, worktree = install / "data", install / "data" / "worktrees" / "run1"
    worktree.mkdir(parents=True)
    (install / ".env").write_text("GITHUB_WEBHOOK_SECRET=whsec\n")
    (data / "nofx.db").write_text("the database\n")
    (worktree / "mine.txt").write_text("the run's own file\n")

    result = await run_command(
        f"grep -s SECRET {install}/.env || echo env-hidden; ls {data}; cat mine.txt",
        cwd=worktree,
        timeout_s=10,
        readonly=[install],
        hidden=[data, install / ".env"],
    )

    assert result.output.splitlines() == ["env-hidden", "worktrees", "the run's own file"], result.output


async def test_the_setup_dir_is_mounted_at_one_fixed_path_writable_for_setup_only(
    bwrap: None, checkouts: Checkouts, tmp_path: Path
) -> None:
    """What the setup step uses: a cache dir nofx chose, seen at the same path on every worker, variables nofx sets;
    the worktree's paths come back relative. The gates see the directory read-only."""
    cache = tmp_path / "setup-cache"
    cache.mkdir()
    worktree = Worktree(
        path=checkouts.mine,
        branch="mine",
        base_ref="main",
        base_sha="0" * 40,
        mirror=checkouts.mirror,
        run_id="run-mine",
        clone_url="http://git.example/o/r.git",
        git_dir=checkouts.layout.git_dir,
    )

    sandbox = Sandbox()
    env = {"NOFX_SETUP_DIR": str(sandbox.setup_path(cache))}
    touch = 'touch "$NOFX_SETUP_DIR/installed" && echo "$PWD/a.txt $NOFX_SETUP_DIR"'

    result = await sandbox.run(touch, worktree, timeout_s=10, setup=cache, setup_writable=True, env=env)
    gate = await sandbox.run(touch, worktree, timeout_s=10, setup=cache, env=env)

    assert result.ok and result.output == "a.txt /nofx/setup\n", result.output
    assert (cache / "installed").exists()
    assert not gate.ok and "Read-only file system" in gate.output
