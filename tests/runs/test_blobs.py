"""Artifacts in the shared blob store: the database, and an S3 bucket on moto's real local S3 HTTP server."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import boto3
import pytest
from moto.server import ThreadedMotoServer

from bot.blobs import Blobs, DatabaseBlobs, S3Blobs
from bot.runs.artifacts import ArtifactError, Artifacts
from bot.store import Store
from tests.support.runs_api import make_run, step_id


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 (HTTP, SigV4-signed requests from boto3, like any S3-compatible service)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(params=["database", "s3"])
def blobs(request: pytest.FixtureRequest, any_store: Store) -> Blobs:
    if request.param == "database":
        return DatabaseBlobs(any_store)
    endpoint = request.getfixturevalue("s3_endpoint")
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",  # moto accepts any; real credentials come from AWS_* variables
    )
    bucket = f"nofx-{request.node.name.lower().replace('[', '-').replace(']', '')}"[:63]
    client.create_bucket(Bucket=bucket)
    return S3Blobs(f"s3://{bucket}/artifacts", client=client)


def test_blobs_round_trip_replace_and_delete(blobs: Blobs) -> None:
    assert blobs.get("runs/r/steps/s/out.log") is None
    blobs.put("runs/r/steps/s/out.log", b"\x00first")
    blobs.put("runs/r/steps/s/out.log", b"second")

    assert blobs.get("runs/r/steps/s/out.log") == b"second"
    blobs.delete("runs/r/steps/s/out.log")
    assert blobs.get("runs/r/steps/s/out.log") is None


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
