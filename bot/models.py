"""Database tables: the source of truth for deliveries, installations, runs, steps and their events."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import orjson
from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    Integer,
    LargeBinary,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.types import UserDefinedType
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    """Timezone-aware now, so SQLite and PostgreSQL rows compare the same way."""
    return datetime.now(UTC)


def new_id() -> str:
    """A row id: 32 hex characters, safe in file names, refs and markers."""
    return uuid.uuid4().hex


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite drops the zone; this puts it back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


def json_text(value: Any) -> str:
    """JSON columns' text (the engines' serialiser, and `PayloadText`'s): orjson writes it several times faster
    than json."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


class _UntypedText(UserDefinedType[str]):
    """A TEXT column whose values are sent without a type: SQLAlchemy casts every string it binds on PostgreSQL to
    VARCHAR, which an older database's `json` payload column refuses; an untyped one PostgreSQL takes as either."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "TEXT"


class PayloadText(TypeDecorator[dict[str, Any]]):
    """A webhook payload kept as the JSON text GitHub sent, in a plain text column.

    PostgreSQL's `json` type parses every value to validate it: 35-45 µs of the server's CPU per 14 KB delivery at
    intake (a third of its work there), for text the intake has already checked is a JSON object. A database an
    older nofx created keeps its `json` column, since changing its type rewrites the whole table (`nofx doctor` tells
    the operator, `bot.store.PAYLOAD_TO_TEXT`): psycopg hands that column back parsed, so a value that is not text is
    already the payload.
    """

    impl = _UntypedText
    cache_ok = True

    def process_bind_param(self, value: dict[str, Any] | None, dialect: Dialect) -> str | None:
        return None if value is None else json_text(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> dict[str, Any] | None:
        if isinstance(value, str):
            # json, not orjson: the text is what GitHub sent, and orjson reads an integer past 64 bits as a float
            # and refuses a number past a double's range, both of which the intake accepts as JSON.
            loaded: dict[str, Any] = json.loads(value)
            return loaded
        return value  # type: ignore[no-any-return]


def _timestamp(**kwargs: Any) -> Any:
    return Field(default_factory=utcnow, sa_type=UTCDateTime, **kwargs)


def _optional_timestamp() -> Any:
    return Field(default=None, sa_type=UTCDateTime)


class DeliveryStatus(str, Enum):
    """Where a webhook delivery is on its way from intake to the event router."""

    received = "received"
    queued = "queued"
    processing = "processing"
    done = "done"
    failed = "failed"
    ignored = "ignored"


def _status_check(column: str, enum: type[Enum], name: str) -> CheckConstraint:
    """A database constraint mirrors the enum, so no writer can store a status the code does not know."""
    values = ",".join(f"'{member.value}'" for member in enum)
    return CheckConstraint(f"{column} IN ({values})", name=name)


class Delivery(SQLModel, table=True):
    """One webhook delivery exactly as GitHub sent it, recorded before anything acts on it."""

    __table_args__ = (_status_check("status", DeliveryStatus, "delivery_status_valid"),)

    id: str = Field(primary_key=True, max_length=100)
    # Only what a query looks a delivery up by is indexed (id, status, received_at): every index is one more
    # b-tree written per delivery at intake (event and installation_id were 10% of PostgreSQL's CPU there).
    event: str = Field(max_length=100)
    action: str | None = Field(default=None, max_length=100)
    installation_id: int | None = Field(default=None, sa_type=BigInteger)
    repository: str | None = Field(default=None, max_length=300)
    payload: dict[str, Any] = Field(sa_column=Column(PayloadText, nullable=False))
    status: DeliveryStatus = Field(default=DeliveryStatus.received, max_length=20, index=True)
    reason: str | None = Field(default=None, sa_column=Column(Text))
    attempts: int = 0
    received_at: datetime = _timestamp(index=True)
    updated_at: datetime = _timestamp()


class Installation(SQLModel, table=True):
    """A GitHub App installation, kept current from `installation` events."""

    id: int = Field(primary_key=True, sa_type=BigInteger)
    account_login: str = Field(max_length=100)
    account_id: int | None = Field(default=None, sa_type=BigInteger)
    account_type: str | None = Field(default=None, max_length=20)
    repository_selection: str | None = Field(default=None, max_length=20)
    suspended: bool = False
    removed: bool = False
    updated_at: datetime = _timestamp()


class Repository(SQLModel, table=True):
    """A repository an installation has granted nofx, from `installation[_repositories]` events."""

    id: int = Field(primary_key=True, sa_type=BigInteger)
    installation_id: int = Field(foreign_key="installation.id", index=True, sa_type=BigInteger)
    full_name: str = Field(max_length=300, index=True)
    private: bool = False
    removed: bool = False
    updated_at: datetime = _timestamp()


class AppIdentity(SQLModel, table=True):
    """Who the App is on GitHub (from `GET /app`), so nofx can recognise its own comments."""

    id: int = Field(primary_key=True, sa_type=BigInteger)
    slug: str = Field(max_length=100)
    name: str = Field(max_length=200)
    html_url: str | None = Field(default=None, max_length=500)
    bot_user_id: int | None = Field(default=None, sa_type=BigInteger)  # the `<slug>[bot]` account that commits
    updated_at: datetime = _timestamp()


class RunStatus(str, Enum):
    """A run's place in DESIGN.md's machine; `bot.runs` is the only writer."""

    queued = "queued"
    running = "running"
    waiting = "waiting"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


class StepStatus(str, Enum):
    """A step's place in DESIGN.md's machine; `bot.runs` is the only writer."""

    pending = "pending"
    queued = "queued"
    running = "running"
    waiting = "waiting"
    succeeded = "succeeded"
    failed = "failed"
    skipped = "skipped"
    cancelled = "cancelled"


class Run(SQLModel, table=True):
    """One request carried out on one issue or pull request thread."""

    __table_args__ = (_status_check("status", RunStatus, "run_status_valid"),)

    id: str = Field(primary_key=True, max_length=32)
    installation_id: int = Field(index=True, sa_type=BigInteger)
    repository: str = Field(max_length=300, index=True)
    repository_id: int | None = Field(default=None, sa_type=BigInteger)  # GitHub's id: names can be reused
    thread_number: int = Field(index=True)
    thread_kind: str = Field(max_length=20)  # issue | pull_request
    request: str = Field(sa_column=Column(Text, nullable=False))
    requester: str = Field(max_length=100)
    requester_id: int | None = Field(default=None, sa_type=BigInteger)
    trigger: str = Field(max_length=30)  # comment | issue_body | label | review_comment | api
    trigger_comment_id: int | None = Field(default=None, sa_type=BigInteger)
    trigger_comment_kind: str | None = Field(default=None, max_length=30)
    delivery_id: str | None = Field(default=None, max_length=100)
    clone_url: str | None = Field(default=None, max_length=500)
    thread_url: str | None = Field(default=None, max_length=500)
    default_branch: str | None = Field(default=None, max_length=255)
    head_sha: str | None = Field(default=None, max_length=64)
    branch: str | None = Field(default=None, max_length=255)  # nofx/<issue>-<slug>, or the PR's branch on a follow-up
    follows_run_id: str | None = Field(default=None, max_length=32)  # the run whose pull request this one continues
    plan: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    config: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    status: RunStatus = Field(default=RunStatus.queued, max_length=20, index=True)
    behind_run_id: str | None = Field(default=None, max_length=32)
    status_comment_id: int | None = Field(default=None, sa_type=BigInteger)
    check_run_id: int | None = Field(default=None, sa_type=BigInteger)
    error: str | None = Field(default=None, sa_column=Column(Text))
    cost_usd: float = 0.0
    created_at: datetime = _timestamp(index=True)
    started_at: datetime | None = _optional_timestamp()
    finished_at: datetime | None = _optional_timestamp()
    updated_at: datetime = _timestamp()


class Step(SQLModel, table=True):
    """One tool invocation of a run's plan; its idempotency key is `run_id:name:sha256(inputs)[:12]`."""

    __table_args__ = (
        _status_check("status", StepStatus, "step_status_valid"),
        UniqueConstraint("run_id", "name", name="step_name_unique_in_run"),
    )

    id: str = Field(primary_key=True, max_length=32)
    run_id: str = Field(foreign_key="run.id", index=True, max_length=32)
    position: int
    name: str = Field(max_length=100)
    tool: str = Field(max_length=50)
    inputs: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    depends_on: list[str] = Field(sa_column=Column(JSON, nullable=False))
    policy: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    timeout_s: int = 600
    retries: int = 0
    idempotency_key: str = Field(max_length=200, unique=True)
    status: StepStatus = Field(default=StepStatus.pending, max_length=20, index=True)
    attempts: int = 0
    job_id: str | None = Field(default=None, max_length=100)
    heartbeat_at: datetime | None = _optional_timestamp()
    output: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    error: str | None = Field(default=None, sa_column=Column(Text))
    decided_by: str | None = Field(default=None, max_length=100)
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    started_at: datetime | None = _optional_timestamp()
    finished_at: datetime | None = _optional_timestamp()


class RunEvent(SQLModel, table=True):
    """The audit trail: one row per transition, in a global order the SSE stream resumes from."""

    # SQLite only autoincrements an INTEGER primary key; PostgreSQL gets a BIGINT identity.
    id: int | None = Field(default=None, primary_key=True, sa_type=BigInteger().with_variant(Integer, "sqlite"))
    run_id: str = Field(foreign_key="run.id", index=True, max_length=32)
    step_id: str | None = Field(default=None, max_length=32)
    type: str = Field(max_length=50, index=True)
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = _timestamp()


class Artifact(SQLModel, table=True):
    """A file a step produced (generated edits, gate output), with the digest it is verified against on read."""

    __table_args__ = (UniqueConstraint("step_id", "name", name="artifact_name_unique_in_step"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=BigInteger().with_variant(Integer, "sqlite"))
    run_id: str = Field(foreign_key="run.id", index=True, max_length=32)
    step_id: str = Field(foreign_key="step.id", max_length=32)
    name: str = Field(max_length=200)
    sha256: str = Field(max_length=64)
    size: int
    created_at: datetime = _timestamp()


class ReviewStatus(str, Enum):
    """Where a review pass is; a newer pass on the same pull request cancels an older one."""

    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"
    cancelled = "cancelled"


class ReviewKind(str, Enum):
    """`full` reads the whole pull request; `incremental` only what changed since the last reviewed head."""

    full = "full"
    incremental = "incremental"


class FindingStatus(str, Enum):
    """A finding stays open until a later pass that reviewed its file no longer reports it."""

    open = "open"
    resolved = "resolved"


class ReviewPass(SQLModel, table=True):
    """One LLM review of one head of a pull request; the RQ job `run_review(id)` rebuilds everything from it."""

    __table_args__ = (_status_check("status", ReviewStatus, "review_pass_status_valid"),)

    id: str = Field(primary_key=True, max_length=32)
    installation_id: int = Field(index=True, sa_type=BigInteger)
    repository: str = Field(max_length=300, index=True)
    repository_id: int | None = Field(default=None, sa_type=BigInteger)
    pull_number: int = Field(index=True)
    base_sha: str = Field(max_length=64)
    head_sha: str = Field(max_length=64)
    previous_head_sha: str | None = Field(default=None, max_length=64)  # the last reviewed head, for incremental
    kind: ReviewKind = Field(default=ReviewKind.full, max_length=20)
    status: ReviewStatus = Field(default=ReviewStatus.queued, max_length=20, index=True)
    trigger: str = Field(max_length=30)  # opened | reopened | ready_for_review | synchronize | comment | label | ...
    requested_by: str | None = Field(default=None, max_length=100)
    author: str | None = Field(default=None, max_length=100)  # the pull request's author
    fork: bool = False
    restarts: int = 0  # times the pass was queued again after its worker died mid-pass
    config: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    check_run_id: int | None = Field(default=None, sa_type=BigInteger)
    review_id: int | None = Field(default=None, sa_type=BigInteger)
    files_reviewed: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    files_skipped: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    findings_count: int = 0
    llm_calls: int = 0
    cost_usd: float = 0.0
    error: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = _timestamp(index=True)
    started_at: datetime | None = _optional_timestamp()
    finished_at: datetime | None = _optional_timestamp()
    updated_at: datetime = _timestamp()


class ReviewFinding(SQLModel, table=True):
    """A finding posted on a pull request, kept by fingerprint so later passes neither repeat nor forget it."""

    __table_args__ = (
        _status_check("status", FindingStatus, "review_finding_status_valid"),
        UniqueConstraint("repository", "pull_number", "fingerprint", name="review_finding_unique_in_pull"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigInteger().with_variant(Integer, "sqlite"))
    repository: str = Field(max_length=300, index=True)
    pull_number: int = Field(index=True)
    fingerprint: str = Field(max_length=64)
    path: str = Field(max_length=1000)
    line: int
    end_line: int | None = None
    side: str = Field(default="RIGHT", max_length=5)  # LEFT: `line` is in the old file (a removed line)
    severity: str = Field(max_length=20)
    title: str = Field(max_length=500)
    body: str = Field(default="", sa_column=Column(Text, nullable=False))
    status: FindingStatus = Field(default=FindingStatus.open, max_length=20, index=True)
    comment_id: int | None = Field(default=None, sa_type=BigInteger)  # the review comment, when placed on a line
    pass_id: str = Field(max_length=32)  # the pass that last reported (or resolved) it
    first_seen_sha: str = Field(max_length=64)
    last_seen_sha: str = Field(max_length=64)
    created_at: datetime = _timestamp()
    updated_at: datetime = _timestamp()


class Blob(SQLModel, table=True):
    """Bytes in the shared database (artifacts, checkpoint bundles), so any worker reads what another wrote."""

    key: str = Field(primary_key=True, max_length=500)
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    size: int
    updated_at: datetime = _timestamp()


class RunWorkspace(SQLModel, table=True):
    """Where a run's worktree started, so a worker without it rebuilds it from the same commit."""

    run_id: str = Field(primary_key=True, foreign_key="run.id", max_length=32)
    base_sha: str = Field(max_length=64)
    start_sha: str = Field(max_length=64)
    created_at: datetime = _timestamp()


class Checkpoint(SQLModel, table=True):
    """The worktree's full state after a step that changed it: a commit on `refs/nofx/runs/<run>/<n>` in the mirror."""

    __table_args__ = (UniqueConstraint("run_id", "n", name="checkpoint_n_unique_in_run"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=BigInteger().with_variant(Integer, "sqlite"))
    run_id: str = Field(foreign_key="run.id", index=True, max_length=32)
    n: int  # 1, 2, … in the order the steps finished
    step_id: str = Field(foreign_key="step.id", max_length=32)
    step_name: str = Field(max_length=100)
    tool: str = Field(max_length=50)
    outcome: str = Field(max_length=20)  # succeeded | waiting | failed: how the step ended
    ref: str = Field(max_length=255)
    commit_sha: str = Field(max_length=64)
    tree_sha: str = Field(max_length=64)
    parent_sha: str = Field(max_length=64)  # the previous checkpoint, or where the run's worktree started
    artifacts: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))  # name → sha256
    # The worktree's HEAD and branch (None: detached) then: what `git_pr` and `git_ops` committed, for a rebuild.
    head_sha: str | None = Field(default=None, max_length=64)
    head_branch: str | None = Field(default=None, max_length=255)
    created_at: datetime = _timestamp()


class RunStart(SQLModel, table=True):
    """Where a run resumed from a checkpoint starts its worktree (kept apart so `Run` stays as it is)."""

    run_id: str = Field(primary_key=True, foreign_key="run.id", max_length=32)
    checkpoint_sha: str = Field(max_length=64)
    source_run_id: str = Field(max_length=32, index=True)
    source_n: int
    files: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))  # written before it
    by: str = Field(max_length=100)
    created_at: datetime = _timestamp()


class ThreadMemory(SQLModel, table=True):
    """One remembered entry of an issue or PR conversation, Fernet-encrypted at rest, gone after its TTL."""

    id: str = Field(primary_key=True, max_length=32)
    thread: str = Field(max_length=320, index=True)  # `owner/repo#12`, lower case
    repository_id: int | None = Field(default=None, sa_type=BigInteger)  # whose thread: a reused name is another
    kind: str = Field(max_length=30)  # request | plan | outcome | review_feedback | note
    ciphertext: str = Field(sa_column=Column(Text, nullable=False))
    redacted: bool = False
    created_at: datetime = _timestamp(index=True)
    expires_at: datetime = Field(sa_type=UTCDateTime, index=True)
