"""POST /webhooks through the real ASGI app, a real queue server and a real database."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from bot import deliveries
from bot.logs import JsonFormatter, Redactor
from bot.models import DeliveryStatus
from bot.queue import WorkQueue
from bot.settings import Settings
from bot.store import Store
from bot.web.intake import MAX_BODY_BYTES
from tests.conftest import Deliverer
from tests.support.payloads import load_payload, sign, webhook_headers


def test_signed_delivery_is_recorded_and_enqueued(
    deliver: Deliverer, store: Store, queue: WorkQueue, installed: Callable[[dict[str, Any]], None]
) -> None:
    payload = load_payload("issue_comment.created")
    installed(payload)

    response = deliver("issue_comment", payload, delivery_id="d-1")

    assert response.status_code == 202
    assert response.json() == {"delivery": "d-1", "status": "queued"}
    row = deliveries.get(store, "d-1")
    assert row is not None
    assert (row.event, row.action, row.installation_id, row.repository) == (
        "issue_comment",
        "created",
        payload["installation"]["id"],
        "Codertocat/Hello-World",
    )
    assert row.payload == payload
    assert row.status == DeliveryStatus.queued
    assert row.received_at is not None
    assert queue.intake_waiting() == ["d-1"]  # the worker that takes the intake job enqueues dispatch-d-1


def test_same_delivery_twice_is_recorded_once_and_enqueued_once(
    deliver: Deliverer, queue: WorkQueue, installed: Callable[[dict[str, Any]], None], store: Store
) -> None:
    payload = load_payload("issue_comment.created")
    installed(payload)

    first = deliver("issue_comment", payload, delivery_id="same")
    second = deliver("issue_comment", payload, delivery_id="same")

    assert first.json()["status"] == "queued"
    assert second.status_code == 202
    assert second.json()["status"] == "duplicate"
    assert queue.intake_waiting() == ["same"]
    with store.session() as session:
        assert session.exec(_count_deliveries()).one() == 1


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, "missing X-Hub-Signature-256"),
        ("sha256=" + "0" * 64, "does not match"),
        ("sha1=abc", "missing X-Hub-Signature-256"),
        ("sha256=short", "does not match"),
    ],
)
def test_bad_or_missing_signature_is_refused_and_nothing_recorded(
    client: TestClient, settings: Settings, store: Store, queue: WorkQueue, header: str | None, expected: str
) -> None:
    body = json.dumps(load_payload("issue_comment.created")).encode()
    headers = webhook_headers("issue_comment", body, settings.webhook_secret or "")
    headers.pop("X-Hub-Signature-256")
    if header is not None:
        headers["X-Hub-Signature-256"] = header

    response = client.post("/webhooks", content=body, headers=headers)

    assert response.status_code == 401
    assert expected in response.json()["error"]
    with store.session() as session:
        assert session.exec(_count_deliveries()).one() == 0
    assert queue.intake_waiting() == []


def test_signature_over_other_bytes_is_refused(deliver: Deliverer, client: TestClient) -> None:
    body = json.dumps(load_payload("ping")).encode()
    headers = webhook_headers("ping", body, deliver.secret)
    # Same JSON, different bytes: the HMAC is over the raw body, never the parsed payload.
    response = client.post("/webhooks", content=body + b" ", headers=headers)
    assert response.status_code == 401


def test_delivery_signed_with_another_secret_is_refused(deliver: Deliverer) -> None:
    response = deliver("ping", load_payload("ping"), secret="not-the-secret")
    assert response.status_code == 401


def test_without_a_configured_secret_every_delivery_is_refused(
    settings: Settings, store: Store, queue: WorkQueue, tmp_path: Any
) -> None:
    from dataclasses import replace

    from bot.web.app import create_app

    app = create_app(
        replace(settings, webhook_secret=None),
        store=store,
        queue=queue,
        env_file=tmp_path / ".env",
    )
    body = b"{}"
    headers = webhook_headers("ping", body, "anything")
    with TestClient(app, base_url="http://nofx.test") as http:
        response = http.post("/webhooks", content=body, headers=headers)
    assert response.status_code == 401
    assert "GITHUB_WEBHOOK_SECRET" in response.json()["error"]


def test_body_over_25_mb_is_413(client: TestClient, settings: Settings, store: Store) -> None:
    body = b'{"a": "' + b"x" * MAX_BODY_BYTES + b'"}'
    headers = webhook_headers("ping", body, settings.webhook_secret or "")
    response = client.post("/webhooks", content=body, headers=headers)
    assert response.status_code == 413
    with store.session() as session:
        assert session.exec(_count_deliveries()).one() == 0


def test_streamed_body_over_the_cap_without_length_is_413(client: TestClient, settings: Settings) -> None:
    chunk = b"x" * (1024 * 1024)

    def stream() -> Iterator[bytes]:
        for _ in range(26):
            yield chunk

    headers = {"X-GitHub-Event": "ping", "X-GitHub-Delivery": "big", "X-Hub-Signature-256": "sha256=00"}
    response = client.post("/webhooks", content=stream(), headers=headers)
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b"\xff\xfe", "not valid JSON"),
        (b'{"action": "created", "comment": {"body": "\xff"}}', "not UTF-8"),
    ],
)
def test_malformed_json_is_400(client: TestClient, settings: Settings, store: Store, body: bytes, message: str) -> None:
    headers = webhook_headers("issue_comment", body, settings.webhook_secret or "")
    response = client.post("/webhooks", content=body, headers=headers)
    assert response.status_code == 400
    assert message in response.json()["error"]
    with store.session() as session:
        assert session.exec(_count_deliveries()).one() == 0


@pytest.mark.parametrize("missing", ["X-GitHub-Event", "X-GitHub-Delivery"])
def test_missing_github_headers_are_400(client: TestClient, settings: Settings, missing: str) -> None:
    body = json.dumps(load_payload("ping")).encode()
    headers = webhook_headers("ping", body, settings.webhook_secret or "")
    headers.pop(missing)
    response = client.post("/webhooks", content=body, headers=headers)
    assert response.status_code == 400
    assert missing in response.json()["error"]


def test_ping_is_recorded_as_ignored_and_not_enqueued(deliver: Deliverer, store: Store, queue: WorkQueue) -> None:
    response = deliver("ping", load_payload("ping"), delivery_id="ping-1")
    assert response.status_code == 202
    assert response.json()["status"] == "ignored"
    row = deliveries.get(store, "ping-1")
    assert row is not None and row.status == DeliveryStatus.ignored
    assert row.reason == "nofx does not handle ping"
    assert queue.intake_waiting() == []


def test_unknown_event_is_recorded_as_ignored(deliver: Deliverer, store: Store, queue: WorkQueue) -> None:
    response = deliver("star", {"action": "created", "installation": {"id": 1}}, delivery_id="star-1")
    assert response.status_code == 202
    row = deliveries.get(store, "star-1")
    assert row is not None and row.status == DeliveryStatus.ignored
    assert row.reason == "nofx does not handle star.created"
    assert queue.intake_waiting() == []


def test_an_event_name_with_digits_is_accepted(deliver: Deliverer, store: Store) -> None:
    response = deliver("projects_v2_item", load_payload("projects_v2_item.edited"), delivery_id="p2-1")

    assert response.status_code == 202
    row = deliveries.get(store, "p2-1")
    assert row is not None and row.reason == "nofx does not handle projects_v2_item.edited"


def test_installation_events_are_enqueued_for_any_installation(deliver: Deliverer, queue: WorkQueue) -> None:
    response = deliver("installation", load_payload("installation.created"))
    assert response.json()["status"] == "queued"
    assert len(queue.intake_waiting()) == 1


def test_form_encoded_delivery_is_accepted(client: TestClient, settings: Settings, store: Store) -> None:
    from urllib.parse import urlencode

    body = urlencode({"payload": json.dumps(load_payload("installation.created"))}).encode()
    headers = webhook_headers("installation", body, settings.webhook_secret or "", delivery_id="form-1")
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    response = client.post("/webhooks", content=body, headers=headers)
    assert response.status_code == 202
    row = deliveries.get(store, "form-1")
    assert row is not None and row.installation_id == load_payload("installation.created")["installation"]["id"]


def test_a_delivery_the_queue_refuses_is_answered_202_and_left_for_the_sweeper(
    settings: Settings, store: Store, tmp_path: Any, installed: Callable[[dict[str, Any]], None]
) -> None:
    from bot.web.app import create_app

    down = WorkQueue.from_url("redis://127.0.0.1:1/0")  # nothing listens on port 1
    app: Starlette = create_app(settings, store=store, queue=down, env_file=tmp_path / ".env")
    payload = load_payload("issue_comment.created")
    installed(payload)
    body = json.dumps(payload).encode()
    headers = webhook_headers("issue_comment", body, settings.webhook_secret or "", delivery_id="lost-1")
    with TestClient(app, base_url="http://nofx.test") as http:  # its shutdown waits for the push after the answer
        response = http.post("/webhooks", content=body, headers=headers)

    assert response.status_code == 202 and response.json()["status"] == "queued"  # recorded: the sweeper enqueues it
    row = deliveries.get(store, "lost-1")
    assert row is not None and row.status == DeliveryStatus.received


def test_a_payload_is_read_back_exactly_as_github_sent_it(client: TestClient, settings: Settings, store: Store) -> None:
    """The payload is stored as the text received; numbers JSON allows past 64 bits or a double's range come back
    as Python's json reads them, not rounded or refused."""
    body = b'{"zen": "Approachable is better than simple.", "hook_id": 1180591620717411303424, "scale": 1e400}'
    headers = webhook_headers("ping", body, settings.webhook_secret or "", delivery_id="numbers-1")

    response = client.post("/webhooks", content=body, headers=headers)

    assert response.status_code == 202
    row = deliveries.get(store, "numbers-1")
    assert row is not None and row.payload == json.loads(body)
    assert row.payload["hook_id"] == 2**70 and row.payload["scale"] == float("inf")


def test_redelivery_of_a_never_enqueued_delivery_enqueues_it(
    deliver: Deliverer, store: Store, queue: WorkQueue, installed: Callable[[dict[str, Any]], None]
) -> None:
    payload = load_payload("issue_comment.created")
    installed(payload)
    deliveries.record(store, deliveries.describe("again-1", "issue_comment", payload))  # recorded, queue was down

    response = deliver("issue_comment", payload, delivery_id="again-1")

    assert response.json()["status"] == "queued"
    assert queue.intake_waiting() == ["again-1"]


def test_logs_are_json_with_the_delivery_bound_and_no_secret(
    deliver: Deliverer, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    from bot import logs

    logs.configure(logs.Redactor(settings.secrets), level=logging.INFO)
    deliver("ping", load_payload("ping"), delivery_id="log-1")
    deliver("ping", load_payload("ping"), secret="wrong")

    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    ignored = [line for line in lines if line["msg"].startswith("delivery ignored")]
    assert ignored and ignored[0]["delivery_id"] == "log-1" and ignored[0]["event"] == "ping"
    assert any(line["msg"].startswith("webhook refused") for line in lines)
    assert settings.webhook_secret not in json.dumps(lines)
    assert sign(b"", settings.webhook_secret or "") not in json.dumps(lines)


def _count_deliveries() -> Any:
    from sqlalchemy import func
    from sqlmodel import select

    from bot.models import Delivery

    return select(func.count()).select_from(Delivery)


def test_the_access_log_has_a_line_per_request_but_not_per_delivery(
    deliver: Deliverer, client: TestClient, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    from bot import logs

    logs.configure(logs.Redactor(settings.secrets), level=logging.INFO)
    client.get("/healthz?token=not-logged")
    deliver("ping", load_payload("ping"), delivery_id="quiet-1")

    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    access = [line["msg"] for line in lines if line.get("logger") == "nofx.access"]
    assert access == ["testclient GET /healthz 200"]


@pytest.mark.parametrize("delivery_id", ["a.b", "a:b", "x" * 101, "a b"])
def test_a_signed_delivery_whose_id_cannot_be_a_job_id_is_refused_before_it_is_stored(
    deliver: Deliverer, store: Store, queue: WorkQueue, delivery_id: str
) -> None:
    """RQ refuses such a job id: on the intake list it failed the batch a worker took with it, and the sweeper then
    met it again every round."""
    response = deliver("installation", load_payload("installation.created"), delivery_id=delivery_id)

    assert response.status_code == 400 and "X-GitHub-Delivery" in response.json()["error"]
    assert deliveries.get(store, delivery_id) is None
    assert queue.intake_waiting() == []


def test_an_unsigned_request_puts_none_of_its_headers_in_the_log(client: TestClient) -> None:
    """Refused before its signature is known: its delivery id and event name are anyone's text, not log fields."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter(Redactor()))
    logger = logging.getLogger("bot.web.intake")
    logger.addHandler(handler)
    forged = {"X-GitHub-Event": "forged-event " * 40, "X-GitHub-Delivery": "forged/id " * 40}
    try:
        response = client.post("/webhooks", content=b"{}", headers={**forged, "X-Hub-Signature-256": "sha256=00"})
    finally:
        logger.removeHandler(handler)

    assert response.status_code == 401
    assert "webhook refused" in buffer.getvalue() and "forged" not in buffer.getvalue()


def test_made_up_event_names_share_one_metric_label(client: TestClient, app: Starlette) -> None:
    """Anyone can send X-GitHub-Event, signed or not: names nofx does not act on must not grow the metric."""
    for n in range(3):
        headers = {"X-GitHub-Event": f"made_up_{n}", "X-GitHub-Delivery": f"m-{n}", "X-Hub-Signature-256": "sha256=00"}
        assert client.post("/webhooks", content=b"{}", headers=headers).status_code == 401

    samples = app.state.metrics.registry.get_sample_value
    assert samples("nofx_webhook_deliveries_total", {"event": "other", "outcome": "bad_signature"}) == 3
    assert samples("nofx_webhook_deliveries_total", {"event": "made_up_0", "outcome": "bad_signature"}) is None
