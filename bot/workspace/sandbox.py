"""Run a repository's own commands (its tests, linters, type checker) without handing them the server.

The command is the repository's code, so it is treated as hostile: it gets a scrubbed environment (no token, no
API key, only the names `policy.env_allowed` lists), a wall-clock limit that kills its whole process group,
CPU/memory/file-size limits, and output that is captured incrementally and truncated so a flood cannot block the
worker or fill its memory. When bubblewrap (`bwrap`) works on the host, the command also runs in its own mount,
PID, network, IPC and UTS namespaces with this filesystem layout (later entries are mounted on top of earlier ones):

    /usr /bin /sbin /lib* /opt /etc   read-only from the host (top-level symlinks such as /bin -> usr/bin kept)
    /etc/shadow, /etc/gshadow, …      masked with /dev/null; /etc/ssh and /etc/ssl/private with an empty tmpfs
    /dev /proc                        a minimal /dev, a /proc of the new PID namespace
    /tmp                              an empty tmpfs; HOME is /tmp/home
    <worktree's git dirs>             read-only, when the worktree is a linked `git worktree` (its `.git` is a file):
                                      the common dir, with an empty tmpfs over its `worktrees/` and this worktree's
                                      own entry put back, so `git status` works but other runs stay out of sight
    <cwd> and each `writable` path    read-write, at the same path as outside

Nothing else of the host exists inside: not /home or /root, not the nofx data dir (database, artifacts, other
worktrees), not /run (sockets), /var, /srv, /mnt or /sys, and there is no network at all, not even loopback to
the host. When the worktree lies under one of the read-only system directories, the top directory it sits in
there is replaced by an empty tmpfs first, so its siblings stay hidden. Without bwrap (`isolation="none"`) the
command sees the filesystem and network the worker's user sees; the step output says which isolation was used.

Limits: RLIMIT_NPROC counts every process of the user id, and the kernel does not apply it to root at all, so it
only bounds a fork bomb for an unprivileged worker user (as in the Docker image), and there it also counts the
worker's own processes. RLIMIT_CPU is per process; the wall-clock timeout is what bounds the whole command.
RLIMIT_AS is address space, not resident memory: runtimes that reserve large virtual ranges (Go, the JVM) may need
a higher `memory_bytes`. Without bwrap, a process that leaves the group (`setsid`) survives the group kill; bwrap's
PID namespace ends every process inside when the command ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import resource
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from bot.repo_config import RESERVED_ENV, RESERVED_ENV_PREFIXES

ISOLATIONS = ("auto", "bwrap", "none")
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HEAD_BYTES = 16 * 1024
KILL_GRACE_S = 2.0  # between SIGTERM and SIGKILL on timeout: time for test runners to print their summary
DRAIN_S = 1.0  # after the command ends, how long to wait for the pipe's last bytes (a `setsid` escapee holds it)
BWRAP_HOME = Path("/tmp/home")  # noqa: S108 - on the sandbox's own empty /tmp

_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/opt", "/etc")
_SECRET_FILES = ("/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-", "/etc/security/opasswd")
_SECRET_DIRS = ("/etc/ssh", "/etc/ssl/private")


class SandboxUnavailable(RuntimeError):
    """`isolation="bwrap"` was asked for, but bubblewrap is missing or cannot create namespaces on this host."""


@dataclass(frozen=True)
class Limits:
    """Per-process resource limits applied in the child before it runs the command."""

    cpu_s: int = 900
    memory_bytes: int = 4 * 2**30
    file_bytes: int = 1 * 2**30
    processes: int = 512


@dataclass(frozen=True)
class CommandResult:
    """What a command did: `exit_code` is None when it was killed for running out of time."""

    exit_code: int | None
    output: str
    truncated: bool
    duration_s: float
    timed_out: bool
    isolation: str  # "bwrap" | "none"

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def tail(self, lines: int = 30) -> str:
        """The last lines of the output: where test runners and linters put their verdict."""
        return "\n".join(self.output.rstrip("\n").split("\n")[-lines:]) if self.output else ""


def scrubbed_env(env_allowed: Iterable[str], source: Mapping[str, str] | None = None, *, home: Path) -> dict[str, str]:
    """A fresh environment: fixed basics plus the allowed names present in `source` (default: os.environ).

    The server's own variables (RESERVED_ENV, NOFX_*) never pass, whatever the repo config says; HOME is always
    `home`, so the command cannot write into the worker's home directory.
    """
    source = os.environ if source is None else source
    env = {"PATH": SAFE_PATH, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TERM": "dumb", "CI": "true"}
    for name in env_allowed:
        if name != "HOME" and not _reserved(name) and name in source:
            env[name] = source[name]
    env["HOME"] = str(home)
    return env


def isolation_available() -> str:
    """Return "bwrap" if bubblewrap is installed and a trial sandbox with the real layout starts here, else "none"."""
    return _probe_bwrap()[0]


async def run_command(
    command: str,
    *,
    cwd: Path,
    env_allowed: Iterable[str] = (),
    timeout_s: float,
    limits: Limits = Limits(),
    isolation: str = "auto",
    max_output_bytes: int = 256 * 1024,
    writable: Iterable[Path] = (),
) -> CommandResult:
    """Run a shell command from the repo config in `cwd`; never raises for the command's own failure.

    Raises SandboxUnavailable for `isolation="bwrap"` on a host without it, and OSError if `cwd` is missing.
    Cancelling the awaiting task kills the command's whole process group.
    """
    if isolation not in ISOLATIONS:
        raise ValueError(f"isolation must be one of {', '.join(ISOLATIONS)}, not {isolation!r}")
    cwd, mode, prefix = await asyncio.to_thread(_prepare, cwd, list(writable), isolation)
    with _home_for(mode) as home:
        env = scrubbed_env(env_allowed, home=home)
        argv = [*prefix, "/bin/sh", "-c", command]
        return await _execute(
            argv,
            cwd=cwd,
            env=env,
            timeout_s=timeout_s,
            limits=limits,
            max_output_bytes=max_output_bytes,
            isolation=mode,
        )


# --- running -----------------------------------------------------------------------------------------------------


async def _execute(
    argv: list[str],
    *,
    cwd: Path,
    env: dict[str, str],
    timeout_s: float,
    limits: Limits,
    max_output_bytes: int,
    isolation: str,
) -> CommandResult:
    # Our own pipe rather than asyncio's: asyncio's Process.wait() also waits for its pipes to close, so a
    # background child holding stdout would make a finished command look hung until the timeout.
    read_fd, write_fd = os.pipe()
    try:
        pipe = os.fdopen(read_fd, "rb", buffering=0)
    except BaseException:
        os.close(read_fd)
        os.close(write_fd)
        raise
    with pipe:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=subprocess.DEVNULL,
                stdout=write_fd,
                stderr=write_fd,
                cwd=cwd,
                env=env,
                start_new_session=True,  # its own process group, so one killpg reaches every descendant
                preexec_fn=functools.partial(_apply_limits, limits),  # setrlimit must run in the child
            )
        finally:
            os.close(write_fd)
        started = time.monotonic()
        buffer = _OutputBuffer(max_output_bytes)
        timed_out = False
        exit_code: int | None = None
        try:
            loop = asyncio.get_running_loop()
            transport, protocol = await loop.connect_read_pipe(lambda: _Collector(buffer, loop), pipe)
            try:
                try:
                    exit_code = await asyncio.wait_for(proc.wait(), timeout_s)
                except TimeoutError:
                    timed_out = True
                    await _stop_group(proc)
                # A finished command's background children (`server &`) go too; gates must not leave daemons.
                _signal_group(proc.pid, signal.SIGKILL)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(protocol.closed), DRAIN_S)
            finally:
                transport.close()
        except BaseException:  # cancelled (the run was cancelled) or failed: nothing of the command may outlive us
            _signal_group(proc.pid, signal.SIGKILL)
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(proc.wait()), KILL_GRACE_S)  # reap it while the loop runs
            raise
    return CommandResult(
        exit_code=None if timed_out else exit_code,
        output=buffer.text(),
        truncated=buffer.truncated,
        duration_s=time.monotonic() - started,
        timed_out=timed_out,
        isolation=isolation,
    )


async def _stop_group(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM to the group, a short grace to flush and exit, then SIGKILL."""
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), KILL_GRACE_S)
    except TimeoutError:
        _signal_group(proc.pid, signal.SIGKILL)
        await proc.wait()


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    # ProcessLookupError: the group is already empty. The group id stays reserved while any member lives.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _apply_limits(limits: Limits) -> None:
    """Runs in the child between fork and exec; inherited by everything the command starts."""
    for which, value in (
        (resource.RLIMIT_CPU, limits.cpu_s),
        (resource.RLIMIT_AS, limits.memory_bytes),
        (resource.RLIMIT_FSIZE, limits.file_bytes),
        (resource.RLIMIT_NPROC, limits.processes),  # not enforced for root; see the module docstring
        (resource.RLIMIT_CORE, 0),  # no core files in the worktree
    ):
        _, hard = resource.getrlimit(which)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(which, (value, value))


class _Collector(asyncio.Protocol):
    """Feeds every chunk to the buffer as it arrives, so the command never blocks on a full pipe."""

    def __init__(self, buffer: _OutputBuffer, loop: asyncio.AbstractEventLoop) -> None:
        self.buffer = buffer
        self.closed: asyncio.Future[None] = loop.create_future()

    def data_received(self, data: bytes) -> None:
        self.buffer.feed(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class _OutputBuffer:
    """The first HEAD_BYTES and the last bytes up to the cap; what lies between is counted, not kept."""

    def __init__(self, max_bytes: int) -> None:
        self.head_limit = min(HEAD_BYTES, max_bytes // 2)
        self.tail_limit = max_bytes - self.head_limit
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self.tail += chunk
            excess = len(self.tail) - self.tail_limit
            if excess > 0:
                del self.tail[:excess]

    @property
    def omitted(self) -> int:
        return self.total - len(self.head) - len(self.tail)

    @property
    def truncated(self) -> bool:
        return self.omitted > 0

    def text(self) -> str:
        head = self.head.decode("utf-8", errors="replace")
        tail = self.tail.decode("utf-8", errors="replace")
        if not self.truncated:
            return head + tail
        return f"{head}\n… {self.omitted} bytes omitted …\n{tail}"


# --- isolation ---------------------------------------------------------------------------------------------------


def _reserved(name: str) -> bool:
    upper = name.upper()
    return upper in RESERVED_ENV or upper.startswith(RESERVED_ENV_PREFIXES)


@contextlib.contextmanager
def _home_for(isolation: str) -> Iterator[Path]:
    """HOME for the command: inside bwrap a path on the sandbox's own /tmp, else a temp dir removed afterwards."""
    if isolation == "bwrap":
        yield BWRAP_HOME
        return
    home = Path(tempfile.mkdtemp(prefix="nofx-home-"))
    try:
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _prepare(cwd: Path, writable: list[Path], isolation: str) -> tuple[Path, str, list[str]]:
    """Resolve the paths, pick the isolation, and build the argv prefix that puts the command in it (blocking)."""
    cwd = cwd.resolve(strict=True)
    writable = [Path(path).resolve(strict=True) for path in writable]
    if isolation == "none":
        return cwd, "none", []
    mode, reason = _probe_bwrap()
    bwrap = shutil.which("bwrap")
    if mode != "bwrap" or bwrap is None:
        if isolation == "bwrap":
            raise SandboxUnavailable(f"bubblewrap isolation is not available here: {reason or 'bwrap is gone'}")
        return cwd, "none", []
    return cwd, "bwrap", [bwrap, *_bwrap_layout(cwd, writable), "--"]


@functools.cache
def _probe_bwrap() -> tuple[str, str]:
    """Start `true` in a sandbox with the real layout once per process: containers often forbid namespaces."""
    path = shutil.which("bwrap")
    if path is None:
        return "none", "bubblewrap (bwrap) is not installed"
    with tempfile.TemporaryDirectory(prefix="nofx-probe-") as trial:
        argv = [path, *_bwrap_layout(Path(trial).resolve(), []), "--", "/bin/sh", "-c", "true"]
        try:
            done = subprocess.run(argv, capture_output=True, timeout=10, check=False, env={"PATH": SAFE_PATH})
        except (OSError, subprocess.TimeoutExpired) as exc:
            return "none", f"bwrap could not be started: {exc}"
    if done.returncode != 0:
        message = done.stderr.decode("utf-8", errors="replace").strip() or f"exit code {done.returncode}"
        return "none", f"bwrap cannot create a sandbox here: {message}"
    return "bwrap", ""


def _bwrap_layout(cwd: Path, writable: list[Path]) -> list[str]:
    """The bwrap options for the layout the module docstring describes; `cwd` and `writable` are resolved."""
    args: list[str] = []
    for name in _SYSTEM_DIRS:
        path = Path(name)
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), name]
        elif path.is_dir():
            args += ["--ro-bind", name, name]
    args += [arg for name in _SECRET_FILES if Path(name).is_file() for arg in ("--ro-bind", "/dev/null", name)]
    args += [arg for name in _SECRET_DIRS if Path(name).is_dir() for arg in ("--tmpfs", name)]
    args += ["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "--dir", str(BWRAP_HOME)]  # noqa: S108
    exposed = [cwd, *writable]
    args += [arg for cover in _covers(exposed) for arg in ("--tmpfs", str(cover))]
    args += _git_binds(cwd)
    for path in exposed:
        args += ["--bind", str(path), str(path)]
    args += ["--chdir", str(cwd), "--unshare-all", "--die-with-parent"]
    return args


def _covers(paths: list[Path]) -> list[Path]:
    """The directories to blank out so that exposing `paths` inside a read-only system dir hides their siblings."""
    covers: list[Path] = []
    for path in paths:
        if path == Path(path.anchor):
            raise ValueError("refusing to sandbox a command with the whole filesystem writable")
        for name in _SYSTEM_DIRS:
            root = Path(name)
            if root.is_symlink() or not path.is_relative_to(root):
                continue
            if path == root:
                raise ValueError(f"refusing to make {root} writable in the sandbox")
            cover = root / path.relative_to(root).parts[0]
            if cover not in covers:
                covers.append(cover)
    return covers


def _git_binds(cwd: Path) -> list[str]:
    """Read-only binds that let git work in a linked worktree without showing the other worktrees."""
    dot_git = cwd / ".git"
    if not dot_git.is_file():
        return []  # an ordinary clone: its .git directory is inside cwd already
    try:
        line = dot_git.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return []
    if not line.startswith("gitdir:"):
        return []
    gitdir = (cwd / line.removeprefix("gitdir:").strip()).resolve()
    if not gitdir.is_dir():
        return []
    common = gitdir
    with contextlib.suppress(OSError, UnicodeDecodeError):
        common = (gitdir / (gitdir / "commondir").read_text(encoding="utf-8").strip()).resolve()
    if common == gitdir or not common.is_dir():
        return ["--ro-bind", str(gitdir), str(gitdir)]
    args = ["--ro-bind", str(common), str(common)]
    # Other checkouts kept inside the common dir would show through the bind: blank them too.
    for checkout in _checkouts(common):
        if checkout != cwd and checkout.is_relative_to(common) and checkout.is_dir():
            args += ["--tmpfs", str(checkout)]
    if (common / "worktrees").is_dir():
        args += ["--tmpfs", str(common / "worktrees")]
    return [*args, "--ro-bind", str(gitdir), str(gitdir)]


def _checkouts(common: Path) -> list[Path]:
    """The working directories of a repository's linked worktrees, from `<common>/worktrees/*/gitdir`."""
    found = []
    for entry in (common / "worktrees").glob("*/gitdir"):
        with contextlib.suppress(OSError, UnicodeDecodeError):
            found.append(Path(entry.read_text(encoding="utf-8").strip()).resolve().parent)
    return found
