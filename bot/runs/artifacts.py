"""Step artifacts in shared storage (`bot.blobs`: the database or a bucket) under `runs/<run>/steps/<step>/`,
digests in the database, verified on read: a step on any worker reads what a step on another wrote."""

from __future__ import annotations

import hashlib
import re

from sqlmodel import select

from bot.blobs import BlobError, Blobs
from bot.models import Artifact
from bot.store import Store

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


class ArtifactError(Exception):
    """An artifact is missing, misnamed, or its bytes no longer match the recorded digest."""


class Artifacts:
    """The artifacts of all runs; `for_step` gives a handler its own corner of them."""

    def __init__(self, blobs: Blobs, store: Store) -> None:
        self.blobs = blobs
        self.store = store

    def for_step(self, run_id: str, step_id: str) -> StepArtifacts:
        return StepArtifacts(self, run_id, step_id)

    def key(self, run_id: str, step_id: str, name: str) -> str:
        _check_name(name)
        return f"runs/{run_id}/steps/{step_id}/{name}"

    def put(self, run_id: str, step_id: str, name: str, data: bytes) -> Artifact:
        """Store the bytes, then record (or replace) the digest."""
        self.blobs.put(self.key(run_id, step_id, name), data)
        digest = hashlib.sha256(data).hexdigest()
        with self.store.session() as session:
            row = session.exec(
                select(Artifact).where(Artifact.step_id == step_id, Artifact.name == name)
            ).first() or Artifact(run_id=run_id, step_id=step_id, name=name, sha256="", size=0)
            row.sha256, row.size = digest, len(data)
            session.add(row)
            session.flush()
            session.refresh(row)
            return row

    def read(self, run_id: str, step_id: str, name: str) -> bytes:
        """The artifact's bytes, refused if they do not match the recorded sha256."""
        with self.store.session() as session:
            row = session.exec(
                select(Artifact).where(Artifact.run_id == run_id, Artifact.step_id == step_id, Artifact.name == name)
            ).first()
        if row is None:
            raise ArtifactError(f"no artifact {name!r} for step {step_id}")
        try:
            data = self.blobs.get(self.key(run_id, step_id, name))
        except BlobError as exc:
            raise ArtifactError(f"artifact {name!r} cannot be read: {exc}") from None
        if data is None:
            raise ArtifactError(f"artifact {name!r} is missing from the artifact store")
        if hashlib.sha256(data).hexdigest() != row.sha256:
            raise ArtifactError(f"artifact {name!r} does not match its recorded sha256; refusing to use it")
        return data


class StepArtifacts:
    """What a handler sees: put and read its own artifacts, and read an earlier step's."""

    def __init__(self, artifacts: Artifacts, run_id: str, step_id: str) -> None:
        self._artifacts = artifacts
        self.run_id = run_id
        self.step_id = step_id

    def put(self, name: str, data: bytes) -> Artifact:
        return self._artifacts.put(self.run_id, self.step_id, name, data)

    def read(self, name: str, *, step_id: str | None = None) -> bytes:
        return self._artifacts.read(self.run_id, step_id or self.step_id, name)


def _check_name(name: str) -> None:
    if not _NAME.match(name) or ".." in name:
        raise ArtifactError(f"invalid artifact name {name!r}")
