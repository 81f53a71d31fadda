"""The dispatch lane: a process of its own beside each worker, so deliveries never wait behind steps or reviews, and
at a higher CPU priority than them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from bot.queue import die_with_parent

STOP_GRACE_S = 10
WORK_LANE_NICENESS = 5  # below its dispatch lane; `nofx serve` nices both below the web already


class LaneProcess:
    """A `nofx worker --lane dispatch` child that dies with its parent (even when the parent is killed)."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)  # its current job and the deliveries being routed finish first
        try:
            self.process.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def dispatch_lane_process() -> LaneProcess:
    """Start the dispatch lane with this process's environment (REDIS_URL, DATABASE_URL, …), then yield the CPU
    to it: this process, the work lane (steps, reviews and the commands they run), runs niced from now on, so
    under a burst routing deliveries wins the CPU. Call it before starting threads (Linux nices per thread; new
    threads and child processes inherit)."""
    command = [sys.executable, "-m", "bot.cli", "worker", "--lane", "dispatch"]
    lane = LaneProcess(subprocess.Popen(command, preexec_fn=die_with_parent))
    os.nice(WORK_LANE_NICENESS)
    return lane
