"""The embedded Valkey that `serve` starts: password-protected, private to nofx, out of every sandbox's reach."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, ResponseError
from redis.retry import Retry

from bot.queue import EmbeddedValkey, embedded_url, start_embedded_valkey
from bot.workspace import isolation as layouts
from bot.workspace.sandbox import run_command

NO_RETRY = Retry(NoBackoff(), retries=0)  # redis-py retries a refused AUTH for seconds; one refusal is the answer


@pytest.fixture
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("d")  # short: a unix socket path has 108 bytes at most


@pytest.fixture
def server(data_dir: Path) -> Iterator[EmbeddedValkey]:
    valkey = start_embedded_valkey(data_dir)
    yield valkey
    valkey.stop()


def test_the_queue_needs_the_password_kept_in_a_private_file(server: EmbeddedValkey, data_dir: Path) -> None:
    assert Redis.from_url(server.url).ping()
    with pytest.raises((AuthenticationError, ResponseError), match=r"(?i)auth"):
        Redis(unix_socket_path=str(server.socket), retry=NO_RETRY).ping()

    directory = server.socket.parent
    password = (directory / "password").read_text()
    assert len(password) >= 40 and password in server.url
    for path, mode in ((directory, 0o700), (directory / "password", 0o600), (directory / "valkey.conf", 0o600)):
        assert stat.S_IMODE(path.stat().st_mode) == mode, path
    assert server.process is not None
    assert password.encode() not in Path(f"/proc/{server.process.pid}/cmdline").read_bytes()
    assert embedded_url(data_dir) == server.url  # what `nofx replay` and the workers use


def test_the_password_survives_a_restart(data_dir: Path) -> None:
    first = start_embedded_valkey(data_dir)
    url = first.url
    first.stop()
    second = start_embedded_valkey(data_dir)
    try:
        assert second.url == url and Redis.from_url(url).ping()
    finally:
        second.stop()


async def test_sandboxed_code_cannot_see_the_queue_or_the_data_dir(server: EmbeddedValkey, data_dir: Path) -> None:
    if not layouts.probe().ok:
        pytest.skip(layouts.probe().reason)
    worktree = data_dir / "worktrees" / "run1"
    worktree.mkdir(parents=True)
    command = (
        f"ls {data_dir} 2>/dev/null || echo data-dir-hidden; "
        f"cat {server.socket.parent}/password 2>/dev/null || echo password-hidden; "
        f"python3 -c 'import socket; s = socket.socket(socket.AF_UNIX); s.connect(\"{server.socket}\")' "
        "2>/dev/null || echo queue-unreachable"
    )

    result = await run_command(command, cwd=worktree, timeout_s=10)

    assert result.output.splitlines() == ["worktrees", "password-hidden", "queue-unreachable"], result.output
