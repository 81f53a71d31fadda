"""Nothing lost while nofx was down: GitHub's delivery log is compared with the deliveries nofx recorded, and
GitHub is asked to redeliver the ones nofx never saw (they then arrive through the intake like any other)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from bot import deliveries
from bot.github.client import GitHubApp
from bot.store import Store

log = logging.getLogger(__name__)
MAX_REDELIVERIES = 500  # one recovery never asks for more; the next one continues


@dataclass
class Recovery:
    """What one recovery found in GitHub's log and asked for."""

    listed: int = 0  # distinct deliveries in the window
    missing: list[str] = field(default_factory=list)  # GUIDs nofx never recorded
    redelivered: list[str] = field(default_factory=list)  # GUIDs GitHub accepted to send again


async def recover(github: GitHubApp, store: Store, since: datetime) -> Recovery:
    """Redeliver every delivery GitHub made (or tried) since `since` whose GUID nofx has not recorded.

    The log lists attempts newest first; a redelivery keeps its GUID, so one GUID is judged once. Oldest first,
    so events reach the routers in the order GitHub sent them.
    """
    client = github.app_client()
    found = Recovery()
    seen: set[str] = set()
    missing: list[tuple[str, int]] = []
    async for item in client.getiter("/app/hook/deliveries?per_page=100"):
        if datetime.fromisoformat(item["delivered_at"].replace("Z", "+00:00")) < since:
            break
        guid = str(item["guid"])
        if guid in seen:
            continue
        seen.add(guid)
        if deliveries.get(store, guid) is None:
            missing.append((guid, int(item["id"])))
    found.listed = len(seen)
    found.missing = [guid for guid, _ in reversed(missing)]
    for guid, attempt_id in list(reversed(missing))[:MAX_REDELIVERIES]:
        await client.post(
            "/app/hook/deliveries/{delivery_id}/attempts", url_vars={"delivery_id": str(attempt_id)}, data=b""
        )
        found.redelivered.append(guid)
    log.info("recovery: %d deliveries since %s, %d missing, %d redelivered", found.listed, since.isoformat(),
             len(found.missing), len(found.redelivered))  # fmt: skip
    return found


def parse_window(text: str) -> timedelta:
    """`30m`, `2h`, `1d` (GitHub keeps its delivery log for 3 days)."""
    units = {"m": "minutes", "h": "hours", "d": "days"}
    number, unit = text[:-1], text[-1:]
    if unit not in units or not number.isdigit() or int(number) <= 0:
        raise ValueError(f"--since takes a duration like 30m, 2h or 1d, not {text!r}")
    window = timedelta(**{units[unit]: int(number)})
    if window > timedelta(days=3):
        raise ValueError("GitHub keeps webhook deliveries for 3 days; --since cannot reach further back")
    return window
