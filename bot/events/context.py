"""What an event router function may touch, built once per worker process by `bot.runtime`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.queue import WorkQueue
from bot.settings import Settings
from bot.store import Store

if TYPE_CHECKING:
    from bot.github.client import GitHubApp
    from bot.runs.engine import Engine


@dataclass
class EventContext:
    """Dependencies of the event routers, passed in rather than read from globals."""

    settings: Settings
    store: Store
    queue: WorkQueue
    github: GitHubApp | None
    engine: Engine
