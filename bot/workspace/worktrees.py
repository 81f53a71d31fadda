"""One run's checkout: the `Worktree`, its branch name, and how it is added, found again and dropped in a git dir.

A worktree's metadata is kept in its admin dir inside the mirror (or the local repository's git dir), out of reach
of the checkout's own code, so a later step finds the same worktree without trusting anything in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import unicodedata
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from bot.workspace.git import GIT_TIMEOUT_S, git, git_or_none

SLUG_MAX = 40
RUN_META = "nofx-run.json"  # in the worktree's admin dir inside the mirror, out of reach of the checkout
BASE_CHECKOUTS = "base-checkouts"  # beside the worktrees dir: `<run_id>`, the run's base commit while setup runs


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


TokenProvider = Callable[[], Awaitable[str]]


@dataclass(frozen=True)
class Checkout:
    """What a run's worktree is made from: its branch and base, and where the repository comes from.

    The remote fields (installation, owner, repo, clone URL, token) name a GitHub repository for `Workspaces`;
    `LocalWorkspaces` checks out a repository on this machine and has no use for them.
    """

    run_id: str
    branch: str
    base_ref: str
    installation_id: int = 0
    owner: str = ""
    repo: str = ""
    clone_url: str = ""
    token: TokenProvider | None = None
    reuse_remote_branch: bool = False  # start from the branch's remote tip when it exists (a follow-up run)
    base_sha: str | None = None  # pinned: the run's worktree was made before (maybe on another worker) from these
    start_sha: str | None = None


class RunWorkspaces(Protocol):
    """Where runs get their worktrees: GitHub mirrors (`Workspaces`) or a local repository (`LocalWorkspaces`)."""

    async def prepare(self, checkout: Checkout) -> Worktree:
        """The run's worktree, made once and found again by later steps."""
        ...

    async def remove(self, worktree: Worktree) -> None:
        """The run is over with its worktree."""
        ...

    def base_checkout(self, worktree: Worktree) -> AbstractAsyncContextManager[Worktree]:
        """A detached checkout of the run's base commit, removed on exit: what `setup` runs on (`add_base_checkout`)."""
        ...

    async def fetched_mirror(
        self, installation_id: int, owner: str, repo: str, clone_url: str, commit: str, token: str
    ) -> Path | None:
        """The git directory holding the repository's `commit` (fetched first if need be), for indexing; None when
        these workspaces cannot have it."""
        ...

    async def reap(self, active_run_ids: set[str]) -> list[Path]:
        """Remove the worktrees of runs that are no longer active; the paths removed."""
        ...

    async def evict(self) -> list[Path]:
        """Free disk space the workspaces keep beyond their runs; the paths removed."""
        ...


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

    async def head_sha(self) -> str:
        return (await self.git("rev-parse", "HEAD")).strip()

    async def commit_all(
        self, message: str, *, author_name: str, author_email: str, paths: list[str] | None = None
    ) -> str | None:
        """Stage `paths` (default: everything) and commit as the author (also the committer); None if unchanged.

        Passing the paths a run wrote keeps by-products of the gates (caches, build output) out of the commit.
        """
        if paths is None:
            await self.git("add", "--all")
        elif paths:
            await self.git("add", "--all", "--", *paths)
        if not (await self.git("diff", "--cached", "--name-only")).strip():
            return None  # nothing staged (changes outside `paths` are deliberately left out)
        identity = {
            "GIT_AUTHOR_NAME": author_name,
            "GIT_AUTHOR_EMAIL": author_email,
            "GIT_COMMITTER_NAME": author_name,
            "GIT_COMMITTER_EMAIL": author_email,
        }
        await self.git(
            "-c",
            "commit.gpgSign=false",
            "commit",
            "--quiet",
            "--no-verify",
            "--file=-",
            env=identity,
            input=message.encode(),
        )
        return await self.head_sha()

    async def push(self, token: str, *, force: bool = False, branch: str | None = None) -> None:
        """Push HEAD to `refs/heads/<branch>` at the clone URL itself, so a rewritten remote in config cannot divert it."""
        if not self.clone_url:
            raise ValueError("this worktree has no clone URL to push to")
        refspec = f"{'+' if force else ''}HEAD:refs/heads/{branch or self.branch}"
        await self.git("push", "--quiet", "--no-verify", "--porcelain", self.clone_url, refspec, token=token)

    async def git(
        self,
        *args: str,
        token: str | None = None,
        check: bool = True,
        env: dict[str, str] | None = None,
        input: bytes | None = None,
        timeout_s: float = GIT_TIMEOUT_S,
    ) -> str:
        """Any git command in the worktree; `token` only for commands that talk to the origin, `env` on top of git's."""
        # GIT_DIR pins the admin dir in the mirror: a `.git` file rewritten by the checkout's code is ignored.
        pinned = {"GIT_DIR": str(self.git_dir), "GIT_WORK_TREE": str(self.path)} if self.git_dir else {}
        return await git(
            *args,
            token=token,
            url=self.clone_url or None,
            cwd=self.path,
            extra_env={**pinned, **(env or {})},
            input=input,
            check=check,
            timeout_s=timeout_s,
        )


async def create_worktree(
    checkout: Checkout, *, git_dir: Path, path: Path, base_sha: str, start_sha: str, clone_url: str = ""
) -> Worktree:
    """The one place a run's worktree is made: its branch checked out at `start_sha` under `path`, from `git_dir`.

    The run id names the directory and the admin dir; the metadata `find_worktree` reads back is written here.
    """
    worktree = Worktree(
        path=path,
        branch=checkout.branch,
        base_ref=checkout.base_ref,
        base_sha=base_sha,
        mirror=git_dir,
        run_id=checkout.run_id,
        clone_url=clone_url,
        start_sha=start_sha,
    )
    await drop_worktree(git_dir, path, None)  # leftovers of a crashed attempt at this run
    path.parent.mkdir(parents=True, exist_ok=True)
    add = ["worktree", "add", "--quiet", "--no-track", "-B", checkout.branch, str(path)]
    await git(*add, start_sha, cwd=git_dir)
    # Read right after creation, before any code from the repository ran in the checkout.
    worktree.git_dir = Path((await git("rev-parse", "--absolute-git-dir", cwd=path)).strip())
    _write_meta(worktree.git_dir, worktree)
    return worktree


async def add_base_checkout(worktree: Worktree, path: Path) -> Worktree:
    """A detached checkout of `worktree`'s base commit at `path`, from the same git dir, for `setup`.

    setup runs with network, so it runs only the base's files, which the repository's maintainers control, never
    the run's own (a follow-up run's branch, a resumed run's checkpoint): those may hold code the model wrote.
    """
    await git("worktree", "remove", "--force", "--force", str(path), cwd=worktree.mirror, check=False)
    await asyncio.to_thread(remove_path, path)  # leftovers of a crashed attempt (`--force` below: its registration)
    path.parent.mkdir(parents=True, exist_ok=True)
    add = ["worktree", "add", "--quiet", "--force", "--detach", str(path), worktree.base_sha]
    await git(*add, cwd=worktree.mirror)
    return Worktree(
        path=path,
        branch="",
        base_ref=worktree.base_ref,
        base_sha=worktree.base_sha,
        mirror=worktree.mirror,
        run_id=worktree.run_id,
        clone_url=worktree.clone_url,
        # Read right after creation, before any code from the repository ran in the checkout.
        git_dir=Path((await git("rev-parse", "--absolute-git-dir", cwd=path)).strip()),
    )


async def find_worktree(git_dir: Path, path: Path) -> Worktree | None:
    """The run's worktree if it is complete and registered in this mirror (or repository), else None."""
    if not git_dir.exists() or not path.exists():  # noqa: ASYNC240 - a stat, cheaper than a thread hop
        return None
    registered = {p for p, _ in await list_worktrees(git_dir)}
    admin = _admin_dir(git_dir, path)
    if path not in registered or admin is None:
        return None
    try:
        meta = json.loads((admin / RUN_META).read_text())
        fields = {**meta, "path": Path(meta["path"]), "mirror": Path(meta["mirror"]), "git_dir": admin}
        return Worktree(**fields)
    except (OSError, ValueError, KeyError, TypeError):
        return None


async def drop_worktree(git_dir: Path, path: Path, branch: str | None) -> None:
    """Remove a checkout, its registration and (when given) its branch; safe when any of them is already gone."""
    if git_dir.exists():  # noqa: ASYNC240 - a stat, cheaper than a thread hop
        await git("worktree", "remove", "--force", "--force", str(path), cwd=git_dir, check=False)
    await asyncio.to_thread(remove_path, path)
    if git_dir.exists():  # noqa: ASYNC240 - a stat, cheaper than a thread hop
        await git("worktree", "prune", cwd=git_dir)
        if branch:
            await git("branch", "--quiet", "-D", branch, cwd=git_dir, check=False)


async def resolve_ref(mirror: Path, ref: str) -> str | None:
    """The commit a base names: an upstream branch first, then a tag, then anything rev-parse takes (a sha)."""
    if ref.startswith("refs/heads/"):
        candidates = [f"refs/remotes/origin/{ref.removeprefix('refs/heads/')}"]
    elif ref.startswith("refs/"):
        candidates = [ref]
    else:
        candidates = [f"refs/remotes/origin/{ref}", f"refs/tags/{ref}", ref]
    for candidate in candidates:
        sha = await git_or_none("rev-parse", "--verify", "--quiet", f"{candidate}^{{commit}}", cwd=mirror)
        if sha:
            return sha
    return None


def _write_meta(git_dir: Path, worktree: Worktree) -> None:
    meta = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(worktree).items() if k != "git_dir"}
    partial = git_dir / f"{RUN_META}.tmp"
    partial.write_text(json.dumps(meta))
    partial.replace(git_dir / RUN_META)


async def list_worktrees(mirror: Path) -> list[tuple[Path, str | None]]:
    """Linked worktrees registered in the mirror: (path, branch or None)."""
    listing = await git("worktree", "list", "--porcelain", cwd=mirror)
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


def remove_path(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)
