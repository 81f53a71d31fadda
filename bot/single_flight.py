"""One call for many concurrent askers: a burst of deliveries for one installation, routed on several threads each
with an event loop of its own, mints one token and reads one branch head, not one per thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Generic, TypeVar

T = TypeVar("T")


class SingleFlight(Generic[T]):
    """Callers asking for the same key while a call for it is under way (on any thread, any event loop) wait for
    that call's result, or its exception; the next caller after it ends makes a new call."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, Future[T]] = {}

    async def do(self, key: str, call: Callable[[], Awaitable[T]]) -> T:
        with self._lock:
            pending = self._pending.get(key)
            if pending is None:
                mine = self._pending[key] = Future()
        if pending is not None:
            return await asyncio.wrap_future(pending)
        try:
            result = await call()
        except BaseException as exc:
            mine.set_exception(exc)
            raise
        else:
            mine.set_result(result)
            return result
        finally:
            with self._lock:
                del self._pending[key]
