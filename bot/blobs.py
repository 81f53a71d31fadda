"""Bytes every worker can read, whatever machine wrote them: artifacts and checkpoint bundles.

The database by default (a `blob` table); an S3-compatible bucket when `NOFX_ARTIFACT_STORE` names one
(`s3://bucket/prefix`; the endpoint and credentials come from the usual `AWS_*` variables, which boto3 reads).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlparse

from sqlmodel import col, select

from bot.models import Blob, utcnow
from bot.store import Store, upsert

if TYPE_CHECKING:
    from bot.settings import Settings


class BlobError(Exception):
    """The shared storage refused or could not be reached; the message names the key, never a credential."""


class Blobs(Protocol):
    """Put, get and delete bytes by key; keys look like paths (`runs/<run>/steps/<step>/<name>`)."""

    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes | None: ...

    def delete(self, key: str) -> None: ...

    def list(self, prefix: str) -> list[tuple[str, int, float]]:
        """(key, size in bytes, when written as a POSIX timestamp) of every blob whose key starts with `prefix`."""
        ...


class DatabaseBlobs:
    """Blobs in the database all processes already share: nothing more to run or configure."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def put(self, key: str, data: bytes) -> None:
        with self.store.session() as session:
            upsert(session, Blob, {"key": key, "data": data, "size": len(data), "updated_at": utcnow()}, keys=["key"])

    def get(self, key: str) -> bytes | None:
        with self.store.session() as session:
            row = session.get(Blob, key)
            return bytes(row.data) if row is not None else None

    def delete(self, key: str) -> None:
        with self.store.session() as session:
            row = session.get(Blob, key)
            if row is not None:
                session.delete(row)

    def list(self, prefix: str) -> list[tuple[str, int, float]]:
        with self.store.session() as session:
            rows = session.exec(
                select(Blob.key, Blob.size, Blob.updated_at).where(col(Blob.key).startswith(prefix, autoescape=True))
            ).all()
        return [(key, size, updated.timestamp()) for key, size, updated in rows]


class S3Blobs:
    """Blobs in an S3-compatible bucket (AWS S3, MinIO, R2, Tigris, …) under a key prefix."""

    def __init__(self, url: str, client: Any | None = None) -> None:
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"NOFX_ARTIFACT_STORE must look like s3://bucket/prefix, got {url!r}")
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        if client is None:
            import boto3  # only deployments that name a bucket need it loaded

            client = boto3.client("s3")
        self.client = client

    def put(self, key: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        except Exception as exc:  # botocore raises many types; the caller acts on one
            raise BlobError(f"storing {key} in s3://{self.bucket} failed: {type(exc).__name__}") from exc

    def get(self, key: str) -> bytes | None:
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except self.client.exceptions.NoSuchKey:
            return None
        except Exception as exc:
            raise BlobError(f"reading {key} from s3://{self.bucket} failed: {type(exc).__name__}") from exc
        body: bytes = answer["Body"].read()
        return body

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            raise BlobError(f"deleting {key} from s3://{self.bucket} failed: {type(exc).__name__}") from exc

    def list(self, prefix: str) -> list[tuple[str, int, float]]:
        found: list[tuple[str, int, float]] = []
        strip = len(self._key(""))
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self._key(prefix)
            ):
                for item in page.get("Contents", []):
                    found.append((item["Key"][strip:], int(item["Size"]), item["LastModified"].timestamp()))
        except Exception as exc:
            raise BlobError(f"listing {prefix} in s3://{self.bucket} failed: {type(exc).__name__}") from exc
        return found

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key


def from_settings(settings: Settings, store: Store) -> Blobs:
    """The blob store the settings name: a bucket for `NOFX_ARTIFACT_STORE=s3://…`, else the database."""
    if settings.artifact_store:
        return S3Blobs(settings.artifact_store)
    return DatabaseBlobs(store)
