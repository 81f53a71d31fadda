"""The one event router: composes the small per-feature routers and decides what nofx acts on."""

from __future__ import annotations

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
    if delivery.installation_id is not None and delivery.event not in INSTALLATION_EVENTS:
        repository = delivery.payload.get("repository")
        reason = await installations.learn(
            ctx, delivery.installation_id, repository if isinstance(repository, dict) else None
        )
        if reason is not None:
            return reason
    event = sansio.Event(delivery.payload, event=delivery.event, delivery_id=delivery.id)
    await router.dispatch(event, ctx)
    return None
