"""Resource limits for repository code: rlimits per process, a pids cgroup for root, disk use of what it may write.

RLIMIT_NPROC counts every process of the user id (in the sandbox's user namespace and, above it, the worker's
own), and the kernel does not apply it to root at all. So when nofx runs as root, the process limit is a pids
cgroup of its own per command, made where the host lets nofx write one (cgroup v1 `pids`, or a v2 hierarchy with
the pids controller delegated); `process_limit()` says which applies here. RLIMIT_CPU is per process; the
wall-clock timeout is what bounds the whole command. RLIMIT_AS is address space, not resident memory: runtimes
that reserve large virtual ranges (Go, the JVM) may need a higher `memory_bytes`. The worktree's disk use is
measured while the command runs (every DISK_POLL_S) and once after it, so a fast writer can overshoot by what it
writes between two looks; RLIMIT_FSIZE bounds each single file meanwhile.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class Limits:
    """What one sandboxed command may use; the defaults fit a test suite, not a build farm."""

    cpu_s: int = 900
    memory_bytes: int = 4 * 2**30
    file_bytes: int = 1 * 2**30
    processes: int = 512
    disk_bytes: int = 2 * 2**30  # growth of the worktree (and of setup's directory, for setup) during the command
    files: int = 1_000_000  # files and directories added there: empty ones use no blocks, yet fill the inode table
    tmp_bytes: int = 512 * 2**20  # the sandbox's /tmp (memory-backed)


def apply_rlimits(limits: Limits, cgroup: Path | None) -> None:
    """Runs in the child between fork and exec; inherited by everything the command starts."""
    if cgroup is not None:  # join the pids cgroup first, so every descendant is counted
        (cgroup / "cgroup.procs").write_text(str(os.getpid()))
    for which, value in (
        (resource.RLIMIT_CPU, limits.cpu_s),
        (resource.RLIMIT_AS, limits.memory_bytes),
        (resource.RLIMIT_FSIZE, limits.file_bytes),
        (resource.RLIMIT_NPROC, limits.processes),  # not enforced for root: see the module docstring
        (resource.RLIMIT_CORE, 0),  # no core files in the worktree
    ):
        _, hard = resource.getrlimit(which)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(which, (value, value))


def process_limit() -> str:
    """How the process limit is enforced on this host: for `nofx doctor` and the tests."""
    if os.geteuid() != 0:
        return "RLIMIT_NPROC (nofx runs as an unprivileged user)"
    cgroup = make_pids_cgroup(1)
    if cgroup is None:
        return "not enforced: nofx runs as root and cannot create a pids cgroup; run it as an unprivileged user"
    remove_cgroup(cgroup)
    return f"pids cgroup ({cgroup.parent})"


def make_pids_cgroup(processes: int) -> Path | None:
    """A fresh cgroup with `pids.max` = processes, when running as root on a host that lets us make one."""
    if os.geteuid() != 0:
        return None
    for parent in _pids_parents():
        cgroup = parent / f"nofx-sandbox-{uuid.uuid4().hex[:12]}"
        try:
            cgroup.mkdir()
        except OSError:
            continue
        try:
            (cgroup / "pids.max").write_text(str(processes))
            return cgroup
        except OSError:
            remove_cgroup(cgroup)
    return None


def remove_cgroup(cgroup: Path) -> None:
    """Kill whatever is left in the cgroup (a process that left the command's group) and remove it (blocking)."""
    for _ in range(40):
        with contextlib.suppress(OSError, ValueError):
            for pid in (cgroup / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        try:
            cgroup.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.05)  # the killed processes are still being torn down


def _pids_parents() -> list[Path]:
    """Where this process may make a child cgroup with a pids controller: its own cgroup, v1 then v2."""
    parents: list[Path] = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            relative = path.lstrip("/")
            if "pids" in controllers.split(","):
                parents.append(CGROUP_ROOT / "pids" / relative)
            elif controllers == "" and (CGROUP_ROOT / "cgroup.controllers").exists():
                parents.append(CGROUP_ROOT / relative)
    return [parent for parent in parents if parent.is_dir()]


def disk_usage(path: Path) -> int:
    """Bytes allocated under `path`, not following symlinks (what the worktree costs the disk)."""
    return usage(path)[0]


def usage(path: Path) -> tuple[int, int]:
    """Bytes allocated under `path` and the files and directories in it, not following symlinks."""
    total = count = 0
    for directory, subdirectories, files in os.walk(path):
        count += len(subdirectories) + len(files)
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(directory, name)).st_blocks * 512
    return total, count
