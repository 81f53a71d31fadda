"""The sandbox runs real commands: real processes, real signals, real bubblewrap when the host allows it."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bot.workspace import isolation as layouts
from bot.workspace import sandbox
from bot.workspace.sandbox import (
    CommandResult,
    SandboxUnavailable,
    run_command,
    scrubbed_env,
)

NO_BWRAP = "bwrap is not installed or cannot create namespaces here (isolation.probe() says why)"


@pytest.fixture(params=["none", "bwrap"])
def isolation(request: pytest.FixtureRequest) -> str:
    """Each behaviour that must hold in both modes runs in both; the bwrap half skips where bwrap cannot work."""
    if request.param == "bwrap" and not layouts.probe().ok:
        pytest.skip(NO_BWRAP)
    return request.param


@pytest.fixture
def bwrap() -> None:
    if not layouts.probe().ok:
        pytest.skip(NO_BWRAP)


@pytest.fixture
def worktree(tmp_path: Path) -> Path:
    """A worktree with a secret beside it, where a real data dir keeps other runs' worktrees."""
    (tmp_path / "secret.txt").write_text("the other run's code\n")
    path = tmp_path / "worktree"
    path.mkdir()
    return path


# --- environment -------------------------------------------------------------------------------------------------


def test_scrubbed_env_keeps_only_basics_and_allowed_names(tmp_path: Path) -> None:
    source = {
        "AWS_SECRET_ACCESS_KEY": "aws",
        "GITHUB_TOKEN": "ghs_token",
        "ANTHROPIC_API_KEY": "sk-ant",
        "NOFX_API_TOKEN": "nofx",
        "nofx_data_dir": "/data",
        "HOME": "/root",
        "PATH": "/opt/tools/bin",
        "MY_SETTING": "1",
    }
    allowed = ["GITHUB_TOKEN", "anthropic_api_key", "NOFX_API_TOKEN", "nofx_data_dir", "HOME", "PATH", "MY_SETTING"]

    env = scrubbed_env([*allowed, "NOT_SET"], source, home=tmp_path)

    assert env == {
        "PATH": "/opt/tools/bin",
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TERM": "dumb",
        "CI": "true",
        "PYTHONDONTWRITEBYTECODE": "1",
        "MY_SETTING": "1",
    }


def test_scrubbed_env_reads_the_process_environment_by_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GATE_FLAVOUR", "mint")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-live")

    env = scrubbed_env(["GATE_FLAVOUR", "OPENAI_API_KEY"], home=tmp_path)

    assert env["GATE_FLAVOUR"] == "mint"
    assert "OPENAI_API_KEY" not in env
    assert env["PATH"] == sandbox.SAFE_PATH


async def test_command_sees_only_the_scrubbed_environment(
    isolation: str, worktree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "ghs_must_not_leak")
    monkeypatch.setenv("SOME_SECRET_KEY", "also_must_not_leak")
    monkeypatch.setenv("NOFX_DATA_DIR", "/data")
    monkeypatch.setenv("GATE_FLAVOUR", "mint")
    for proxy in ("HTTPS_PROXY", "http_proxy", "ALL_PROXY"):  # a proxy URL can hold a password
        monkeypatch.setenv(proxy, "http://user:must_not_leak@proxy.example:3128")

    allowed = ["GITHUB_TOKEN", "GATE_FLAVOUR", "HTTPS_PROXY", "http_proxy", "ALL_PROXY"]
    result = await run_command("env", cwd=worktree, env_allowed=allowed, timeout_s=10, isolation=isolation)

    assert result.ok
    env = dict(line.split("=", 1) for line in result.output.splitlines())
    assert set(env) <= {
        "PATH",
        "HOME",
        "LANG",
        "LC_ALL",
        "TERM",
        "CI",
        "PYTHONDONTWRITEBYTECODE",
        "GATE_FLAVOUR",
        "PWD",
        "SHLVL",
        "_",
        "OLDPWD",
    }
    assert env["GATE_FLAVOUR"] == "mint"
    assert "must_not_leak" not in result.output
    assert env["HOME"] != str(Path.home())


# --- exit codes and output ---------------------------------------------------------------------------------------


async def test_exit_codes_and_isolation_are_reported(isolation: str, worktree: Path) -> None:
    passed = await run_command("true", cwd=worktree, timeout_s=10, isolation=isolation)
    failed = await run_command("echo broken >&2; exit 3", cwd=worktree, timeout_s=10, isolation=isolation)

    assert (passed.exit_code, passed.ok, passed.timed_out, passed.isolation) == (0, True, False, isolation)
    assert (failed.exit_code, failed.ok, failed.output) == (3, False, "broken\n")
    assert failed.isolation == isolation


async def test_output_is_utf8_with_replacement_for_bad_bytes(isolation: str, worktree: Path) -> None:
    command = r"printf 'héllo ✓ 日本\n'; printf 'bad \377 byte\n'"
    result = await run_command(command, cwd=worktree, timeout_s=10, isolation=isolation)

    assert result.output == "héllo ✓ 日本\nbad \ufffd byte\n"


async def test_a_flood_of_output_keeps_head_and_tail(isolation: str, worktree: Path) -> None:
    command = "echo FIRST-LINE; head -c 5000000 /dev/zero | tr '\\0' x; echo; echo LAST-LINE"

    result = await run_command(command, cwd=worktree, timeout_s=20, isolation=isolation, max_output_bytes=64 * 1024)

    assert result.ok and result.truncated
    assert result.output.startswith("FIRST-LINE\nxxx")
    assert result.output.endswith("xxx\nLAST-LINE\n")
    assert f"… {5000000 + 22 - 64 * 1024} bytes omitted …" in result.output
    assert len(result.output.encode()) < 64 * 1024 + 100
    assert result.tail(1) == "LAST-LINE"


def test_tail_gives_the_last_lines() -> None:
    result = CommandResult(0, "".join(f"line {n}\n" for n in range(1, 101)), False, 0.1, False, "none")

    assert result.tail(3) == "line 98\nline 99\nline 100"
    assert result.tail().splitlines()[0] == "line 71"
    assert CommandResult(0, "", False, 0.1, False, "none").tail() == ""


# --- time limit, cancellation, leftovers -------------------------------------------------------------------------


def _running(pid: int) -> bool:
    """Alive and not a zombie: a killed orphan may wait a while for a reaper that never comes in a container."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _with_marker(marker: str) -> list[int]:
    """Live `sleep <marker>` processes, seen from outside any PID namespace."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes() == b"sleep\0" + marker.encode() + b"\0" and _running(
                    int(entry.name)
                ):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


async def _eventually(predicate: Callable[[], bool], deadline_s: float = 3.0) -> bool:
    """Poll the predicate: a signal is delivered at once, but exiting (or exec'ing) takes a moment."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return predicate()


async def _gone(find: Callable[[], list[int]]) -> bool:
    return await _eventually(lambda: not find())


async def _lines(path: Path, count: int, deadline_s: float = 5.0) -> list[int]:
    assert await _eventually(lambda: len(_read_pids(path)) >= count, deadline_s), f"{path} never got {count} pids"
    return _read_pids(path)


def _read_pids(path: Path) -> list[int]:
    try:
        return [int(line) for line in path.read_text().split()]
    except FileNotFoundError:
        return []


@pytest.fixture
def marker() -> Iterator[str]:
    """A unique sleep duration, so the test can find its own sleepers; any survivor is killed afterwards."""
    value = f"1000.{secrets.randbelow(10**6):06d}"
    yield value
    for pid in _with_marker(value):
        os.kill(pid, signal.SIGKILL)


# A child, and a grandchild under a child shell; every pid lands in `pids` (in bwrap, namespace pids).
FAMILY = (
    "sleep {m} & echo $! > pids; sh -c 'sleep {m} & echo $! >> pids; wait' & echo $! >> pids; echo $$ >> pids; wait"
)


async def test_timeout_kills_the_whole_process_group(isolation: str, worktree: Path, marker: str) -> None:
    # The sleepers would run 1000 s: returning at all within the (liveness) bound means they were not awaited.
    running = run_command(FAMILY.format(m=marker), cwd=worktree, timeout_s=0.5, isolation=isolation)
    result = await asyncio.wait_for(running, 120)

    assert result.timed_out and result.exit_code is None and not result.ok
    assert await _gone(lambda: _with_marker(marker))


async def test_timeout_kills_children_and_grandchildren_by_pid(worktree: Path, marker: str) -> None:
    await run_command(FAMILY.format(m=marker), cwd=worktree, timeout_s=0.5, isolation="none")

    pids = await _lines(worktree / "pids", 4)
    assert await _gone(lambda: [pid for pid in pids if _running(pid)])


async def test_sigterm_is_followed_by_sigkill_after_the_grace(
    isolation: str, worktree: Path, marker: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandbox, "KILL_GRACE_S", 0.2)
    command = f"trap '' TERM; sleep {marker} & wait"  # deaf to SIGTERM: only the SIGKILL ends it before 1000 s

    result = await asyncio.wait_for(run_command(command, cwd=worktree, timeout_s=0.3, isolation=isolation), 120)

    assert result.timed_out
    assert await _gone(lambda: _with_marker(marker))


async def test_cancelling_the_await_kills_the_group(isolation: str, worktree: Path, marker: str) -> None:
    task = asyncio.create_task(run_command(FAMILY.format(m=marker), cwd=worktree, timeout_s=30, isolation=isolation))
    assert await _eventually(lambda: len(_with_marker(marker)) == 2)

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert await _gone(lambda: _with_marker(marker))


async def test_background_children_do_not_outlive_a_finished_command(
    isolation: str, worktree: Path, marker: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Were the pipe left to drain, this would wait an hour: the liveness bound below is far from any timing.
    monkeypatch.setattr(sandbox, "DRAIN_S", 3600.0)
    command = f"sleep {marker} & echo started"
    result = await asyncio.wait_for(run_command(command, cwd=worktree, timeout_s=10, isolation=isolation), 120)

    assert result.ok and result.output == "started\n"
    assert await _gone(lambda: _with_marker(marker))


async def test_an_escaped_process_holding_the_pipe_does_not_block(
    worktree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("setsid") is None:
        pytest.skip("setsid is not installed")
    monkeypatch.setattr(sandbox, "DRAIN_S", 0.3)
    command = "setsid sh -c 'echo $$ > escaped; exec sleep 1000' & sleep 0.2; echo done"
    try:  # waiting for the escapee would take 1000 s: the liveness bound is far from any timing
        result = await asyncio.wait_for(run_command(command, cwd=worktree, timeout_s=10, isolation="none"), 120)
        assert result.ok and result.output.endswith("done\n")
    finally:
        for pid in await _lines(worktree / "escaped", 1):
            os.kill(pid, signal.SIGKILL)


# --- bubblewrap isolation ----------------------------------------------------------------------------------------


async def test_bwrap_hides_everything_beside_the_worktree(bwrap: None, worktree: Path, tmp_path: Path) -> None:
    extra = tmp_path / "cache"
    extra.mkdir()
    command = (
        "cat ../secret.txt || echo secret-hidden; "
        f"ls {Path.home()} >/dev/null 2>&1 || echo home-hidden; "
        "echo written > result.txt && echo wrote-worktree; "
        f"echo cached > {extra}/c.txt && echo wrote-extra; "
        "touch /usr/nofx-probe 2>/dev/null || echo usr-read-only; "
        "cat /etc/shadow | wc -c; "
        "echo $HOME"
    )

    result = await run_command(command, cwd=worktree, timeout_s=10, isolation="bwrap", writable=[extra])

    assert result.isolation == "bwrap"
    lines = result.output.splitlines()
    for expected in ("secret-hidden", "home-hidden", "wrote-worktree", "wrote-extra", "usr-read-only", "0"):
        assert expected in lines, result.output
    assert "the other run's code" not in result.output
    assert lines[-1] == str(sandbox.BWRAP_HOME)
    assert (worktree / "result.txt").read_text() == "written\n"
    assert (extra / "c.txt").read_text() == "cached\n"


async def test_without_bwrap_the_command_sees_the_host(worktree: Path) -> None:
    result = await run_command("cat ../secret.txt", cwd=worktree, timeout_s=10, isolation="none")

    assert result.output == "the other run's code\n"
    assert result.isolation == "none"


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP server on the host's loopback that accepts whatever connects."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(5)
    try:
        yield server.getsockname()[1]
    finally:
        server.close()


async def test_network_is_unreachable_only_inside_bwrap(isolation: str, worktree: Path, listener: int) -> None:
    if shutil.which("bash") is None:
        pytest.skip("bash (for /dev/tcp) is not installed")
    command = f"bash -c 'exec 3<>/dev/tcp/127.0.0.1/{listener}' && echo connected || echo no-network"

    result = await run_command(command, cwd=worktree, timeout_s=10, isolation=isolation)

    assert result.output.splitlines()[-1] == ("no-network" if isolation == "bwrap" else "connected")


# --- choosing the isolation --------------------------------------------------------------------------------------


@pytest.fixture
def no_bwrap(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A host without bubblewrap: nothing on PATH."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))


async def test_without_bwrap_nothing_runs_and_the_message_names_cause_and_fix(no_bwrap: None, worktree: Path) -> None:
    with pytest.raises(SandboxUnavailable) as refused:
        await run_command("touch ran", cwd=worktree, timeout_s=10)

    assert not (worktree / "ran").exists()
    message = str(refused.value)
    assert "no repository code ran" in message and "not installed" in message
    assert "apt-get install bubblewrap" in message and "NOFX_SANDBOX=none" in message


async def test_where_namespaces_are_refused_nothing_runs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, worktree: Path
) -> None:
    """A host whose bwrap cannot create namespaces (Docker's default seccomp profile) says so, in bwrap's words."""
    tools = tmp_path / "tools"
    tools.mkdir()
    refusing = tools / "bwrap"
    refusing.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    refusing.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}:/usr/bin:/bin")

    with pytest.raises(SandboxUnavailable) as refused:
        await run_command("touch ran", cwd=worktree, timeout_s=10)

    assert not (worktree / "ran").exists()
    message = str(refused.value)
    assert "No permissions to create new namespace" in message
    assert "user namespaces" in message and "NOFX_SANDBOX=none" in message


async def test_unknown_isolation_and_missing_directory_are_refused(worktree: Path) -> None:
    with pytest.raises(ValueError, match="isolation must be one of"):
        await run_command("true", cwd=worktree, timeout_s=10, isolation="auto")
    with pytest.raises(FileNotFoundError):
        await run_command("true", cwd=worktree / "gone", timeout_s=10, isolation="none")
