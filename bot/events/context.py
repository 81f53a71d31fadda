"""What an event router function may touch, built once per worker process by `bot.worker.runtime`."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bot.queue import WorkQueue
from bot.runs.memory import ThreadMemoryConfig
from bot.settings import Settings
from bot.store import Store

if TYPE_CHECKING:
    from bot.github.client import GitHubApp
    from bot.llm.router import LLM
    from bot.runs.llm_planner import SimilarRuns
    from bot.runs.records import Progress


@dataclass
class EventContext:
    """Dependencies of the event routers, passed in rather than read from globals; never the step engine itself."""

    settings: Settings
    store: Store
    queue: WorkQueue
    github: GitHubApp | None
    after: Callable[[Progress, str], None]  # after a run changed: enqueue what became ready, show it on GitHub
    tools: Collection[str] = ()  # the tools this server has handlers for: what a plan may use
    llm: LLM | None = None  # for planning; None when no model key is configured
    memory: ThreadMemoryConfig = field(default_factory=ThreadMemoryConfig)
    # `(installation, repository)` -> the planner's search of that repository's earlier runs; None: no semantic index
    similar_runs: Callable[[int, str, int | None], SimilarRuns] | None = None
    # The 👀 pass (`bot.events.router.acknowledge`): react to a command its sender may give, and do nothing else
    acknowledging: bool = False
