"""Per-installation git mirrors and per-run worktrees: clone once, fetch before each run, token only in git's env.

Layout under `<data>/workspaces` (the `root`):

    <installation>/<owner>/<repo>/mirror.git   bare mirror; upstream branches live in refs/remotes/origin/*
    <installation>/<owner>/<repo>/mirror.lock  flock held around everything that writes the mirror's refs or admin dir
    <installation>/<owner>/<repo>/last-used    mtime = when a run last prepared from it (LRU eviction)
    ../worktrees/<run_id>                      one run's checkout on `nofx/<issue>-<slug>`

Why a bare repository with `+refs/heads/*:refs/remotes/origin/*` and not `git clone --mirror`: a mirror maps
upstream branches onto its own `refs/heads/*`, so a fetch would try to move (or, with --prune, delete) the branch a
run has checked out, and `remote.origin.mirror=true` turns every push into "push all refs". Keeping upstream in
`refs/remotes/origin/*` leaves `refs/heads/*` to the runs' own branches.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import json
import logging
import os
import re
import shlex
import shutil
import signal
import time
import unicodedata
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

TokenProvider = Callable[[], Awaitable[str]]

TOKEN_USER = "x-access-token"  # noqa: S105 - the user name GitHub wants, not a secret
GIT_TIMEOUT_S = 900.0
SLUG_MAX = 40
GC_AUTO_THRESHOLD = 6700  # git's own default for `gc.auto`, applied only where we run gc
UPSTREAM_REFSPECS = ("+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*")
RUN_META = "nofx-run.json"  # in the worktree's admin dir inside the mirror, out of reach of the checkout

_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")
_RUN_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")


class GitError(Exception):
    """A git command failed; the message names the command and ends with git's own words, never a token."""

    def __init__(self, args: Sequence[str], returncode: int | None, stderr: str, *, summary: str | None = None) -> None:
        self.command = shlex.join(["git", *args])
        self.returncode = returncode
        self.stderr = stderr
        tail = stderr.strip()[-2000:]
        message = summary or f"`{self.command}` failed (exit {returncode})"
        super().__init__(f"{message}: {tail}" if tail else message)


# ---------------------------------------------------------------- names and environment


def branch_name(issue_number: int, request: str) -> str:
    """`nofx/<issue>-<slug>`: readable in GitHub's branch list, always a valid ref, whatever the request says."""
    if issue_number < 0:
        raise ValueError(f"issue number must not be negative: {issue_number}")
    ascii_text = unicodedata.normalize("NFKD", request).encode("ascii", "ignore").decode().lower()
    slug = ""
    for word in re.findall(r"[a-z0-9]+", ascii_text):
        candidate = f"{slug}-{word}" if slug else word
        if len(candidate) > SLUG_MAX:
            if not slug:  # one very long first word: cut it rather than lose it
                slug = word[:SLUG_MAX]
            break
        slug = candidate
    return f"nofx/{issue_number}-{slug or 'change'}"


def authorization_header(token: str) -> str:
    """The header GitHub accepts for git over HTTPS with an installation token (what actions/checkout sends)."""
    credential = base64.b64encode(f"{TOKEN_USER}:{token}".encode()).decode()
    return f"AUTHORIZATION: basic {credential}"


def git_env(token: str | None, *, url: str | None = None) -> dict[str, str]:
    """A complete environment for git: nothing inherited but PATH and HOME, no prompts, no hooks, token as a header.

    With `url`, the header is scoped to that URL's scheme, host and port (`http.<url>.extraheader`), so a redirect,
    an `insteadOf` rewrite or a submodule pointing at another host never receives the token.
    """
    config: list[tuple[str, str]] = [
        # Code from the repository (gates) can write into the mirror; none of it may run when git runs for us.
        ("core.hooksPath", os.devnull),
        ("core.fsmonitor", "false"),
        ("core.askPass", ""),
        ("credential.helper", ""),
        # No gc behind our back (a commit in a worktree would start one): it runs after fetches, under the lock.
        ("gc.auto", "0"),
        ("gc.autoDetach", "false"),
        ("maintenance.auto", "false"),
        # Checking out thousands of files is mostly syscalls; parallel workers roughly halve it.
        ("checkout.workers", "0"),
        ("init.defaultBranch", "main"),
        ("advice.detachedHead", "false"),
    ]
    if token:
        scope = f"http.{_origin(url)}.extraheader" if url else "http.extraheader"
        config += [(scope, ""), (scope, authorization_header(token))]  # the empty value drops inherited headers
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": os.environ.get("HOME", "/nonexistent"),
        "LC_ALL": "C",  # stable, English messages
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_ALLOW_PROTOCOL": "http:https",
        # Abort a transfer that stalls below 1 kB/s for a minute instead of holding the lock forever.
        "GIT_HTTP_LOW_SPEED_LIMIT": "1000",
        "GIT_HTTP_LOW_SPEED_TIME": "60",
        "GIT_CONFIG_COUNT": str(len(config)),
    }
    for i, (key, value) in enumerate(config):
        env[f"GIT_CONFIG_KEY_{i}"] = key
        env[f"GIT_CONFIG_VALUE_{i}"] = value
    return env


def _origin(url: str | None) -> str:
    parts = urlsplit(url or "")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) clone URL: {url!r}")
    if parts.username or parts.password:
        raise ValueError("the clone URL must not carry credentials")
    return f"{parts.scheme}://{parts.netloc}/"


def _secrets(token: str | None) -> tuple[str, ...]:
    if not token:
        return ()
    return (authorization_header(token).split(" ", 2)[2], token)


def _redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "[redacted]")
    return text


# ---------------------------------------------------------------- running git


async def _exec(
    args: Sequence[str],
    *,
    env: dict[str, str],
    cwd: Path | None = None,
    secrets: Sequence[str] = (),
    input: bytes | None = None,
    timeout_s: float = GIT_TIMEOUT_S,
) -> tuple[int, str, str]:
    """Run git, kill its whole process group on timeout or cancellation; output comes back redacted."""
    process = await asyncio.create_subprocess_exec(
        "git",
        *args,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # git's helpers (remote-http, pack-objects) die with it
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(input), timeout_s)
    except BaseException as exc:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        if isinstance(exc, TimeoutError):
            raise GitError(
                args, None, "", summary=f"`{shlex.join(['git', *args])}` timed out after {timeout_s}s"
            ) from None
        raise
    stdout = _redact(out.decode(errors="replace"), secrets)
    stderr = _redact(err.decode(errors="replace"), secrets)
    assert process.returncode is not None
    return process.returncode, stdout, stderr


async def _git(
    *args: str,
    token: str | None = None,
    url: str | None = None,
    cwd: Path | None = None,
    extra_env: dict[str, str] | None = None,
    input: bytes | None = None,
    check: bool = True,
) -> str:
    env = {**git_env(token, url=url), **(extra_env or {})}
    code, out, err = await _exec(args, env=env, cwd=cwd, secrets=_secrets(token), input=input)
    if check and code != 0:
        raise GitError(args, code, err)
    return out


async def _succeeds(*args: str, cwd: Path | None = None) -> str | None:
    """stdout of a local query that may legitimately fail (a ref that does not exist), else None."""
    code, out, _ = await _exec(args, env=git_env(None), cwd=cwd)
    return out.strip() if code == 0 else None


# ---------------------------------------------------------------- one run's worktree


@dataclass
class Worktree:
    """One run's checkout. Git runs here with GIT_DIR pinned to its admin dir, ignoring the checkout's `.git` file."""

    path: Path
    branch: str
    base_ref: str
    base_sha: str
    mirror: Path
    run_id: str
    clone_url: str = ""
    start_sha: str = ""  # where the branch started: base_sha, or the PR branch's tip for a follow-up run
    git_dir: Path | None = None

    def __post_init__(self) -> None:
        self.start_sha = self.start_sha or self.base_sha

    async def git(self, *args: str, token: str | None = None, check: bool = True) -> str:
        """Any git command in the worktree; `token` only for commands that talk to the origin."""
        return await self._git(*args, token=token, check=check)

    async def head_sha(self) -> str:
        return (await self._git("rev-parse", "HEAD")).strip()

    async def changed_files(self) -> list[str]:
        """Paths that differ from the branch point with base (committed, staged, unstaged, untracked; deletions too)."""
        since = (await self._git("merge-base", self.base_sha, "HEAD", check=False)).strip() or self.base_sha
        tracked = await self._git("diff", "--name-only", "--no-renames", "-z", since)
        untracked = await self._git("ls-files", "--others", "--exclude-standard", "-z")
        return sorted({name for name in (tracked + untracked).split("\0") if name})

    async def commit_all(
        self, message: str, *, author_name: str, author_email: str, paths: list[str] | None = None
    ) -> str | None:
        """Stage `paths` (default: everything) and commit as the author (also the committer); None if unchanged.

        Passing the paths a run wrote keeps by-products of the gates (caches, build output) out of the commit.
        """
        if paths is None:
            await self._git("add", "--all")
        elif paths:
            await self._git("add", "--all", "--", *paths)
        if not (await self._git("diff", "--cached", "--name-only")).strip():
            return None  # nothing staged (changes outside `paths` are deliberately left out)
        identity = {
            "GIT_AUTHOR_NAME": author_name,
            "GIT_AUTHOR_EMAIL": author_email,
            "GIT_COMMITTER_NAME": author_name,
            "GIT_COMMITTER_EMAIL": author_email,
        }
        await self._git(
            "-c",
            "commit.gpgSign=false",
            "commit",
            "--quiet",
            "--no-verify",
            "--file=-",
            extra_env=identity,
            input=message.encode(),
        )
        return await self.head_sha()

    async def push(self, token: str, *, force: bool = False, branch: str | None = None) -> None:
        """Push HEAD to `refs/heads/<branch>` at the clone URL itself, so a rewritten remote in config cannot divert it."""
        if not self.clone_url:
            raise ValueError("this worktree has no clone URL to push to")
        refspec = f"{'+' if force else ''}HEAD:refs/heads/{branch or self.branch}"
        await self._git("push", "--quiet", "--no-verify", "--porcelain", self.clone_url, refspec, token=token)

    async def _git(
        self,
        *args: str,
        token: str | None = None,
        extra_env: dict[str, str] | None = None,
        input: bytes | None = None,
        check: bool = True,
    ) -> str:
        # GIT_DIR pins the admin dir in the mirror: a `.git` file rewritten by the checkout's code is ignored.
        pinned = {"GIT_DIR": str(self.git_dir), "GIT_WORK_TREE": str(self.path)} if self.git_dir else {}
        return await _git(
            *args,
            token=token,
            url=self.clone_url or None,
            cwd=self.path,
            extra_env={**pinned, **(extra_env or {})},
            input=input,
            check=check,
        )


# ---------------------------------------------------------------- the workspaces of all installations


class Workspaces:
    """Mirrors per installation and repository, worktrees per run, and their upkeep (reap, evict)."""

    def __init__(
        self,
        root: Path,
        *,
        disk_budget_bytes: int = 20 * 2**30,
        clock: Callable[[], float] = time.time,
        worktrees: Path | None = None,
    ) -> None:
        # Resolved, because git reports worktree paths with symlinks resolved and we compare against them.
        self.root = Path(root).resolve()
        self.worktrees = Path(worktrees).resolve() if worktrees else self.root.parent / "worktrees"
        self.disk_budget_bytes = disk_budget_bytes
        self.clock = clock

    def mirror_path(self, installation_id: int, owner: str, repo: str) -> Path:
        """Where the mirror lives; GitHub names are case-insensitive, so the path is lower case."""
        for name in (owner, repo):
            if not _NAME.fullmatch(name) or name in (".", ".."):
                raise ValueError(f"not a GitHub owner or repository name: {name!r}")
        return self.root / str(int(installation_id)) / owner.lower() / repo.lower() / "mirror.git"

    async def prepare(
        self,
        *,
        installation_id: int,
        owner: str,
        repo: str,
        clone_url: str,
        token: TokenProvider,
        run_id: str,
        branch: str,
        base_ref: str,
        reuse_remote_branch: bool = False,
    ) -> Worktree:
        """The run's worktree on `branch`, from a freshly fetched `base_ref` (or the branch's remote tip when reusing).

        Idempotent per run: when the run already has its worktree (a later step, a redelivered job) it is returned
        as it is, without fetching. The mirror is cloned only when missing.
        """
        mirror = self.mirror_path(installation_id, owner, repo)
        _origin(clone_url)
        if not _RUN_ID.fullmatch(run_id):
            raise ValueError(f"run id must be a plain file name: {run_id!r}")
        if base_ref.startswith("-") or await _succeeds("check-ref-format", "--branch", branch) != branch:
            raise ValueError(f"not a usable branch or base: {branch!r}, {base_ref!r}")
        path = self.worktrees / run_id
        async with _locked(mirror.parent):
            self._touch(mirror.parent)
            existing = await self._existing(mirror, path)
            if existing is not None:
                if (existing.branch, existing.clone_url) != (branch, clone_url):
                    raise ValueError(
                        f"run {run_id} already has a worktree on {existing.branch} of {existing.clone_url}"
                    )
                return existing
            await self._refresh(mirror, clone_url, await token())
            base_sha = await _resolve(mirror, base_ref)
            if base_sha is None:
                summary = f"{owner}/{repo} has no {base_ref!r} to start from"
                raise GitError(["rev-parse", base_ref], None, "", summary=summary)
            start_sha = base_sha
            if reuse_remote_branch:
                start_sha = await _resolve(mirror, f"refs/remotes/origin/{branch}") or base_sha
            worktree = Worktree(
                path=path,
                branch=branch,
                base_ref=base_ref,
                base_sha=base_sha,
                mirror=mirror,
                run_id=run_id,
                clone_url=clone_url,
                start_sha=start_sha,
            )
            await self._add(worktree)
            return worktree

    async def remove(self, worktree: Worktree) -> None:
        """Delete the run's checkout, its registration and its local branch; safe to call twice."""
        async with _locked(worktree.mirror.parent):
            await self._drop(worktree.mirror, worktree.path, worktree.branch)

    async def reap(self, active_run_ids: set[str]) -> list[Path]:
        """Remove every worktree whose run is not active (include runs being prepared!), and interrupted clones."""
        removed: list[Path] = []
        for repo_dir in self._repo_dirs():
            mirror = repo_dir / "mirror.git"
            async with _locked(repo_dir):
                for leftover in repo_dir.glob("mirror.git.*"):
                    await asyncio.to_thread(shutil.rmtree, leftover, ignore_errors=True)
                if not mirror.exists():
                    continue
                await _git("worktree", "prune", cwd=mirror)
                for path, branch in await _worktrees(mirror):
                    if path.parent == self.worktrees and path.name in active_run_ids:
                        continue
                    await self._drop(mirror, path, branch)
                    removed.append(path)
        if self.worktrees.is_dir():
            for path in self.worktrees.iterdir():
                if path.name not in active_run_ids and path not in removed:
                    await asyncio.to_thread(_remove_path, path)
                    removed.append(path)
        return removed

    async def evict(self) -> list[Path]:
        """Delete least-recently-used mirrors without worktrees until the total fits the disk budget."""
        mirrors = [d / "mirror.git" for d in self._repo_dirs() if (d / "mirror.git").is_dir()]
        sizes = {m: await asyncio.to_thread(_disk_usage, m) for m in mirrors}
        total = sum(sizes.values())
        evicted: list[Path] = []
        for mirror in sorted(mirrors, key=lambda m: _last_used(m.parent)):
            if total <= self.disk_budget_bytes:
                break
            async with _locked(mirror.parent, wait=False) as held:
                if not held or not mirror.exists():
                    continue  # busy: someone is fetching or preparing, so it is in use
                await _git("worktree", "prune", cwd=mirror)
                if await _worktrees(mirror):
                    continue
                doomed = mirror.with_name(f"mirror.git.evicting-{uuid.uuid4().hex[:8]}")
                mirror.rename(doomed)  # atomic: no half-deleted mirror is ever seen at the real path
                await asyncio.to_thread(shutil.rmtree, doomed, ignore_errors=True)
            total -= sizes[mirror]
            evicted.append(mirror)
            log.info("evicted %s (%d bytes)", mirror, sizes[mirror])
        return evicted

    # ------------------------------------------------------------ helpers (callers hold the repo's lock)

    async def _clone(self, mirror: Path, clone_url: str, token: str) -> None:
        """Init + fetch into a temporary name, then rename: a crash never leaves a half clone at `mirror`."""
        partial = mirror.with_name(f"mirror.git.tmp-{uuid.uuid4().hex[:8]}")
        try:
            await _git("init", "--quiet", "--bare", str(partial))
            await _git("config", "remote.origin.url", clone_url, cwd=partial)
            for refspec in UPSTREAM_REFSPECS:
                await _git("config", "--add", "remote.origin.fetch", refspec, cwd=partial)
            await self._fetch(partial, clone_url, token)
            partial.rename(mirror)
        finally:
            if partial.exists():
                await asyncio.to_thread(shutil.rmtree, partial, ignore_errors=True)

    async def _fetch(self, mirror: Path, clone_url: str, token: str) -> None:
        # The explicit URL, not "origin": config in the mirror is writable by the checkout's code.
        await _git(
            "fetch",
            "--quiet",
            "--prune",
            "--no-tags",
            clone_url,
            *UPSTREAM_REFSPECS,
            token=token,
            url=clone_url,
            cwd=mirror,
        )

    async def _refresh(self, mirror: Path, clone_url: str, token: str) -> None:
        """Fetch into the mirror, or clone it when it is missing (first run, or evicted)."""
        started = time.monotonic()
        if mirror.exists():  # noqa: ASYNC240 - a stat, cheaper than a thread hop
            await _git("config", "remote.origin.url", clone_url, cwd=mirror)
            await self._fetch(mirror, clone_url, token)
            await _git("-c", f"gc.auto={GC_AUTO_THRESHOLD}", "gc", "--auto", "--quiet", cwd=mirror)
            verb = "fetched"
        else:
            await self._clone(mirror, clone_url, token)
            verb = "cloned"
        log.info("%s %s in %.2fs", verb, clone_url, time.monotonic() - started)

    async def _add(self, worktree: Worktree) -> None:
        """Check the run's branch out at its start; the run id names the directory and the admin dir."""
        await self._drop(worktree.mirror, worktree.path, None)  # leftovers of a crashed attempt at this run
        self.worktrees.mkdir(parents=True, exist_ok=True)
        add = ["worktree", "add", "--quiet", "--no-track", "-B", worktree.branch, str(worktree.path)]
        await _git(*add, worktree.start_sha, cwd=worktree.mirror)
        # Read right after creation, before any code from the repository ran in the checkout.
        worktree.git_dir = Path((await _git("rev-parse", "--absolute-git-dir", cwd=worktree.path)).strip())
        _write_meta(worktree.git_dir, worktree)

    async def _existing(self, mirror: Path, path: Path) -> Worktree | None:
        """The run's worktree if it is complete and registered in this mirror, else None."""
        if not mirror.exists() or not path.exists():  # noqa: ASYNC240 - a stat, cheaper than a thread hop
            return None
        registered = {p for p, _ in await _worktrees(mirror)}
        admin = _admin_dir(mirror, path)
        if path not in registered or admin is None:
            return None
        try:
            meta = json.loads((admin / RUN_META).read_text())
            fields = {**meta, "path": Path(meta["path"]), "mirror": Path(meta["mirror"]), "git_dir": admin}
            return Worktree(**fields)
        except (OSError, ValueError, KeyError, TypeError):
            return None

    async def _drop(self, mirror: Path, path: Path, branch: str | None) -> None:
        if mirror.exists():  # noqa: ASYNC240 - a stat, cheaper than a thread hop
            await _git("worktree", "remove", "--force", "--force", str(path), cwd=mirror, check=False)
        await asyncio.to_thread(_remove_path, path)
        if mirror.exists():  # noqa: ASYNC240 - a stat, cheaper than a thread hop
            await _git("worktree", "prune", cwd=mirror)
            if branch:
                await _git("branch", "--quiet", "-D", branch, cwd=mirror, check=False)

    def _touch(self, repo_dir: Path) -> None:
        stamp = repo_dir / "last-used"
        stamp.touch()
        now = self.clock()
        os.utime(stamp, (now, now))

    def _repo_dirs(self) -> list[Path]:
        return sorted(p.parent for p in self.root.glob("*/*/*/mirror.lock"))


async def _resolve(mirror: Path, ref: str) -> str | None:
    """The commit a base names: an upstream branch first, then a tag, then anything rev-parse takes (a sha)."""
    if ref.startswith("refs/heads/"):
        candidates = [f"refs/remotes/origin/{ref.removeprefix('refs/heads/')}"]
    elif ref.startswith("refs/"):
        candidates = [ref]
    else:
        candidates = [f"refs/remotes/origin/{ref}", f"refs/tags/{ref}", ref]
    for candidate in candidates:
        sha = await _succeeds("rev-parse", "--verify", "--quiet", f"{candidate}^{{commit}}", cwd=mirror)
        if sha:
            return sha
    return None


def _write_meta(git_dir: Path, worktree: Worktree) -> None:
    meta = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(worktree).items() if k != "git_dir"}
    partial = git_dir / f"{RUN_META}.tmp"
    partial.write_text(json.dumps(meta))
    partial.replace(git_dir / RUN_META)


async def _worktrees(mirror: Path) -> list[tuple[Path, str | None]]:
    """Linked worktrees registered in the mirror: (path, branch or None)."""
    listing = await _git("worktree", "list", "--porcelain", cwd=mirror)
    found: list[tuple[Path, str | None]] = []
    for block in listing.strip().split("\n\n"):
        lines = dict(line.partition(" ")[::2] for line in block.splitlines())
        if "worktree" not in lines or "bare" in lines:
            continue
        branch = lines.get("branch")
        found.append((Path(lines["worktree"]), branch.removeprefix("refs/heads/") if branch else None))
    return found


def _admin_dir(mirror: Path, path: Path) -> Path | None:
    """The mirror's `worktrees/<name>` entry whose `gitdir` points at this checkout."""
    for admin in (mirror / "worktrees").glob("*"):
        with contextlib.suppress(OSError):
            if Path((admin / "gitdir").read_text().strip()) == path / ".git":
                return admin
    return None


def _remove_path(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)


def _disk_usage(path: Path) -> int:
    total = 0
    for directory, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(directory, name)).st_blocks * 512
    return total


def _last_used(repo_dir: Path) -> float:
    for candidate in (repo_dir / "last-used", repo_dir / "mirror.git"):
        with contextlib.suppress(OSError):
            return candidate.stat().st_mtime
    return 0.0


@contextlib.asynccontextmanager
async def _locked(repo_dir: Path, *, wait: bool = True) -> AsyncIterator[bool]:
    """An exclusive flock on `<repo_dir>/mirror.lock`, polled so the event loop keeps running.

    flock locks belong to an open file description, and every acquisition opens the file anew, so the lock excludes
    other processes, other threads and other tasks of this event loop alike. Closing the descriptor releases it,
    also when the holder is cancelled or dies.
    """
    repo_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - a stat, cheaper than a thread hop
    fd = os.open(repo_dir / "mirror.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        delay = 0.002
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not wait:
                    yield False
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.05)
        yield True
    finally:
        os.close(fd)


class LocalWorkspaces(Workspaces):
    """Worktrees of a repository on this machine (`nofx run --repo`): no mirror, no token, nothing pushed."""

    def __init__(self, repo: Path, worktrees: Path) -> None:
        super().__init__(worktrees.parent / "mirrors", worktrees=worktrees)
        self.repo = Path(repo).resolve()

    async def prepare(self, *, run_id: str, branch: str, base_ref: str, **_remote: Any) -> Worktree:
        """The run's worktree on a new `branch` of the local repository, from `base_ref`."""
        git_dir = Path((await _git("rev-parse", "--absolute-git-dir", cwd=self.repo)).strip())
        path = self.worktrees / run_id
        existing = await self._existing(git_dir, path)
        if existing is not None:
            return existing
        base_sha = await _resolve(git_dir, base_ref)
        if base_sha is None:
            raise GitError(["rev-parse", base_ref], None, "", summary=f"{self.repo} has no {base_ref!r} to start from")
        worktree = Worktree(
            path=path,
            branch=branch,
            base_ref=base_ref,
            base_sha=base_sha,
            mirror=git_dir,
            run_id=run_id,
            start_sha=base_sha,
        )
        await self._add(worktree)
        return worktree

    async def remove(self, worktree: Worktree) -> None:
        """Delete the checkout but keep its branch: the branch is the local run's result."""
        await _git("worktree", "remove", "--force", str(worktree.path), cwd=self.repo)

    async def discard(self, run_id: str, branch: str) -> None:
        """A failed local run leaves nothing behind: no checkout, no branch."""
        path = self.worktrees / run_id
        if path.exists():
            await _git("worktree", "remove", "--force", str(path), cwd=self.repo)
        await _git("branch", "-D", branch, cwd=self.repo, check=False)

    async def reap(self, active_run_ids: set[str]) -> list[Path]:
        """Nothing to reap: a local run removes its own worktree when it has committed."""
        return []

    async def evict(self) -> list[Path]:
        return []
