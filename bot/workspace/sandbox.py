"""Run a repository's own commands (its tests, linters, type checker, setup) without handing them the server.

The command is the repository's code, so it is treated as hostile: it gets a scrubbed environment (no token, no
API key, nothing secret-looking, only the names `policy.env_allowed` lists), a wall-clock limit that kills it
whole, CPU/memory/file-size/process/disk limits (`bot.workspace.limits`), and output that is captured
incrementally and truncated so a flood cannot block the worker or fill its memory. It runs in the bubblewrap
sandbox `bot.workspace.isolation` describes, which is built only from what nofx recorded about the worktree.

Fails closed: when the sandbox cannot be built here (no bwrap, namespaces refused), nothing runs and
SandboxUnavailable names the cause and the fix. Only an operator's explicit `NOFX_SANDBOX=none` runs commands
without isolation, and then every result says so. After each command, nofx checks that the worktree's `.git` and
the git config it relies on are still its own, and raises WorkspaceTampered otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from bot.repo_config import RESERVED_ENV, RESERVED_ENV_PREFIXES
from bot.workspace.command_result import UNSAFE_NOTICE, CommandResult
from bot.workspace.egress import EgressPolicy, EgressProxy, egress_proxy, interpreter_prefix
from bot.workspace.isolation import (
    BWRAP_HOME,
    OPT_OUT_HINT,
    SAFE_PATH,
    SETUP_MOUNT,
    GitLayout,
    SandboxUnavailable,
    WorkspaceTampered,
    bwrap_args,
    git_fingerprint,
    probe,
)
from bot.workspace.limits import Limits, apply_rlimits, make_pids_cgroup, remove_cgroup, usage
from bot.workspace.toolchains import Toolchains

if TYPE_CHECKING:
    from bot.workspace.worktrees import Worktree

__all__ = [
    "BWRAP_HOME",
    "ISOLATIONS",
    "SAFE_PATH",
    "UNSAFE_NOTICE",
    "CommandResult",
    "GitLayout",
    "Limits",
    "Sandbox",
    "SandboxUnavailable",
    "WorkspaceTampered",
    "run_command",
    "scrubbed_env",
]

ISOLATIONS = ("bwrap", "none")
HEAD_BYTES = 16 * 1024
KILL_GRACE_S = 2.0  # between SIGTERM and SIGKILL on timeout: time for test runners to print their summary
DRAIN_S = 1.0  # after the command ends, how long to wait for the pipe's last bytes (a `setsid` escapee holds it)
DISK_POLL_S = 1.0  # how often the worktree's disk use is measured while a command runs
# A proxy's URL may carry credentials (`http://user:pass@proxy:3128`), and setup has network to send them on.
_SECRET_NAME = re.compile(
    r"TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|PRIVATE|API_?KEY|ACCESS_?KEY|_KEY$|^KEY$|_URL$|PROXY"
)


@dataclass(frozen=True)
class Sandbox:
    """How this worker runs repository code: built once from settings, handed to every step that runs code.

    `readonly` lists extra host directories (toolchains) every command sees read-only at their own path.
    """

    isolation: str = "bwrap"
    limits: Limits = field(default_factory=Limits)
    readonly: tuple[Path, ...] = field(default=())
    hidden: tuple[Path, ...] = field(default=())  # nofx's own paths (data dir, .env), masked if a bind shows them
    toolchains: Toolchains = field(default_factory=Toolchains)  # the operator's tools, read-only, on PATH
    egress: EgressPolicy = field(default_factory=EgressPolicy)  # how setup reaches out (NOFX_SETUP_EGRESS[_ALLOW])

    def __post_init__(self) -> None:
        if self.isolation not in ISOLATIONS:
            raise ValueError(f"NOFX_SANDBOX must be one of {', '.join(ISOLATIONS)}, not {self.isolation!r}")

    def setup_path(self, directory: Path) -> Path:
        """Where commands see a setup directory: one fixed path in the sandbox, the same on every worker (what
        setup made there may name it in scripts); its real path when the operator turned the sandbox off."""
        return SETUP_MOUNT if self.isolation == "bwrap" else directory

    async def run(
        self,
        command: str,
        workspace: Worktree,
        *,
        env_allowed: Iterable[str] = (),
        timeout_s: float,
        network: bool = False,
        env: Mapping[str, str] | None = None,
        max_output_bytes: int = 256 * 1024,
        setup: Path | None = None,
        setup_writable: bool = False,
    ) -> CommandResult:
        """Run `command` in the run's worktree; raises SandboxUnavailable (nothing ran) or WorkspaceTampered.

        `network=True` only for the setup step (through the egress proxy, as `egress` says); `setup` is the run's
        setup directory (at `setup_path`: writable
        for setup, read-only for the gates), and `env` variables nofx sets itself (never from repository config),
        on top of the scrubbed environment.
        """
        git = None
        if workspace.git_dir is not None:  # a local run's (no clone URL) repository config is the user's own
            git = GitLayout(workspace.git_dir, workspace.mirror, nofx_config=bool(workspace.clone_url))
        result = await run_command(
            command,
            cwd=workspace.path,
            git=git,
            env_allowed=env_allowed,
            timeout_s=timeout_s,
            limits=self.limits,
            isolation=self.isolation,
            network=network,
            egress=self.egress,
            readonly=(*self.readonly, *self.toolchains.binds),
            hidden=self.hidden,
            extra_env={"PATH": self.toolchains.search_path, **(env or {})},
            max_output_bytes=max_output_bytes,
            setup=setup,
            setup_writable=setup_writable,
        )
        return replace(result, output=public_paths(result.output, workspace.path, workspace.mirror))


def public_paths(text: str, worktree: Path, mirror: Path | None = None) -> str:
    """Output fit for GitHub: paths in the worktree relative to it, the server's own directories not named."""
    for root in dict.fromkeys((worktree, worktree.resolve())):
        text = text.replace(f"{root}/", "").replace(str(root), ".")
    for root in dict.fromkeys((mirror, mirror.resolve()) if mirror is not None else ()):
        text = text.replace(str(root), "<nofx git dir>")
    return text


def scrubbed_env(env_allowed: Iterable[str], source: Mapping[str, str] | None = None, *, home: Path) -> dict[str, str]:
    """A fresh environment: fixed basics plus the allowed names present in `source` (default: os.environ).

    The server's own variables (RESERVED_ENV, NOFX_*) and names that look like secrets (tokens, keys, passwords,
    URLs and proxies that may carry credentials) never pass, whatever the repo config says; HOME is always `home`.
    """
    source = os.environ if source is None else source
    env = {"PATH": SAFE_PATH, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TERM": "dumb", "CI": "true"}
    # No .pyc in the worktree: a repair that rewrites a module within the same second at the same size (`a + b`
    # -> `a * b`) would otherwise be judged by the stale bytecode of the failing attempt.
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    for name in env_allowed:
        if name != "HOME" and not _reserved(name) and name in source:
            env[name] = source[name]
    env["HOME"] = str(home)
    return env


async def run_command(
    command: str,
    *,
    cwd: Path,
    git: GitLayout | None = None,
    env_allowed: Iterable[str] = (),
    timeout_s: float,
    limits: Limits | None = None,
    isolation: str = "bwrap",
    network: bool = False,
    egress: EgressPolicy | None = None,
    max_output_bytes: int = 256 * 1024,
    writable: Iterable[Path] = (),
    readonly: Iterable[Path] = (),
    hidden: Iterable[Path] = (),
    extra_env: Mapping[str, str] | None = None,
    setup: Path | None = None,
    setup_writable: bool = False,
) -> CommandResult:
    """Run a shell command from the repo config in `cwd`; never raises for the command's own failure.

    `git` is what nofx recorded about the worktree (None for a plain directory). `network` is setup's: in bwrap
    it goes out through the egress proxy only, unless `egress` (default: the proxy, public hosts only) says
    `host` or `none`; without bwrap it is the host's, as everything is. Raises SandboxUnavailable when
    bwrap cannot work here (nothing ran), WorkspaceTampered when the worktree's git metadata is not nofx's (before:
    nothing ran; after: the command changed it), and OSError if `cwd` is missing. Cancelling the awaiting task
    kills the command with everything it started.
    """
    if isolation not in ISOLATIONS:
        raise ValueError(f"isolation must be one of {', '.join(ISOLATIONS)}, not {isolation!r}")
    limits = limits or Limits()
    cwd = await asyncio.to_thread(Path(cwd).resolve, strict=True)
    before = await asyncio.to_thread(git_fingerprint, cwd, git) if git is not None else None
    egress = egress or EgressPolicy()
    proxied = network and isolation == "bwrap" and egress.mode == "proxy"
    host_network = network and egress.mode == "host"
    proxy: EgressProxy | None
    async with egress_proxy(egress) if proxied else contextlib.nullcontext() as proxy:
        if proxy is not None:
            readonly = [*readonly, interpreter_prefix()]
        binds = _Binds(list(writable), list(readonly), list(hidden), setup, setup_writable, proxy)
        prefix = await asyncio.to_thread(_prefix, cwd, git, binds, isolation, host_network, limits)
        cgroup = await asyncio.to_thread(make_pids_cgroup, limits.processes)
        try:
            with _home_for(isolation) as home:
                result = await _execute(
                    [*prefix, *(proxy.wrapper() if proxy else []), "/bin/sh", "-c", command],
                    cwd=cwd,
                    grows=[cwd, *binds.writable, *([setup] if setup is not None and setup_writable else [])],
                    env={**scrubbed_env(env_allowed, home=home), **(extra_env or {})},
                    timeout_s=timeout_s,
                    limits=limits,
                    cgroup=cgroup,
                    max_output_bytes=max_output_bytes,
                    isolation=isolation,
                )
        finally:
            if cgroup is not None:
                await asyncio.to_thread(remove_cgroup, cgroup)
    if proxy is not None:
        log = proxy.log
        result = replace(
            result, output=result.output + log.summary(), reached=tuple(log.reached), refused=tuple(log.refused)
        )
    if git is not None and await asyncio.to_thread(git_fingerprint, cwd, git) != before:
        raise WorkspaceTampered(
            "the command changed the git files nofx relies on (the worktree's git dir or the repository's config); "
            "nofx refuses to run anything more in this run. Start a new run."
        )
    return result


@dataclass(frozen=True)
class _Binds:
    writable: list[Path]
    readonly: list[Path]
    hidden: list[Path]
    setup: Path | None = None  # mounted at SETUP_MOUNT
    setup_writable: bool = False
    egress: EgressProxy | None = None  # setup's proxy, its directory mounted at EGRESS_MOUNT


def _prefix(
    cwd: Path,
    git: GitLayout | None,
    binds: _Binds,
    isolation: str,
    network: bool,
    limits: Limits,
) -> list[str]:
    """The argv that puts the command into its sandbox, or SandboxUnavailable (blocking: it may probe bwrap)."""
    if isolation == "none":
        return []
    found = probe()
    if not found.ok or found.bwrap is None:
        raise SandboxUnavailable(f"no repository code ran: {found.reason}; {OPT_OUT_HINT}")
    layout = bwrap_args(
        cwd,
        git=git,
        writable=[path.resolve(strict=True) for path in binds.writable],
        readonly=_existing(binds.readonly),
        hidden=[Path(path).resolve() for path in binds.hidden],
        network=network,
        tmp_bytes=limits.tmp_bytes,
        setup=binds.setup.resolve(strict=True) if binds.setup is not None else None,
        setup_writable=binds.setup_writable,
        egress=binds.egress.directory if binds.egress is not None else None,
    )
    return [found.bwrap, *layout, "--"]


def _existing(paths: Iterable[Path]) -> list[Path]:
    """Tool directories that exist here, resolved (a missing PATH entry is not an error)."""
    found: list[Path] = []
    for path in paths:
        with contextlib.suppress(OSError):
            resolved = Path(path).resolve(strict=True)
            if resolved.is_dir() and resolved not in found:
                found.append(resolved)
    return found


# --- running -----------------------------------------------------------------------------------------------------


async def _execute(
    argv: list[str],
    *,
    cwd: Path,
    grows: list[Path],
    env: dict[str, str],
    timeout_s: float,
    limits: Limits,
    cgroup: Path | None,
    max_output_bytes: int,
    isolation: str,
) -> CommandResult:
    disk = await _DiskWatch.start(grows, limits)
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
                preexec_fn=functools.partial(apply_rlimits, limits, cgroup),  # setrlimit must run in the child
            )
        finally:
            os.close(write_fd)
        started = time.monotonic()
        buffer = _OutputBuffer(max_output_bytes)
        timed_out = over_disk = False
        exit_code: int | None = None
        try:
            loop = asyncio.get_running_loop()
            transport, protocol = await loop.connect_read_pipe(lambda: _Collector(buffer, loop), pipe)
            ended = asyncio.ensure_future(proc.wait())
            watch = asyncio.ensure_future(disk.exceeded())
            try:
                await asyncio.wait({ended, watch}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
                if ended.done():
                    exit_code = ended.result()
                else:  # out of time, or over the disk limit
                    timed_out, over_disk = not watch.done(), watch.done()
                    await _stop_group(proc)
                # A finished command's background children (`server &`) go too; gates must not leave daemons.
                _signal_group(proc.pid, signal.SIGKILL)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(protocol.closed), DRAIN_S)
            finally:
                watch.cancel()
                transport.close()
            over_disk = over_disk or await disk.over()
        except BaseException:  # cancelled (the run was cancelled) or failed: nothing of the command may outlive us
            _signal_group(proc.pid, signal.SIGKILL)
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(proc.wait()), KILL_GRACE_S)  # reap it while the loop runs
            raise
    return CommandResult(
        exit_code=None if timed_out or over_disk else exit_code,
        output=buffer.text(),
        truncated=buffer.truncated,
        duration_s=time.monotonic() - started,
        timed_out=timed_out,
        isolation=isolation,
        over_disk=over_disk,
    )


class _DiskWatch:
    """How much the directories the command may write (the worktree; setup's directory, kept on the worker's disk
    afterwards) grew since it started, together, against `limits.disk_bytes` and `limits.files`."""

    def __init__(self, paths: list[Path], limits: Limits, baseline: tuple[int, int]) -> None:
        self.paths, self.limits, self.baseline = paths, limits, baseline

    @classmethod
    async def start(cls, paths: list[Path], limits: Limits) -> _DiskWatch:
        return cls(paths, limits, await asyncio.to_thread(_used, paths))

    async def over(self) -> bool:
        used, files = await asyncio.to_thread(_used, self.paths)
        return used - self.baseline[0] > self.limits.disk_bytes or files - self.baseline[1] > self.limits.files

    async def exceeded(self) -> None:
        """Return (only) once the limit is exceeded."""
        while True:
            if await self.over():
                return
            await asyncio.sleep(DISK_POLL_S)


def _used(paths: list[Path]) -> tuple[int, int]:
    found = [usage(path) for path in paths]
    return sum(used for used, _ in found), sum(files for _, files in found)


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
    return upper in RESERVED_ENV or upper.startswith(RESERVED_ENV_PREFIXES) or bool(_SECRET_NAME.search(upper))


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
