"""Enqueue beside the answer: a delivery is answered once it is recorded, and pushed onto the intake list without
the answer waiting for the push.

A 202 means the delivery is recorded durably and deduplicated, and that routing is on its way or recoverable: a
push that fails marks its deliveries received, which the sweeper enqueues once the queue is back, and a web
process killed between the answer and the push leaves them queued with no job, which the sweeper finds too
(`bot.worker.loop`, within a minute). Waiting for the push cost every request a Redis round trip behind the
event loop's other work, and the next batch waited for it too; here the write of the next batch goes on while
one push at a time carries every id recorded meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from bot import deliveries
from bot.queue import IntakePusher
from bot.store import Store

log = logging.getLogger(__name__)


class EnqueueAfter:
    """The ids recorded but not yet pushed, and the one task pushing them; used from the event loop only."""

    def __init__(self, pusher: IntakePusher, store: Store, in_thread: Callable[..., Awaitable[Any]]) -> None:
        self._pusher = pusher
        self._store = store
        self._in_thread = in_thread
        self._new: list[str] = []  # recorded by this process as queued
        self._stranded: list[str] = []  # recorded earlier and never enqueued (a redelivery found them received)
        self._task: asyncio.Task[None] | None = None

    def add(self, new: list[str], stranded: list[str]) -> None:
        self._new += new
        self._stranded += stranded
        if (self._new or self._stranded) and self._task is None:
            self._task = asyncio.create_task(self._drain())

    async def settled(self) -> None:
        """Wait until every id added so far is pushed, or left for the sweeper."""
        while self._task is not None:
            await asyncio.shield(self._task)

    async def close(self) -> None:
        await self.settled()
        await self._pusher.close()

    async def _drain(self) -> None:
        try:
            while self._new or self._stranded:
                new, stranded = self._new, self._stranded
                self._new, self._stranded = [], []
                await self._push(new, stranded)
        finally:
            # In the same step as the last look at the lists: `add` then starts a new task for what comes next.
            self._task = None

    async def _push(self, new: list[str], stranded: list[str]) -> None:
        try:
            await self._pusher.push(new + stranded)
        except Exception as exc:
            log.warning(
                "the queue refused %d recorded deliveries (%s); the sweeper enqueues them once it is back",
                len(new) + len(stranded),
                type(exc).__name__,
            )
            await self._mark(deliveries.mark_all_received, new)
            return
        await self._mark(_mark_queued, stranded)

    async def _mark(self, mark: Callable[[Store, list[str]], None], delivery_ids: list[str]) -> None:
        """Record where the pushed (or refused) deliveries are; a database error leaves them for the sweeper as
        they are (queued with no job, or received), so it is logged, not raised."""
        if not delivery_ids:
            return
        try:
            await self._in_thread(mark, self._store, delivery_ids)
        except Exception:
            log.exception("could not mark %d deliveries after their push", len(delivery_ids))


def _mark_queued(store: Store, delivery_ids: list[str]) -> None:
    for delivery_id in delivery_ids:
        deliveries.mark_queued(store, delivery_id)
