"""Fixtures of the runs tests: the shared blob store, in the database and in an S3 bucket."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import boto3
import pytest
from moto.server import ThreadedMotoServer

from bot.blobs import Blobs, DatabaseBlobs, S3Blobs
from bot.store import Store


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
