"""A dispatch lane's routing threads: each takes one delivery id at a time straight from the intake list and routes
it on an event loop of its own, so a burst is routed many at once rather than one RQ job after another.

Routing a delivery mostly waits (database round trips, GitHub calls); threads overlap those waits. Each id is
moved atomically onto the lane's taken list and removed once routed; a lane killed meanwhile stops refreshing its
heartbeat, and the sweeper puts what it held back on the intake list (`WorkQueue.reclaim_taken`). A delivery is
still routed once: `deliveries.claim` decides, whoever takes its id.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import threading
from dataclasses import replace

from bot import logs
from bot.queue import LANE_ALIVE_TTL_S
from bot.worker.jobs import route_delivery
from bot.worker.runtime import Runtime

log = logging.getLogger(__name__)
ROUTING_THREADS = 8  # deliveries one dispatch lane routes at once; each holds a database connection meanwhile
TAKE_WAIT_S = 1  # seconds, one wait for an intake id (under the queue client's 5 s socket timeout)
BEAT_EVERY_S = LANE_ALIVE_TTL_S / 5


class RoutingThreads:
    """`threads` routing threads and the lane's heartbeat; `stop` lets each finish the delivery it is routing."""

    def __init__(self, runtime: Runtime, threads: int = ROUTING_THREADS) -> None:
        self.runtime = runtime
        self.lane_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._stopping = threading.Event()
        self._threads = [
            threading.Thread(target=self._route_forever, name=f"route-{n}", daemon=True) for n in range(threads)
        ]
        self._threads.append(threading.Thread(target=self._beat_forever, name="lane-heartbeat", daemon=True))

    def start(self) -> None:
        self.runtime.queue.keep_lane_alive(self.lane_id)
        for thread in self._threads:
            thread.start()

    def stop_taking(self) -> None:
        """No more deliveries: each thread finishes the one it routes (safe in a signal handler, never blocks)."""
        self._stopping.set()

    def stop(self) -> None:
        self.stop_taking()
        for thread in self._threads:
            thread.join()
        self.runtime.queue.end_lane(self.lane_id)

    def _route_forever(self) -> None:
        runtime, queue = self.runtime, self.runtime.queue
        github, llm = runtime.loop_clients()
        ctx = replace(runtime.context(), github=github, llm=llm)
        with asyncio.Runner() as runner:
            try:
                while not self._stopping.is_set():
                    try:
                        delivery_id = queue.take_delivery(self.lane_id, TAKE_WAIT_S)
                    except Exception:  # must outlive a queue hiccup
                        log.exception("taking an intake id failed; trying again")
                        self._stopping.wait(TAKE_WAIT_S)
                        continue
                    if delivery_id is None:
                        continue
                    try:
                        runner.run(route_delivery(runtime, delivery_id, ctx))
                    except Exception:  # the database failed before the outcome was recorded: still queued
                        log.exception(
                            "routing failed; the sweeper queues it again", extra=logs.fields(delivery_id=delivery_id)
                        )
                    finally:
                        self._drop(delivery_id)
            finally:
                if github is not None:
                    runner.run(github.aclose())
                if llm is not None:
                    runner.run(llm.aclose())

    def _drop(self, delivery_id: str) -> None:
        try:
            self.runtime.queue.drop_taken(self.lane_id, delivery_id)
        except Exception:  # left on the taken list: reclaimed after the lane ends, then found not claimable
            log.exception("could not drop a routed delivery from the lane's taken list")

    def _beat_forever(self) -> None:
        while not self._stopping.wait(BEAT_EVERY_S):
            try:
                self.runtime.queue.keep_lane_alive(self.lane_id)
            except Exception:  # a missed beat or two is harmless; many hand the lane's ids to others (claimed once)
                log.exception("the dispatch lane's heartbeat failed; trying again")
