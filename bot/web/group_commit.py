"""Group commit: requests that arrive while a write is under way share the next one.

A webhook's 202 must mean "recorded durably and enqueued". Doing that per request costs a thread hop, a
transaction and a queue round trip each; under a burst the requests queue behind each other. Here the
first request starts a writer task and every request that arrives meanwhile joins the next batch, so a
burst of N deliveries costs a few transactions instead of N, and each request still waits for its own
write to be done before it is answered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")
Answer = TypeVar("Answer")


class GroupCommit(Generic[Item, Answer]):
    """Batches `submit`ted items for `write`, a coroutine function: one answer per item, in order.

    Up to `writers` batches are written at once: a database that syncs each commit to disk (PostgreSQL) takes
    the next batch while the last one waits for its flush; SQLite has one writer at a time, so one.
    """

    def __init__(
        self, write: Callable[[list[Item]], Awaitable[list[Answer]]], *, max_batch: int = 256, writers: int = 1
    ) -> None:
        self._write = write
        self._max_batch = max_batch
        self._max_writers = writers
        self._pending: list[tuple[Item, asyncio.Future[Answer]]] = []
        self._writers: set[asyncio.Task[None]] = set()

    async def submit(self, item: Item) -> Answer:
        """Wait until the batch holding `item` is written; its answer, or the write's exception."""
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if len(self._writers) < self._max_writers:
            self._writers.add(asyncio.create_task(self._drain()))
        return await future  # a request cancelled meanwhile leaves its item in the batch: the writer skips its future

    async def _drain(self) -> None:
        try:
            await self._write_pending()
        finally:
            # In the same step as the last look at `_pending`: a done callback would run a turn later, and an item
            # submitted in between would find this writer still counted, start none, and wait for ever.
            task = asyncio.current_task()
            if task is not None:
                self._writers.discard(task)

    async def _write_pending(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
            try:
                answers = await self._write([item for item, _ in batch])
            except Exception as exc:  # every request of the batch gets the failure; the next batch tries again
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), answer in zip(batch, answers, strict=True):
                if not future.done():
                    future.set_result(answer)
