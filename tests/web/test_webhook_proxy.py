"""WEBHOOK_PROXY_URL: `nofx serve` reads a smee.io-style SSE channel and feeds each delivery to its own intake."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from bot.web.webhook_proxy import ServerSentEvent, parse_events, relay_target, to_delivery
from tests.cli.test_serve import _free_port, _wait_for, _wait_ready
from tests.support.payloads import load_payload, webhook_headers

SECRET = "proxy-test-secret"
CHANNEL = "/c6cnRNjYW9wqx1Y3"


class ChannelServer:
    """A local server speaking smee.io's protocol: `GET /<channel>` is an event stream that says `ready`, then
    sends each delivery as a `message` whose data is the headers (lowercase), `body` (parsed) and `query`."""

    def __init__(self) -> None:
        self.outbox: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.connections = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{CHANNEL}"

    def send(self, event: str, body: bytes, headers: dict[str, str]) -> None:
        message: dict[str, Any] = {k.lower(): v for k, v in headers.items()}
        message |= {"host": "smee.io", "content-length": str(len(body)), "timestamp": 1764600000000}
        self.outbox.put({**message, "body": json.loads(body), "query": {}})

    def drop_connection(self) -> None:
        self.outbox.put(None)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        channel = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != CHANNEL:
                    self.send_error(404)
                    return
                channel.connections += 1
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                self._write("ready", {})
                sent = 0
                while True:
                    try:
                        message = channel.outbox.get(timeout=0.5)
                    except queue.Empty:
                        self._write("ping", {})
                        continue
                    if message is None:
                        return
                    sent += 1
                    self.wfile.write(f"id: {sent}\ndata: {json.dumps(message)}\n\n".encode())
                    self.wfile.flush()

            def _write(self, event: str, data: dict[str, Any]) -> None:
                self.wfile.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())
                self.wfile.flush()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


def test_the_event_stream_is_read_as_browsers_read_it() -> None:
    lines = [": hello", "event: ready", "data: {}", "", "id: 7", 'data: {"a":', "data: 1}", "", "data: x", ""]
    assert list(parse_events(lines)) == [
        ServerSentEvent("ready", "{}"),
        ServerSentEvent("message", '{"a":\n1}', "7"),
        ServerSentEvent("message", "x", "7"),
    ]


def test_a_message_becomes_the_original_request_without_the_channels_hop_headers() -> None:
    body = {"action": "created", "comment": {"body": "/nofx café"}}
    data = {
        "x-github-event": "issue_comment",
        "x-hub-signature-256": "sha256=ab",
        "host": "smee.io",
        "content-length": "999",
        "timestamp": 1,
        "query": {},
        "body": body,
    }
    headers, raw = to_delivery(json.dumps(data))
    assert headers == {
        "x-github-event": "issue_comment",
        "x-hub-signature-256": "sha256=ab",
        "content-type": "application/json",
    }
    assert raw == json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    with pytest.raises(ValueError):
        to_delivery("{}")


def test_relay_target_is_loopback_when_serving_every_interface() -> None:
    assert relay_target("::", 3000) == "http://127.0.0.1:3000/webhooks"
    assert relay_target("::1", 8) == "http://[::1]:8/webhooks"


@pytest.fixture
def channel() -> Iterator[ChannelServer]:
    server = ChannelServer()
    yield server
    server.drop_connection()
    server.close()


@pytest.fixture
def served(channel: ChannelServer) -> Iterator[Path]:
    workdir = Path(tempfile.mkdtemp(prefix="nofx-proxy-"))
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_URL", "DATABASE_URL", "GITHUB_", "NOFX_"))}
    env.update({"GITHUB_WEBHOOK_SECRET": SECRET, "PORT": str(port), "WEBHOOK_PROXY_URL": channel.url})
    log = (workdir / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "serve", "--workers", "0"], cwd=workdir, env=env, stdout=log, stderr=log
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, proc, workdir / "serve.log")
        yield workdir
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _deliveries(workdir: Path) -> list[tuple[str, str]]:
    try:
        with sqlite3.connect(workdir / ".nofx" / "nofx.db") as conn:
            return conn.execute("SELECT id, event FROM delivery ORDER BY id").fetchall()
    except sqlite3.OperationalError:
        return []


def test_serve_relays_signed_deliveries_from_the_channel_and_refuses_forged_ones(
    channel: ChannelServer, served: Path
) -> None:
    workdir = served
    payload = load_payload("issue_comment.created", comment__body="/nofx add a café")
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    channel.send("issue_comment", body, webhook_headers("issue_comment", body, SECRET, delivery_id="relayed-1"))
    forged = webhook_headers("issue_comment", body, "not-the-secret", delivery_id="forged-1")
    channel.send("issue_comment", body, forged)
    channel.send("ping", b"{}", webhook_headers("ping", b"{}", SECRET, delivery_id="relayed-2"))
    assert _wait_for(lambda: len(_deliveries(workdir)) == 2), _deliveries(workdir)
    assert _deliveries(workdir) == [("relayed-1", "issue_comment"), ("relayed-2", "ping")]

    channel.drop_connection()  # the channel goes away; serve reconnects and keeps relaying
    body = json.dumps(load_payload("installation.created"), separators=(",", ":")).encode()
    channel.send("installation", body, webhook_headers("installation", body, SECRET, delivery_id="relayed-3"))
    assert _wait_for(lambda: len(_deliveries(workdir)) == 3), _deliveries(workdir)
    assert channel.connections >= 2
