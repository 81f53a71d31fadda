"""Each resource limit stops real code in the real sandbox; the limits are tiny so the machine never notices."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.workspace import isolation as layouts
from bot.workspace import limits as limits_module
from bot.workspace import sandbox
from bot.workspace.sandbox import Limits, run_command

NO_BWRAP = "bwrap is not installed or cannot create namespaces here (isolation.probe() says why)"


@pytest.fixture(params=["none", "bwrap"])
def isolation(request: pytest.FixtureRequest) -> str:
    if request.param == "bwrap" and not layouts.probe().ok:
        pytest.skip(NO_BWRAP)
    return str(request.param)


@pytest.fixture
def worktree(tmp_path: Path) -> Path:
    path = tmp_path / "worktree"
    path.mkdir()
    return path


async def test_file_size_limit_stops_a_big_write(isolation: str, worktree: Path) -> None:
    result = await run_command(
        "head -c 2097152 /dev/zero > big.bin",
        cwd=worktree,
        timeout_s=10,
        isolation=isolation,
        limits=Limits(file_bytes=2**20),
    )

    assert not result.ok
    assert (worktree / "big.bin").stat().st_size <= 2**20


async def test_cpu_limit_stops_a_busy_loop(isolation: str, worktree: Path) -> None:
    result = await run_command(
        "while :; do :; done", cwd=worktree, timeout_s=60, limits=Limits(cpu_s=1), isolation=isolation
    )

    # Not the wall-clock limit (60 s, far more than a loaded machine needs for 1 CPU-second): the kernel's signal
    # at the CPU limit, SIGXCPU or SIGKILL at the hard limit (bwrap reports 128 + the signal).
    assert not result.ok and not result.timed_out
    assert result.exit_code in (-9, -24, 128 + 9, 128 + 24), result.exit_code


async def test_memory_limit_stops_a_big_allocation(isolation: str, worktree: Path) -> None:
    command = "python3 -c 'b = bytearray(512 * 2**20); print(\"allocated\")' || echo refused"

    result = await run_command(
        command, cwd=worktree, timeout_s=20, limits=Limits(memory_bytes=256 * 2**20), isolation=isolation
    )

    assert "MemoryError" in result.output and result.output.endswith("refused\n"), result.output
    assert "allocated" not in result.output


async def test_a_fork_bomb_hits_the_process_limit(isolation: str, worktree: Path) -> None:
    """Forty sleepers asked for, at most sixteen processes allowed: the shell is told no, the machine is not hurt."""
    if "not enforced" in limits_module.process_limit():
        pytest.skip(limits_module.process_limit())
    command = (
        "python3 -c 'import subprocess\n"
        "started = 0\n"
        "for _ in range(40):\n"
        "    try:\n"
        '        subprocess.Popen(["sleep", "5"])\n'
        "        started += 1\n"
        "    except OSError as exc:\n"
        "        refused = exc\n"
        "print(started, refused)'"
    )

    result = await run_command(command, cwd=worktree, timeout_s=20, limits=Limits(processes=16), isolation=isolation)

    started, refusal = result.output.split(" ", 1)
    assert int(started) < 16, result.output
    assert "Resource temporarily unavailable" in refusal


async def test_disk_limit_stops_a_worktree_that_keeps_growing(
    isolation: str, worktree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandbox, "DISK_POLL_S", 0.1)
    command = "for i in $(seq 64); do head -c 262144 /dev/zero > f$i.bin; sleep 0.05; done; echo finished"

    result = await run_command(
        command, cwd=worktree, timeout_s=20, limits=Limits(disk_bytes=2**20), isolation=isolation
    )

    assert result.over_disk and not result.ok and result.exit_code is None
    assert "finished" not in result.output
    assert limits_module.disk_usage(worktree) < 8 * 2**20


async def test_disk_limit_counts_what_setup_writes_into_its_directory(
    isolation: str, worktree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Setup's directory stays on the worker's disk after the command: filling it must not fill the host's."""
    monkeypatch.setattr(sandbox, "DISK_POLL_S", 0.1)
    setup = tmp_path / "setup"
    setup.mkdir()
    target = sandbox.Sandbox(isolation=isolation).setup_path(setup)
    command = f"for i in $(seq 64); do head -c 262144 /dev/zero > {target}/f$i.bin; sleep 0.05; done; echo finished"

    result = await run_command(
        command,
        cwd=worktree,
        timeout_s=20,
        limits=Limits(disk_bytes=2**20),
        isolation=isolation,
        setup=setup,
        setup_writable=True,
    )

    assert result.over_disk and not result.ok and result.exit_code is None
    assert "finished" not in result.output
    assert limits_module.disk_usage(setup) < 8 * 2**20


async def test_disk_limit_counts_files_that_use_no_blocks(isolation: str, worktree: Path) -> None:
    """Empty files cost the disk no bytes, yet enough of them exhaust its inodes."""
    result = await run_command(
        "seq 3000 | xargs touch && echo finished",
        cwd=worktree,
        timeout_s=20,
        limits=Limits(files=1000),
        isolation=isolation,
    )

    assert result.over_disk and not result.ok and result.exit_code is None
    assert "bytes or files" in result.describe_failure("seq 3000 | xargs touch", 20)


async def test_disk_growth_found_after_a_quick_command_also_fails_it(isolation: str, worktree: Path) -> None:
    result = await run_command(
        "head -c 2097152 /dev/zero > big.bin",
        cwd=worktree,
        timeout_s=10,
        limits=Limits(disk_bytes=2**20),
        isolation=isolation,
    )

    assert result.exit_code is None and result.over_disk and not result.ok


async def test_wall_time_limit_ends_a_command_that_waits_forever(isolation: str, worktree: Path) -> None:
    result = await run_command("sleep 60", cwd=worktree, timeout_s=0.5, isolation=isolation)

    assert result.timed_out and not result.ok and result.duration_s < 5


async def test_the_sandbox_tmp_is_bounded(worktree: Path) -> None:
    if not layouts.probe().ok:
        pytest.skip(NO_BWRAP)
    command = "head -c 4194304 /dev/zero > /tmp/fill || echo tmp-full"

    result = await run_command(command, cwd=worktree, timeout_s=10, limits=Limits(tmp_bytes=2**20))

    assert result.output.splitlines()[-1] == "tmp-full", result.output
