"""`WEBHOOK_PROXY_URL`: a laptop without a public address reads GitHub's deliveries from a smee.io-style channel.

The channel is a server-sent-events stream. Each `message` event's data is one delivery as JSON: the request's
headers as keys (lowercase), the parsed JSON payload under `body` and the query under `query`; `ready` and `ping`
events carry nothing. Like smee-client, the relay posts each delivery to our own `POST /webhooks` with the
original headers and the payload serialised the way the channel's JavaScript does (`JSON.stringify`), so the
intake checks the `X-Hub-Signature-256` as for any delivery: a forged event on a public channel is refused.
The channel does not keep the raw bytes, so a payload whose re-serialisation differs from GitHub's (unusual
escapes) fails the signature check and is logged, never accepted unsigned.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import httpx

log = logging.getLogger(__name__)
RECONNECT_BACKOFF_S = (1, 2, 5, 10, 30)
# Request headers that describe the hop to the channel, not the delivery; httpx sets its own.
_HOP_HEADERS = frozenset(
    {"host", "content-length", "connection", "transfer-encoding", "accept-encoding", "keep-alive", "te", "upgrade"}
)
_NOT_HEADERS = frozenset({"body", "query", "timestamp"})


@dataclass(frozen=True)
class ServerSentEvent:
    """One event of a text/event-stream: its type (`message` when the stream names none), data and id."""

    event: str
    data: str
    id: str | None = None


def parse_events(lines: Iterable[str]) -> Iterator[ServerSentEvent]:
    """The events of a text/event-stream, line by line (the WHATWG rules: `:` comments, multi-line data)."""
    event, last_id = "", None
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield ServerSentEvent(event or "message", "\n".join(data), last_id)
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            event = value
        elif field == "data":
            data.append(value)
        elif field == "id" and "\0" not in value:
            last_id = value


def to_delivery(data: str) -> tuple[dict[str, str], bytes]:
    """A channel message as the headers and body of the POST GitHub made. Raises ValueError if it is not one."""
    message = json.loads(data)
    if not isinstance(message, dict) or "body" not in message:
        raise ValueError("the channel message has no body")
    headers = {
        key: value
        for key, value in message.items()
        if isinstance(value, str) and key.lower() not in _HOP_HEADERS | _NOT_HEADERS
    }
    body = json.dumps(message["body"], separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    headers["content-type"] = "application/json"
    return headers, body


class ChannelRelay:
    """Reads the channel and posts each delivery to `target`; reconnects with backoff until `stop` is set."""

    def __init__(self, source: str, target: str, *, timeout_s: float = 30.0) -> None:
        self.source, self.target = source, target
        self.stop = threading.Event()
        self.forwarded = 0
        self._timeout = httpx.Timeout(timeout_s, read=None)  # a quiet channel is not an error

    def run(self) -> None:
        failures = 0
        with httpx.Client(timeout=self._timeout) as client:
            while not self.stop.is_set():
                try:
                    self._listen(client)
                    failures = 0
                except (httpx.HTTPError, OSError) as exc:
                    log.warning("webhook proxy channel unavailable: %s", type(exc).__name__)
                    failures += 1
                delay = RECONNECT_BACKOFF_S[min(failures, len(RECONNECT_BACKOFF_S) - 1)]
                self.stop.wait(delay)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="webhook-proxy", daemon=True)
        thread.start()
        return thread

    def _listen(self, client: httpx.Client) -> None:
        headers = {"accept": "text/event-stream", "cache-control": "no-cache"}
        with client.stream("GET", self.source, headers=headers) as response:
            response.raise_for_status()
            log.info("webhook proxy connected")
            for event in parse_events(response.iter_lines()):
                if self.stop.is_set():
                    return
                if event.event == "message":
                    self._forward(client, event.data)

    def _forward(self, client: httpx.Client, data: str) -> None:
        try:
            headers, body = to_delivery(data)
        except ValueError as exc:
            log.warning("webhook proxy skipped a message that is not a delivery: %s", exc)
            return
        for attempt in range(3):  # the web server may still be starting
            try:
                answer = client.post(self.target, content=body, headers=headers)
                break
            except httpx.TransportError:
                if attempt == 2:
                    raise
                self.stop.wait(1.0)
        self.forwarded += 1
        log.info(
            "webhook proxy relayed %s %s: %s",
            headers.get("x-github-event", "?"),
            headers.get("x-github-delivery", "?"),
            answer.status_code,
        )


def relay_target(host: str, port: int) -> str:
    """Our own intake, where `serve` listens (loopback when it listens on every interface)."""
    try:
        if ipaddress.ip_address(host).is_unspecified:
            host = "127.0.0.1"
    except ValueError:  # a host name: serve resolves it the same way
        pass
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}/webhooks"
