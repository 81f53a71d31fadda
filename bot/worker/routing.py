"""A dispatch lane's threads: acknowledging threads take one delivery id at a time straight from the intake list,
put 👀 on the command it carries and pass the id on to the acknowledged list; routing threads (of any lane) take it
from there and route it. Each runs an event loop of its own, so a burst is acknowledged and routed many at once
rather than one RQ job after another.

Acknowledging comes first: a routing thread waits (up to ACKS_FIRST_MAX_WAIT_S) while a delivery is being
acknowledged in this lane or more wait on the intake list, so under a burst the CPU goes to putting 👀 on every
command before it goes to planning and starting runs. Routing mostly waits too (database round trips, GitHub
calls); threads overlap those waits.

An id is moved atomically from list to list: onto the lane's taken list while it is acknowledged, onto the
acknowledged list, onto a lane's taken list while it is routed, and removed once routed; a lane killed meanwhile
stops refreshing its heartbeat, and the sweeper puts what it held back on the intake list (`WorkQueue.reclaim_taken`). A
delivery is still routed once: `deliveries.claim` decides, whoever takes its id; and reacted to once (the 👀 pass
leaves a mark that routing reads).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import replace

from bot import logs
from bot.events.context import EventContext
from bot.queue import LANE_ALIVE_TTL_S
from bot.worker.jobs import acknowledge_delivery, route_delivery
from bot.worker.runtime import Runtime

log = logging.getLogger(__name__)
ACKNOWLEDGING_THREADS = 8  # deliveries one dispatch lane acknowledges at once
ROUTING_THREADS = 8  # deliveries one dispatch lane routes at once; each holds a database connection meanwhile
ACKS_FIRST_MAX_WAIT_S = 2.0  # a routing thread waits at most this long for acknowledgements
INTAKE_POLL_S = 0.05  # how often a waiting routing thread looks at the intake list again
TAKE_WAIT_S = 1  # seconds, one wait for an intake id (under the queue client's 5 s socket timeout)
BEAT_EVERY_S = LANE_ALIVE_TTL_S / 5
STOP_POLL_S = 0.1  # how soon the heartbeat thread passes a stop asked for in a signal handler on to the others


class RoutingThreads:
    """The lane's acknowledging and routing threads and its heartbeat; `stop` lets each finish what it holds."""

    def __init__(
        self, runtime: Runtime, threads: int = ROUTING_THREADS, acknowledging: int = ACKNOWLEDGING_THREADS
    ) -> None:
        self.runtime = runtime
        self.lane_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._stopping = threading.Event()
        self._stop_asked = False
        self._acknowledging = 0  # deliveries being acknowledged now
        self._acks_done = threading.Condition()
        self._takers = [
            threading.Thread(target=self._acknowledge_forever, name=f"ack-{n}", daemon=True)
            for n in range(acknowledging)
        ]
        self._routers = [
            threading.Thread(target=self._route_forever, name=f"route-{n}", daemon=True) for n in range(threads)
        ]
        self._beat = threading.Thread(target=self._beat_forever, name="lane-heartbeat", daemon=True)

    def start(self) -> None:
        self.runtime.queue.keep_lane_alive(self.lane_id)
        for thread in (*self._takers, *self._routers, self._beat):
            thread.start()

    def stop_taking(self) -> None:
        """No more deliveries: each thread finishes the one it holds. Called from signal handlers, so it only sets a
        flag: a handler runs on the main thread between any two bytecodes, and one that took a lock (`Event.set`)
        while the code it interrupted held it, or was itself interrupted by a handler that raises (RQ's second
        signal), hung the lane for ever. The heartbeat thread sees the flag within STOP_POLL_S and wakes the rest."""
        self._stop_asked = True

    def stop(self) -> None:
        self._stop_asked = True
        self._stopping.set()
        for thread in (*self._takers, *self._routers, self._beat):
            thread.join()
        self.runtime.queue.end_lane(self.lane_id)

    def _acknowledge_forever(self) -> None:
        def take_and_acknowledge(ctx: EventContext, runner: asyncio.Runner) -> None:
            delivery_id = self._take(self.runtime.queue.take_delivery)
            if delivery_id is None:
                return
            with self._acks_done:
                self._acknowledging += 1
            try:
                runner.run(acknowledge_delivery(self.runtime, delivery_id, ctx))
            except Exception:  # routing it reacts instead
                log.exception("acknowledging failed; routing goes on", extra=logs.fields(delivery_id=delivery_id))
            finally:
                self._pass_on(delivery_id)
                with self._acks_done:
                    self._acknowledging -= 1
                    if not self._acknowledging:
                        self._acks_done.notify_all()

        self._on_own_loop(take_and_acknowledge)

    def _route_forever(self) -> None:
        def route_next(ctx: EventContext, runner: asyncio.Runner) -> None:
            delivery_id = self._take(self.runtime.queue.take_acknowledged)
            if delivery_id is None:
                return
            self.wait_for_acknowledgements()  # after taking: a thread waiting to take takes as soon as one comes
            try:
                runner.run(route_delivery(self.runtime, delivery_id, ctx))
            except Exception:  # the database failed before the outcome was recorded: still queued
                log.exception("routing failed; the sweeper queues it again", extra=logs.fields(delivery_id=delivery_id))
            finally:
                self._drop(delivery_id)

        self._on_own_loop(route_next)

    def _on_own_loop(self, step: Callable[[EventContext, asyncio.Runner], None]) -> None:
        """Call `step` until stopped, on an event loop and with GitHub and model clients of this thread's own."""
        runtime = self.runtime
        github, llm = runtime.loop_clients()
        ctx = replace(runtime.context(), github=github, llm=llm)
        with asyncio.Runner() as runner:
            try:
                while not self._stopping.is_set():
                    step(ctx, runner)
            finally:
                if github is not None:
                    runner.run(github.aclose())
                if llm is not None:
                    runner.run(llm.aclose())

    def _take(self, take: Callable[[str, int], str | None]) -> str | None:
        try:
            return take(self.lane_id, TAKE_WAIT_S)
        except Exception:  # must outlive a queue hiccup
            log.exception("taking a delivery id failed; trying again")
            self._stopping.wait(TAKE_WAIT_S)
            return None

    def _pass_on(self, delivery_id: str) -> None:
        """Onto the acknowledged list, trying again through a queue hiccup; a lane stopped meanwhile leaves it on its
        taken list, which the sweeper puts back on the intake list."""
        while True:
            try:
                self.runtime.queue.pass_acknowledged(self.lane_id, delivery_id)
                return
            except Exception:
                log.exception("could not pass an acknowledged delivery on", extra=logs.fields(delivery_id=delivery_id))
                if self._stopping.wait(TAKE_WAIT_S):
                    return

    def wait_for_acknowledgements(self) -> None:
        """Acknowledging first: wait while this lane acknowledges deliveries or more wait on the intake list (for
        some lane to acknowledge), but not for ever under a steady stream. The lane's RQ jobs (reports) wait too."""
        deadline = time.monotonic() + ACKS_FIRST_MAX_WAIT_S
        with self._acks_done:
            while (left := deadline - time.monotonic()) > 0:
                if self._acknowledging:
                    self._acks_done.wait(left)
                elif self._intake_waiting():
                    self._acks_done.wait(min(left, INTAKE_POLL_S))
                else:
                    return

    def _intake_waiting(self) -> bool:
        try:
            return self.runtime.queue.intake_length() > 0
        except Exception:  # the queue's hiccup is the taking threads' to report; route meanwhile
            return False

    def _drop(self, delivery_id: str) -> None:
        try:
            self.runtime.queue.drop_taken(self.lane_id, delivery_id)
        except Exception:  # left on the taken list: reclaimed after the lane ends, then found not claimable
            log.exception("could not drop a routed delivery from the lane's taken list")

    def _beat_forever(self) -> None:
        """Refresh the lane's heartbeat every BEAT_EVERY_S, and wake the other threads once a stop is asked for."""
        next_beat = time.monotonic() + BEAT_EVERY_S
        while not self._stop_asked:
            time.sleep(STOP_POLL_S)
            if time.monotonic() < next_beat:
                continue
            next_beat += BEAT_EVERY_S
            try:
                self.runtime.queue.keep_lane_alive(self.lane_id)
            except Exception:  # a missed beat or two is harmless; many hand the lane's ids to others (claimed once)
                log.exception("the dispatch lane's heartbeat failed; trying again")
        self._stopping.set()
