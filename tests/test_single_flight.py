"""`SingleFlight`: callers on several threads, each with an event loop of its own, share one call per key."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from bot.single_flight import SingleFlight


class CountingLock:
    """The flight's lock, counting how often it is taken: each `do` takes it once on the way in."""

    def __init__(self, askers: int) -> None:
        self._lock = threading.Lock()
        self.taken = 0
        self.all_in = threading.Event()  # every asker is in: waiting for a call under way, or making one
        self._askers = askers

    def __enter__(self) -> None:
        self._lock.acquire()
        self.taken += 1
        if self.taken >= self._askers:
            self.all_in.set()

    def __exit__(self, *exc_info: object) -> None:
        self._lock.release()


def test_callers_on_other_threads_wait_for_the_call_under_way_and_get_its_result() -> None:
    flight: SingleFlight[str] = SingleFlight()
    lock = flight._lock = CountingLock(askers=4)  # type: ignore[assignment]
    calls: list[str] = []

    async def call() -> str:
        calls.append("called")
        await asyncio.to_thread(lock.all_in.wait, 20)
        return "head"

    def ask(key: str) -> str:
        return asyncio.run(flight.do(key, call))

    with ThreadPoolExecutor(4) as pool:
        same = [pool.submit(ask, "org/shop") for _ in range(3)]
        other = pool.submit(ask, "org/other")
        results = [future.result(timeout=20) for future in same]

    assert results == ["head"] * 3 and other.result() == "head"
    assert len(calls) == 2  # one per key


async def test_a_failed_call_fails_its_waiters_and_the_next_caller_calls_again() -> None:
    flight: SingleFlight[str] = SingleFlight()
    attempts = 0
    started = asyncio.Event()

    async def failing() -> str:
        nonlocal attempts
        attempts += 1
        started.set()
        await asyncio.sleep(0.05)
        raise ConnectionError("GitHub went away")

    first = asyncio.create_task(flight.do("k", failing))
    await started.wait()
    waiter = asyncio.create_task(flight.do("k", failing))
    for task in (first, waiter):
        with pytest.raises(ConnectionError):
            await task

    async def working() -> str:
        return "ok"

    assert await flight.do("k", working) == "ok"
    assert attempts == 1
