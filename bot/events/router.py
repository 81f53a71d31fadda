"""The one event router: composes the small per-feature routers and decides what nofx acts on; and the 👀 pass
that acknowledges a command before its delivery is routed."""

from __future__ import annotations

from dataclasses import replace

from gidgethub import routing, sansio

from bot.events import ci, installations, pull_requests, triggers
from bot.events.context import EventContext
from bot.handled_events import INSTALLATION_EVENTS
from bot.models import Delivery

router = routing.Router(installations.router, triggers.router, pull_requests.router, ci.router)


async def dispatch(delivery: Delivery, ctx: EventContext) -> str | None:
    """Run every router function registered for this delivery's event and action.

    Returns why the delivery was ignored instead (its installation does not exist or is suspended), or None.
    """
    reason = await _installation_unusable(delivery, ctx)
    if reason is not None:
        return reason
    await router.dispatch(_event(delivery), ctx)
    return None


async def acknowledge(delivery: Delivery, ctx: EventContext) -> None:
    """👀 on the command a delivery carries, if its sender may give it, and nothing else: no reply, no refusal, no
    run (routing the delivery does those, and skips the reaction this made). A dispatch lane does this as it takes a
    delivery, so a burst is acknowledged before it is routed (`bot.worker.routing`)."""
    if await _installation_unusable(delivery, ctx) is None:
        await triggers.acknowledging.dispatch(_event(delivery), replace(ctx, acknowledging=True))


async def _installation_unusable(delivery: Delivery, ctx: EventContext) -> str | None:
    """Why the delivery's installation cannot be acted for (unknown to GitHub, suspended), learning it if new."""
    if delivery.installation_id is None or delivery.event in INSTALLATION_EVENTS:
        return None
    repository = delivery.payload.get("repository")
    return await installations.learn(
        ctx, delivery.installation_id, repository if isinstance(repository, dict) else None
    )


def _event(delivery: Delivery) -> sansio.Event:
    return sansio.Event(delivery.payload, event=delivery.event, delivery_id=delivery.id)
