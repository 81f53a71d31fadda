"""Database tables: the source of truth for deliveries and the installations nofx serves."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import Enum
from typing import Any

from sqlalchemy import JSON, BigInteger, CheckConstraint, Column, DateTime, Text
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    """Timezone-aware now, so SQLite and PostgreSQL rows compare the same way."""
    return datetime.now(UTC)


def _timestamp(**kwargs: Any) -> Any:
    return Field(default_factory=utcnow, sa_type=DateTime(timezone=True), **kwargs)


class DeliveryStatus(str, Enum):
    """Where a webhook delivery is on its way from intake to the event router."""

    received = "received"
    queued = "queued"
    processing = "processing"
    done = "done"
    failed = "failed"
    ignored = "ignored"


class Delivery(SQLModel, table=True):
    """One webhook delivery exactly as GitHub sent it, recorded before anything acts on it."""

    __table_args__ = (
        CheckConstraint(
            "status IN ('received','queued','processing','done','failed','ignored')",
            name="delivery_status_valid",
        ),
    )

    id: str = Field(primary_key=True, max_length=100)
    event: str = Field(max_length=100, index=True)
    action: str | None = Field(default=None, max_length=100)
    installation_id: int | None = Field(default=None, index=True, sa_type=BigInteger)
    repository: str | None = Field(default=None, max_length=300)
    payload: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
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
    updated_at: datetime = _timestamp()
