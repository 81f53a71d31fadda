"""`setup` results kept across runs: on each worker's disk, and in shared storage so a step on any worker has them.

A result is a directory per repository and key (`<data dir>/setup/<installation>/~id/<repository id>/<key>/`, with
DONE_MARKER once setup finished in it). Commands see it at one fixed path in the sandbox (`Sandbox.setup_path`),
so a venv made on one worker, whose scripts name their interpreter by absolute path, works on every other. (With
NOFX_SANDBOX=none they see its real path: such scripts then work only where the data dir has the same path.)

After a setup runs, its directory goes to the blob store as a gzipped tar (`setup/<installation>/~id/<repository
id>/<key>.tar.gz`) unless the archive is over `share_bytes`; a worker whose disk lacks the directory when a later step
of the run needs it, or when a later run's setup has the same key, unpacks it from there. Both places keep a repository's `keep` most recently used keys and at
most `total_bytes` in all; the oldest go first (after each new setup, and on the workers' sweeper timer), but never
a result that an unfinished run uses (`in_use`).

The directory is the repository's code's work: nofx on the host never follows a link in it (the marker is read
and written without following one), packing stops at the limits, and unpacking admits only what packing makes.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import io
import json
import logging
import os
import posixpath
import re
import secrets
import shutil
import stat
import tarfile
import tempfile
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from bot.blobs import BlobError, Blobs
from bot.models import Run, Step
from bot.settings import SetupCacheLimits
from bot.workspace.limits import disk_usage

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

log = logging.getLogger(__name__)
DONE_MARKER = ".nofx-setup.json"
MAX_MARKER_BYTES = 64 * 1024  # a record nofx wrote is a few hundred bytes
MAX_MEMBERS = 500_000  # files, directories and links in one result (a large node_modules has ~100,000)
PREFIX = "setup/"
UNPACKING = ".unpack-"  # in the name of a directory an archive is being unpacked into, not yet a result
T = TypeVar("T")


@dataclass(frozen=True)
class RepositorySetups:
    """`StepContext.setup_results`: one repository's setup results on this worker, filled from the shared store."""

    directory: Path  # `repository_dir`
    run: Run
    blobs: Blobs | None = None
    limits: SetupCacheLimits = field(default_factory=SetupCacheLimits)

    def path(self, key: str) -> Path:
        return self.directory / key

    async def ensure(self, key: str) -> bool:
        """Whether this worker has the result under `key` now, unpacked from the shared store if its disk lacked
        it (a step using it fails with `missing` otherwise). Raises BlobError when the store cannot be read."""
        async with locked(self.path(key)):
            return await self._reused(key) is not None

    async def reuse_or_make(
        self, key: str, make: Callable[[Path], Awaitable[dict[str, object]]]
    ) -> tuple[dict[str, object], bool]:
        directory = self.path(key)
        async with locked(directory):
            try:
                record = await self._reused(key)
            except BlobError as exc:  # the store is an aid: setting up again is slower, not wrong
                log.warning("setup %s not fetched from the shared store: %s", key[:12], exc)
                record = None
            if record is not None:
                return record, True
            await asyncio.to_thread(_fresh, directory)
            try:
                record = await make(directory)
            except BaseException:
                await asyncio.to_thread(shutil.rmtree, directory, True)
                raise
            await asyncio.to_thread(_mark_done, directory, record)
            return record, False

    async def _reused(self, key: str) -> dict[str, object] | None:
        """The finished result's record, from this disk or else unpacked from the store, marked as just used; the
        caller holds the key's lock."""
        directory = self.path(key)
        record = await asyncio.to_thread(done, directory)
        if record is None and self.blobs is not None:
            data = await asyncio.to_thread(self.blobs.get, blob_key(self.run, key))
            try:
                if data is not None:
                    await asyncio.to_thread(_unpack, data, directory, self.limits)
                    log.info("setup %s of %s unpacked from the shared store", key[:12], self.run.repository)
            except (tarfile.TarError, EOFError, zlib.error) as exc:  # cut short, or not made by nofx: as if absent
                log.warning("setup %s of %s: its archive is unusable: %s", key[:12], self.run.repository, exc)
            record = await asyncio.to_thread(done, directory)
        if record is not None:
            await asyncio.to_thread(touch, directory)
        return record


def repository_dir(root: Path, run: Run) -> Path:
    """Where one repository's setup results are kept under the worker's setup root."""
    return root / _repository_path(run)


def blob_key(run: Run, key: str) -> str:
    return f"{PREFIX}{_repository_path(run)}/{key}.tar.gz"


def _repository_path(run: Run) -> str:
    """`<installation>/<owner>/<name>`, three directory names that only this repository's results ever share: by
    GitHub's id of the repository when nofx knows it (`~id/<id>`: no owner is named `~id`), since its name may
    have been another repository's (renamed, transferred, made again) whose setup would otherwise be reused."""
    if run.repository_id is not None:
        return f"{run.installation_id}/~id/{run.repository_id}"
    owner, _, name = run.repository.partition("/")
    return f"{run.installation_id}/{_safe(owner)}/{_safe(name)}"


def run_setup_key(earlier: Mapping[str, Step]) -> str | None:
    """The key of the setup the run's `setup` step made or reused, if the run has one."""
    for step in earlier.values():
        output = step.output if isinstance(step.output, dict) else {}
        if step.tool == "setup" and isinstance(output.get("key"), str) and re.fullmatch(r"[0-9a-f]+", output["key"]):
            return str(output["key"])
    return None


def in_use(root: Path, setups: Iterable[tuple[Run, Step]]) -> set[Path]:
    """The result directories that the `setup` steps of unfinished runs made or reused (`queries.setup_steps_in_use`):
    those runs' later steps, on any worker, need them."""
    keys = ((run, run_setup_key({step.name: step})) for run, step in setups)
    return {repository_dir(root, run) / key for run, key in keys if key is not None}


def done(directory: Path) -> dict[str, object] | None:
    """The record of a finished setup in `directory`, or None when there is none (or it is unreadable). Read
    without following a symlink: the directory is the repository's, and its marker could name a host file."""
    try:
        handle = os.open(directory / DONE_MARKER, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(handle, "rb") as marker:
        if not stat.S_ISREG(os.fstat(handle).st_mode):
            return None
        text = marker.read(MAX_MARKER_BYTES + 1)
    try:
        record = json.loads(text) if len(text) <= MAX_MARKER_BYTES else None
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def touch(directory: Path) -> None:
    """Mark the result as just used: eviction goes by the marker's modification time."""
    with contextlib.suppress(OSError):
        os.utime(directory / DONE_MARKER, follow_symlinks=False)


def _mark_done(directory: Path, record: dict[str, object]) -> None:
    """Write the marker as a new file of nofx's own: whatever setup left under its name goes first (a symlink to
    a host file, a fifo, a directory), so nothing is ever written through it."""
    marker = directory / DONE_MARKER
    if marker.is_dir() and not marker.is_symlink():
        shutil.rmtree(marker)
    marker.unlink(missing_ok=True)
    handle = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        out.write(json.dumps(record))


@contextlib.asynccontextmanager
async def locked(directory: Path) -> AsyncIterator[None]:
    """An exclusive lock on one key across the worker's processes, so a key is never made or unpacked twice at once."""
    lock = directory.with_name(directory.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as handle:  # closing the file releases the lock
        await asyncio.to_thread(fcntl.flock, handle.fileno(), fcntl.LOCK_EX)
        yield


async def share(blobs: Blobs, run: Run, directory: Path, limits: SetupCacheLimits) -> str:
    """Put the finished setup directory in the shared store; what happened, in words for the step output."""
    with tempfile.TemporaryDirectory(prefix="nofx-setup-") as tmp:
        archive = Path(tmp) / "setup.tar.gz"
        try:
            await asyncio.to_thread(_pack, directory, archive, limits)
        except _Refused as exc:
            return f"not shared: it is {exc}; a later step on another worker fails rather than run without it"
        size = archive.stat().st_size
        data = await asyncio.to_thread(archive.read_bytes)
    await asyncio.to_thread(blobs.put, blob_key(run, directory.name), data)
    return f"shared with the other workers ({_mib(size)})"


async def is_shared(blobs: Blobs, run: Run, key: str) -> bool:
    """Whether the shared store holds the result (it may have been evicted there while this worker kept it)."""
    return any(name == blob_key(run, key) for name, _, _ in await asyncio.to_thread(blobs.list, blob_key(run, key)))


def missing(key: str) -> str:
    """Why a step cannot use the run's setup result, and what to do."""
    return (
        f"the run's setup result (key {key[:12]}) is neither on this worker nor in the shared store: it was over "
        "NOFX_SETUP_SHARE_MB (the operator may raise it), or evicted since (start the run again to set up afresh)"
    )


async def keep(
    blobs: Blobs | None,
    root: Path,
    run: Run,
    output: dict[str, object],
    limits: SetupCacheLimits,
    used: Collection[Path] = (),
) -> None:
    """After a setup step: share a result just made (or one reused here that the store lacks), then evict the
    oldest but those `used` by unfinished runs (`in_use`). Notes in `output["shared"]` whether the other workers
    can have it."""
    key = output.get("key")
    if not isinstance(key, str):
        return
    directory = repository_dir(root, run) / key
    made = output.get("cached") is not True
    try:
        if blobs is not None and (made or not await is_shared(blobs, run, key)):
            output["shared"] = await share(blobs, run, directory, limits)
    except BlobError as exc:  # the run goes on here; a step elsewhere will say the result is missing
        log.warning("setup %s not shared: %s", key[:12], exc)
        output["shared"] = "not shared: the shared store refused it"
    if made:
        try:
            await evict(blobs, root, directory, limits, used)
        except OSError as exc:  # another process removed a result meanwhile: trimmed after the next setup
            log.warning("setup cache: eviction stopped: %s", exc)


async def evict(
    blobs: Blobs | None, root: Path, current: Path, limits: SetupCacheLimits, used: Collection[Path] = ()
) -> list[str]:
    """`trim` after a setup step, keeping `current` (the result the run uses) and those `used` by unfinished runs."""
    return await asyncio.to_thread(trim, blobs, root, limits, {current, *used})


def trim(blobs: Blobs | None, root: Path, limits: SetupCacheLimits, kept: Collection[Path]) -> list[str]:
    """Drop the oldest results beyond `limits`, never one `kept`: each repository's keys past `keep`, then whatever
    is over `total_bytes`, on this worker's disk and in the shared store. Returns what went, for the log."""
    gone = _evict_disk(root, set(kept), limits)
    if blobs is not None:
        gone += _evict_shared(blobs, {f"{PREFIX}{d.relative_to(root).as_posix()}.tar.gz" for d in kept}, limits)
    if gone:
        log.info("setup cache: evicted %s", ", ".join(gone))
    return gone


def _evict_disk(root: Path, kept: set[Path], limits: SetupCacheLimits) -> list[str]:
    markers = [m for m in root.glob(f"*/*/*/*/{DONE_MARKER}") if UNPACKING not in m.parent.name]
    found = [d for _, d in sorted(((m.lstat().st_mtime, m.parent) for m in markers), reverse=True)]
    ordered = [d for d in found if d in kept] + [d for d in found if d not in kept]
    doomed = _beyond([(d, disk_usage(d)) for d in ordered], lambda d: d.parent, kept.__contains__, limits)
    for directory in doomed:
        shutil.rmtree(directory, ignore_errors=True)
        directory.with_name(directory.name + ".lock").unlink(missing_ok=True)
    return [f"{d.relative_to(root)} (disk)" for d in doomed]


def _evict_shared(blobs: Blobs, kept: set[str], limits: SetupCacheLimits) -> list[str]:
    """By when each archive was stored, newest first (an archive over `share_bytes` never was)."""
    try:
        listed = sorted(blobs.list(PREFIX), key=lambda entry: entry[2], reverse=True)
        entries = [(n, s) for n, s, _ in listed if n in kept] + [(n, s) for n, s, _ in listed if n not in kept]
        doomed = _beyond(entries, lambda name: name.rsplit("/", 1)[0], kept.__contains__, limits)
        for name in doomed:
            blobs.delete(name)
    except BlobError as exc:  # the cache is an aid: a store that refuses now is trimmed the next time
        log.warning("setup cache: the shared store could not be trimmed: %s", exc)
        return []
    return [f"{name} (shared)" for name in doomed]


def _beyond(
    entries: list[tuple[T, int]], repository: Callable[[T], object], kept: Callable[[T], bool], limits: SetupCacheLimits
) -> list[T]:
    """Of (entry, size) pairs, those `kept` first, then the most recent first: those past their repository's
    `keep`, then those past `total_bytes` counted in that order; never one `kept`."""
    doomed: list[T] = []
    total = 0
    seen: Counter[object] = Counter()
    for entry, size in entries:
        seen[repository(entry)] += 1
        if not kept(entry) and (seen[repository(entry)] > limits.keep or total + size > limits.total_bytes):
            doomed.append(entry)
        else:
            total += size
    return doomed


def _fresh(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)


def _pack(directory: Path, archive: Path, limits: SetupCacheLimits) -> None:
    """Stops with _Refused as soon as the archive passes `share_bytes`, or what it holds `total_bytes` or
    MAX_MEMBERS: a huge directory is never written out whole first and measured after."""
    admitted = _Admission(limits)

    def counted(member: tarfile.TarInfo) -> tarfile.TarInfo | None:
        return None if member.isdev() else admitted.count(member)

    # Speed over size (compresslevel 1): a venv is mostly compiled code.
    with (
        _CappedFile(archive, limits.share_bytes) as out,
        tarfile.open(fileobj=out, mode="w:gz", compresslevel=1) as tar,
    ):
        tar.add(directory, arcname=".", filter=counted)


def _unpack(data: bytes, directory: Path, limits: SetupCacheLimits) -> None:
    """Into a fresh sibling first, then renamed into place: a worker killed halfway leaves no half directory."""
    staging = directory.with_name(f"{directory.name}{UNPACKING}{secrets.token_hex(4)}")
    staging.mkdir(parents=True)
    try:
        with tempfile.TemporaryFile() as spool:
            spool.write(data)
            spool.seek(0)
            with tarfile.open(fileobj=spool, mode="r|gz") as tar:
                tar.extractall(staging, filter=_Admission(limits).extract)  # noqa: S202 - see _Admission
        shutil.rmtree(directory, ignore_errors=True)  # a setup that failed halfway here, without its marker
        staging.rename(directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class _Refused(tarfile.TarError):
    """An archive over the limits, or one nofx's packing cannot have made."""


class _CappedFile(io.FileIO):
    """A file that refuses to grow past `cap` bytes."""

    def __init__(self, path: Path, cap: int) -> None:
        super().__init__(path, "wb")
        self.cap = cap

    def write(self, data: ReadableBuffer, /) -> int:
        if self.tell() + memoryview(data).nbytes > self.cap:
            raise _Refused(f"over NOFX_SETUP_SHARE_MB ({_mib(self.cap)}) packed")
        return super().write(data)


@dataclass
class _Admission:
    """Member by member, as they stream: the sizes the archive gives are the bytes extraction writes, so their
    running total (and the count) is checked before each is written, not read from headers up front.

    On unpacking, only what `_pack` makes passes: directories, regular files, symlinks, and hard links to a
    regular file unpacked before; each under a directory unpacked before, never twice. So no member is ever
    written through a symlink (what a symlink names is for the sandbox to resolve, never the host), and a hard
    link cannot reach a file outside. tarfile's `tar` filter then drops setuid bits and group/world write.
    Device files and fifos are skipped (a sandboxed setup cannot make them)."""

    limits: SetupCacheLimits
    members: int = 0
    size: int = 0
    directories: set[str] = field(default_factory=lambda: {"."})
    files: set[str] = field(default_factory=set)
    names: set[str] = field(default_factory=set)

    def count(self, member: tarfile.TarInfo) -> tarfile.TarInfo:
        self.members += 1
        self.size += member.size if member.isreg() else 0
        if self.members > MAX_MEMBERS:
            raise _Refused(f"more than {MAX_MEMBERS} files")
        if self.size > self.limits.total_bytes:
            raise _Refused(f"over NOFX_SETUP_CACHE_MB ({_mib(self.limits.total_bytes)}) unpacked")
        return member

    def extract(self, member: tarfile.TarInfo, destination: str) -> tarfile.TarInfo | None:
        if member.isdev():
            return None
        self.count(member)
        name = posixpath.normpath(member.name)
        if name == "." and member.isdir():
            return None  # the staging directory itself, made by nofx
        parent = posixpath.dirname(name) or "."
        if member.name.startswith("/") or ".." in name.split("/") or parent not in self.directories:
            raise _Refused(f"{member.name!r} is not under a directory of the archive")
        if name in self.names or member.issparse():
            raise _Refused(f"{member.name!r} is not what nofx packs")
        if member.islnk() and posixpath.normpath(member.linkname) not in self.files:
            raise _Refused(f"{member.name!r} links to {member.linkname!r}, not a file of the archive")
        if not (member.isdir() or member.isreg() or member.issym() or member.islnk()):
            raise _Refused(f"{member.name!r} is not what nofx packs")
        self.names.add(name)
        if member.isdir():
            self.directories.add(name)
        elif member.isreg():
            self.files.add(name)
        return tarfile.tar_filter(member, destination)


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def _safe(name: str) -> str:
    """A name as one directory name, never the same as another name's: as it is when that is safe, else spelled
    in hex after a `~` (no GitHub name has one). Stripping a leading dot made `.github` and `github` one."""
    return name if re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]*", name) else "~" + name.encode().hex()
