"""The intake's table of handled events is exactly what the event routers register."""

from __future__ import annotations

from bot import handled_events
from bot.events.router import router
from bot.models import Delivery
from tests.support.payloads import load_payload


def test_the_table_equals_the_routers_registrations() -> None:
    # gidgethub merges the feature routers into the composed one: event -> payload key -> value -> callbacks.
    assert not router._shallow_routes, "a router registered an event for every action"
    registered: dict[str, set[str]] = {}
    for event, by_key in router._deep_routes.items():
        assert set(by_key) == {"action"}, f"{event} is routed on something other than its action"
        registered[event] = set(by_key["action"])
    assert registered == {event: set(actions) for event, actions in handled_events.HANDLED.items()}


def test_unhandled_events_and_payloads_without_an_installation_need_no_worker() -> None:
    ping = Delivery(id="1", event="ping", payload=load_payload("ping"))
    deleted = Delivery(id="2", event="issue_comment", action="deleted", installation_id=1, payload={})
    orphan = Delivery(id="3", event="issue_comment", action="created", installation_id=None, payload={})
    comment = Delivery(id="4", event="issue_comment", action="created", installation_id=1, payload={})
    installed = Delivery(id="5", event="installation", action="created", installation_id=None, payload={})

    assert handled_events.ignore_reason(ping) == "nofx does not handle ping"
    assert handled_events.ignore_reason(deleted) == "nofx does not handle issue_comment.deleted"
    assert handled_events.ignore_reason(orphan) == "no installation in the payload"
    assert handled_events.ignore_reason(comment) is None
    assert handled_events.ignore_reason(installed) is None
