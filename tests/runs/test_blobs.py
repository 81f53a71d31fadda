"""Artifacts in the shared blob store: the database, and an S3 bucket on moto's real local S3 HTTP server."""

from __future__ import annotations

import pytest

from bot.blobs import Blobs, S3Blobs
from bot.runs.artifacts import ArtifactError, Artifacts
from bot.store import Store
from tests.support.runs_api import make_run, step_id


def test_blobs_round_trip_replace_and_delete(blobs: Blobs) -> None:
    assert blobs.get("runs/r/steps/s/out.log") is None
    blobs.put("runs/r/steps/s/out.log", b"\x00first")
    blobs.put("runs/r/steps/s/out.log", b"second")

    assert blobs.get("runs/r/steps/s/out.log") == b"second"
    blobs.put("runs/r/steps/t/out.log", b"third")
    blobs.put("runs/r2/steps/s/out.log", b"other run")
    assert sorted((key, size) for key, size, _ in blobs.list("runs/r/")) == [
        ("runs/r/steps/s/out.log", 6),
        ("runs/r/steps/t/out.log", 5),
    ]
    blobs.delete("runs/r/steps/s/out.log")
    assert blobs.get("runs/r/steps/s/out.log") is None
    assert [key for key, _, _ in blobs.list("runs/r/steps/s")] == []


def test_an_artifact_written_by_one_worker_is_read_and_verified_by_another(blobs: Blobs, any_store: Store) -> None:
    run_id = make_run(any_store)
    check = step_id(any_store, run_id, "check")
    writer, reader = Artifacts(blobs, any_store), Artifacts(blobs, any_store)  # nothing shared but the stores

    writer.put(run_id, check, "output.log", b"3 passed\n")
    assert reader.read(run_id, check, "output.log") == b"3 passed\n"

    blobs.put(reader.key(run_id, check, "output.log"), b"3 passed\nrm -rf /\n")
    with pytest.raises(ArtifactError, match="does not match its recorded sha256"):
        reader.read(run_id, check, "output.log")


def test_an_s3_url_names_bucket_and_prefix() -> None:
    store = S3Blobs("s3://bucket/some/prefix", client=object())
    assert (store.bucket, store._key("runs/x")) == ("bucket", "some/prefix/runs/x")
    with pytest.raises(ValueError, match="s3://bucket/prefix"):
        S3Blobs("https://bucket.example/prefix", client=object())
