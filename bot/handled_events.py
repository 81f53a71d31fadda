"""Which webhook events and actions nofx acts on, known without the event routers.

The web process decides at intake whether a delivery needs a worker, and must not import the routers
(they bring the model SDKs and the GitHub client: seconds of start-up and most of the web's memory).
`tests/events/test_handled_events.py` proves this table equals what the routers register.
"""

from __future__ import annotations

from typing import Protocol

INSTALLATION_EVENTS = frozenset({"installation", "installation_repositories"})

HANDLED: dict[str, frozenset[str]] = {
    "check_run": frozenset({"completed", "requested_action", "rerequested"}),
    "check_suite": frozenset({"completed"}),
    "installation": frozenset({"created", "deleted", "new_permissions_accepted", "suspend", "unsuspend"}),
    "installation_repositories": frozenset({"added", "removed"}),
    "issue_comment": frozenset({"created"}),
    "issues": frozenset({"labeled", "opened"}),
    "pull_request": frozenset({"labeled", "opened", "ready_for_review", "reopened", "synchronize"}),
    "pull_request_review_comment": frozenset({"created"}),
    "workflow_run": frozenset({"completed"}),
}


class Described(Protocol):
    """What deciding needs of a delivery: a recorded `Delivery`, or the intake's `Incoming` before the write."""

    @property
    def event(self) -> str: ...

    @property
    def action(self) -> str | None: ...

    @property
    def installation_id(self) -> int | None: ...


def ignore_reason(delivery: Described) -> str | None:
    """Why a delivery needs no worker, or None to route it. Pure: no database, no GitHub.

    Whether its installation exists or is suspended is the worker's question (it may have to ask GitHub).
    """
    if delivery.action not in HANDLED.get(delivery.event, frozenset()):
        action = f".{delivery.action}" if delivery.action else ""
        return f"nofx does not handle {delivery.event}{action}"
    if delivery.installation_id is None and delivery.event not in INSTALLATION_EVENTS:
        return "no installation in the payload"
    return None
