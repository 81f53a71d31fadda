"""Workspaces against a real git smart HTTP server that refuses anyone without the installation token."""

from __future__ import annotations

import asyncio
import base64
import multiprocessing
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from bot.workspace.git import GitError, git_env
from bot.workspace.local import LocalWorkspaces
from bot.workspace.mirrors import Workspaces, _locked
from bot.workspace.worktrees import Checkout, Worktree, branch_name
from tests.support.git_server import GitServer

TOKEN = "ghs_" + "T0kenForTests" * 3
OWNER, REPO = "octo", "shop"
FILES = {"README.md": "# shop\n", "src/cart.py": "ITEMS = []\n", "src/old.py": "gone = True\n"}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[GitServer]:
    with GitServer(tmp_path / "served") as git_server:
        git_server.add_token(TOKEN)
        git_server.create_repo(OWNER, REPO, FILES)
        yield git_server


@pytest.fixture
def workspaces(tmp_path: Path) -> Workspaces:
    return Workspaces(tmp_path / "data" / "workspaces")


class Tokens:
    """A TokenProvider that counts how often a fresh token was asked for."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        return self.token


async def prepare(
    workspaces: Workspaces,
    server: GitServer,
    run_id: str,
    *,
    repo: str = REPO,
    token: str = TOKEN,
    branch: str | None = None,
    base_ref: str = "main",
    reuse_remote_branch: bool = False,
) -> Worktree:
    return await workspaces.prepare(
        Checkout(
            installation_id=99,
            owner=OWNER,
            repo=repo,
            clone_url=server.url_for(OWNER, repo),
            token=Tokens(token),
            run_id=run_id,
            branch=branch or branch_name(7, f"run {run_id}"),
            base_ref=base_ref,
            reuse_remote_branch=reuse_remote_branch,
        )
    )


def git(repo: Path, *args: str) -> str:
    env = {"PATH": os.environ["PATH"], "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "LC_ALL": "C"}
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, env=env, check=True).stdout


def files_containing(root: Path, needles: list[str]) -> list[Path]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            if any(needle.encode() in data for needle in needles):
                found.append(path)
    return found


def token_forms(token: str) -> list[str]:
    return [token, base64.b64encode(f"x-access-token:{token}".encode()).decode()]


# ---------------------------------------------------------------- clone, fetch, authentication


async def test_cold_prepare_clones_with_the_token_and_checks_out_the_run_branch(
    workspaces: Workspaces, server: GitServer
) -> None:
    branch = branch_name(7, "Add a shopping cart")
    worktree = await prepare(workspaces, server, "run-1", branch=branch)

    assert branch == "nofx/7-add-a-shopping-cart"
    assert worktree.mirror == workspaces.mirror_path(99, OWNER, REPO)
    assert worktree.mirror == workspaces.root / "99" / "octo" / "shop" / "mirror.git"
    assert worktree.path == workspaces.root.parent / "worktrees" / "run-1"
    assert (worktree.path / "src" / "cart.py").read_text() == "ITEMS = []\n"
    assert git(worktree.path, "symbolic-ref", "--short", "HEAD").strip() == branch
    assert worktree.base_sha == worktree.start_sha == await worktree.head_sha() == server.git(OWNER, REPO, "rev-parse", "main").strip()  # fmt: skip
    assert git(worktree.mirror, "config", "remote.origin.url").strip() == server.url_for(OWNER, REPO)
    assert git(worktree.mirror, "rev-parse", "--is-bare-repository").strip() == "true"
    upload = server.requests_for("git-upload-pack")
    assert upload and all(r.authorized for r in upload)
    assert git(worktree.path, "status", "--porcelain", "--untracked-files=all") == ""


@pytest.mark.parametrize("token", ["wrong-token", ""])
async def test_a_wrong_or_missing_token_is_refused_and_leaves_no_mirror(
    workspaces: Workspaces, server: GitServer, token: str
) -> None:
    with pytest.raises(GitError) as failure:
        await prepare(workspaces, server, "run-1", token=token)

    assert [r.status for r in server.requests] == [401]
    assert "git fetch" in str(failure.value) and "terminal prompts disabled" in str(failure.value)
    if token:
        assert not any(form in str(failure.value) for form in token_forms(token))
    repo_dir = workspaces.mirror_path(99, OWNER, REPO).parent
    assert sorted(p.name for p in repo_dir.iterdir()) == ["last-used", "mirror.lock"]  # no half clone


async def test_warm_prepare_fetches_into_the_same_mirror_and_sees_new_upstream_commits(
    workspaces: Workspaces, server: GitServer
) -> None:
    first = await prepare(workspaces, server, "run-1")
    marker = first.mirror / "nofx-marker"
    marker.write_text("cloned once")
    inode = first.mirror.stat().st_ino
    new_sha = server.commit(OWNER, REPO, {"src/cart.py": "ITEMS = ['apple']\n"})
    before = len(server.requests)

    second = await prepare(workspaces, server, "run-2")

    assert marker.exists() and second.mirror.stat().st_ino == inode
    assert second.base_sha == new_sha and await second.head_sha() == new_sha
    assert (second.path / "src" / "cart.py").read_text() == "ITEMS = ['apple']\n"
    assert (first.path / "src" / "cart.py").read_text() == "ITEMS = []\n"  # a running run is never moved
    assert all(r.authorized and r.service == "git-upload-pack" for r in server.requests[before:])


async def test_prepare_is_idempotent_per_run(workspaces: Workspaces, server: GitServer) -> None:
    first = await prepare(workspaces, server, "run-1")
    (first.path / "notes.txt").write_text("work in progress")
    before = len(server.requests)

    again = await prepare(workspaces, server, "run-1")

    assert again == first
    assert (again.path / "notes.txt").read_text() == "work in progress"
    assert len(server.requests) == before  # no fetch for a run that already has its worktree
    with pytest.raises(ValueError, match="already has a worktree"):
        await prepare(workspaces, server, "run-1", branch="nofx/8-other")


async def test_a_branch_in_use_by_another_run_is_refused(workspaces: Workspaces, server: GitServer) -> None:
    await prepare(workspaces, server, "run-1", branch="nofx/7-cart")
    with pytest.raises(GitError, match="already checked out"):
        await prepare(workspaces, server, "run-2", branch="nofx/7-cart")


async def test_unknown_base_and_bad_names_are_refused(workspaces: Workspaces, server: GitServer) -> None:
    with pytest.raises(GitError, match="has no 'nope'"):
        await prepare(workspaces, server, "run-1", base_ref="nope")
    with pytest.raises(ValueError):
        await prepare(workspaces, server, "../escape")
    with pytest.raises(ValueError):
        await prepare(workspaces, server, "run-2", branch="nofx/bad..ref")
    with pytest.raises(ValueError):
        workspaces.mirror_path(1, "..", "x")


# ---------------------------------------------------------------- the token stays in the environment


async def test_the_token_is_never_written_to_disk_and_never_echoed(workspaces: Workspaces, server: GitServer) -> None:
    worktree = await prepare(workspaces, server, "run-1")
    (worktree.path / "new.txt").write_text("hello\n")
    await worktree.commit_all("Add new.txt", author_name="nofx", author_email="nofx@example.test")
    await worktree.push(TOKEN)

    assert files_containing(workspaces.root.parent, token_forms(TOKEN)) == []
    assert TOKEN not in git(worktree.mirror, "config", "--list")
    # git happily prints config it got from the environment; what comes back to us is redacted.
    shown = await worktree.git("config", "--get-regexp", "extraheader", token=TOKEN)
    assert "[redacted]" in shown and not any(form in shown for form in token_forms(TOKEN))


def test_git_env_carries_the_token_as_a_host_scoped_header_and_nothing_from_our_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secret")
    env = git_env(TOKEN, url="https://ghe.example.com/octo/shop.git")

    assert "ANTHROPIC_API_KEY" not in env and "sk-ant-secret" not in str(env)
    assert env["GIT_TERMINAL_PROMPT"] == "0" and env["GIT_CONFIG_NOSYSTEM"] == "1"
    pairs = {env[f"GIT_CONFIG_KEY_{i}"]: env[f"GIT_CONFIG_VALUE_{i}"] for i in range(int(env["GIT_CONFIG_COUNT"]))}
    header = "AUTHORIZATION: basic " + token_forms(TOKEN)[1]
    assert pairs["http.https://ghe.example.com/.extraheader"] == header
    assert pairs["core.hooksPath"] == os.devnull
    assert "GIT_CONFIG_COUNT" in git_env(None) and not any("extraheader" in v for v in git_env(None).values())
    with pytest.raises(ValueError, match="credentials"):
        git_env(TOKEN, url=f"https://x-access-token:{TOKEN}@github.com/octo/shop.git")


def test_the_header_is_sent_only_to_the_clone_urls_host(server: GitServer, tmp_path: Path) -> None:
    with GitServer(tmp_path / "other") as other:
        other.add_token(TOKEN)
        other.create_repo(OWNER, REPO, FILES)
        scoped_to_other = git_env(TOKEN, url=other.url_for(OWNER, REPO))
        refused = subprocess.run(
            ["git", "ls-remote", server.url_for(OWNER, REPO)], env=scoped_to_other, capture_output=True, check=False
        )
        accepted = subprocess.run(
            ["git", "ls-remote", other.url_for(OWNER, REPO)], env=scoped_to_other, capture_output=True, check=False
        )
    assert refused.returncode != 0 and [r.authorized for r in server.requests] == [False]
    assert accepted.returncode == 0


async def test_both_kinds_of_workspaces_give_the_git_dir_holding_a_commit_to_index(
    workspaces: Workspaces, server: GitServer, tmp_path: Path
) -> None:
    later = server.commit(OWNER, REPO, {"src/cart.py": "ITEMS = ['pear']\n"})
    mirror = await workspaces.fetched_mirror(99, OWNER, REPO, server.url_for(OWNER, REPO), later, TOKEN)
    assert mirror == workspaces.mirror_path(99, OWNER, REPO)
    assert mirror is not None and git(mirror, "cat-file", "-t", later).strip() == "commit"

    local_repo = tmp_path / "local"
    local_repo.mkdir()
    git(local_repo, "init", "-q", "-b", "main")
    (local_repo / "a.txt").write_text("a\n")
    git(local_repo, "add", "a.txt")
    git(local_repo, "-c", "user.name=n", "-c", "user.email=n@example.test", "commit", "-q", "-m", "a")
    local = LocalWorkspaces(local_repo, tmp_path / "local-worktrees")
    head = git(local_repo, "rev-parse", "HEAD").strip()
    assert await local.fetched_mirror(1, "o", "r", "", head, "") == (local_repo / ".git").resolve()
    assert await local.fetched_mirror(1, "o", "r", "", later, "") is None  # nothing is fetched


# ---------------------------------------------------------------- commit and push


async def test_commit_all_and_push_land_the_branch_upstream_with_the_authors_name(
    workspaces: Workspaces, server: GitServer
) -> None:
    worktree = await prepare(workspaces, server, "run-1")
    (worktree.path / "src" / "cart.py").write_text("ITEMS = ['pear']\n")
    (worktree.path / "src" / "checkout.py").write_text("def pay(): ...\n")
    (worktree.path / "src" / "old.py").unlink()

    sha = await worktree.commit_all("Add checkout", author_name="Mona Bot", author_email="mona@example.test")
    assert sha and sha == await worktree.head_sha()
    committed = git(worktree.path, "diff", "--name-only", "--no-renames", worktree.base_sha, sha).split()
    assert committed == ["src/cart.py", "src/checkout.py", "src/old.py"]  # changed, added and deleted: all in
    assert git(worktree.path, "status", "--porcelain", "--untracked-files=all") == ""
    assert await worktree.commit_all("nothing", author_name="x", author_email="x@example.test") is None

    await worktree.push(TOKEN)

    assert server.git(OWNER, REPO, "rev-parse", worktree.branch).strip() == sha
    assert server.show(OWNER, REPO, worktree.branch, "src/checkout.py") == "def pay(): ...\n"
    assert server.git(OWNER, REPO, "log", "-1", "--format=%an <%ae>|%cn <%ce>|%s", worktree.branch).strip() == (
        "Mona Bot <mona@example.test>|Mona Bot <mona@example.test>|Add checkout"
    )
    pushes = server.requests_for("git-receive-pack")
    assert pushes and all(r.authorized for r in pushes)


async def test_push_needs_the_token_and_force_to_rewrite(workspaces: Workspaces, server: GitServer) -> None:
    worktree = await prepare(workspaces, server, "run-1")
    (worktree.path / "a.txt").write_text("a\n")
    await worktree.commit_all("a", author_name="n", author_email="n@example.test")
    with pytest.raises(GitError, match="git push") as refused:
        await worktree.push("not-the-token")
    assert "not-the-token" not in str(refused.value)
    await worktree.push(TOKEN)

    await worktree.git("reset", "--quiet", "--hard", "HEAD~1")
    (worktree.path / "b.txt").write_text("b\n")
    await worktree.commit_all("a, again", author_name="n", author_email="n@example.test")
    with pytest.raises(GitError, match="rejected"):
        await worktree.push(TOKEN)
    await worktree.push(TOKEN, force=True)
    assert server.git(OWNER, REPO, "log", "-1", "--format=%s", worktree.branch).strip() == "a, again"


async def test_hooks_planted_in_the_mirror_never_run(workspaces: Workspaces, server: GitServer) -> None:
    worktree = await prepare(workspaces, server, "run-1")
    witness = worktree.path.parent / "hook-ran"
    for hook in ("pre-commit", "pre-push", "post-checkout"):
        script = worktree.mirror / "hooks" / hook
        script.write_text(f"#!/bin/sh\nenv >> {witness}\n")
        script.chmod(0o755)
    git(worktree.mirror, "config", "remote.origin.url", "http://127.0.0.1:9/evil.git")  # pushes ignore it

    (worktree.path / "a.txt").write_text("a\n")
    await worktree.commit_all("a", author_name="n", author_email="n@example.test")
    await worktree.push(TOKEN)

    assert not witness.exists()
    assert server.show(OWNER, REPO, worktree.branch, "a.txt") == "a\n"


async def test_a_follow_up_run_continues_on_the_pushed_branch(workspaces: Workspaces, server: GitServer) -> None:
    first = await prepare(workspaces, server, "run-1", branch="nofx/7-cart")
    (first.path / "cart.txt").write_text("v1\n")
    pushed = await first.commit_all("v1", author_name="n", author_email="n@example.test")
    await first.push(TOKEN)
    await workspaces.remove(first)
    main = server.commit(OWNER, REPO, {"CHANGELOG": "later\n"})

    follow_up = await prepare(workspaces, server, "run-2", branch="nofx/7-cart", reuse_remote_branch=True)
    fresh = await prepare(workspaces, server, "run-3", branch="nofx/8-none", reuse_remote_branch=True)

    assert (follow_up.start_sha, follow_up.base_sha) == (pushed, main)
    assert (follow_up.path / "cart.txt").read_text() == "v1\n"
    # the branch continues where it was pushed: main's newer commits do not come into the run's change
    assert await follow_up.head_sha() == pushed and not (follow_up.path / "CHANGELOG").exists()
    assert fresh.start_sha == fresh.base_sha == main


# ---------------------------------------------------------------- concurrency


async def test_concurrent_runs_on_one_repository_share_a_healthy_mirror(
    workspaces: Workspaces, server: GitServer
) -> None:
    worktrees = await asyncio.gather(*(prepare(workspaces, server, f"run-{i}") for i in range(4)))

    assert len({w.path for w in worktrees}) == 4 and len({w.mirror for w in worktrees}) == 1
    assert all((w.path / "README.md").exists() for w in worktrees)
    mirror = worktrees[0].mirror
    assert git(mirror, "fsck", "--strict", "--no-progress") == ""
    assert git(mirror, "worktree", "list").count("\n") == 5  # the bare repository and four runs
    assert not list(mirror.parent.glob("mirror.git.*"))


async def test_the_mirror_lock_excludes_other_tasks_and_other_processes(tmp_path: Path) -> None:
    inside, peak = 0, 0

    async def hold() -> None:
        nonlocal inside, peak
        async with _locked(tmp_path):
            inside += 1
            peak = max(peak, inside)
            await asyncio.sleep(0.01)
            inside -= 1

    await asyncio.gather(*(hold() for _ in range(5)))
    assert peak == 1

    script = "import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); print(1, flush=True); time.sleep(60)"
    lock = str(tmp_path / "mirror.lock")
    holder = await asyncio.create_subprocess_exec(sys.executable, "-c", script, lock, stdout=asyncio.subprocess.PIPE)
    try:
        assert holder.stdout is not None and await holder.stdout.readline()
        async with _locked(tmp_path, wait=False) as held:
            assert not held
    finally:
        holder.kill()
        await holder.wait()
    async with _locked(tmp_path, wait=False) as held:
        assert held


def _prepare_in_another_process(root: str, clone_url: str, run_id: str) -> str:
    async def provider() -> str:
        return TOKEN

    async def main() -> str:
        worktree = await Workspaces(Path(root)).prepare(
            Checkout(
                installation_id=99,
                owner=OWNER,
                repo=REPO,
                clone_url=clone_url,
                token=provider,
                run_id=run_id,
                branch=f"nofx/1-{run_id}",
                base_ref="main",
            )
        )
        return str(worktree.path)

    return asyncio.run(main())


def test_runs_in_two_processes_share_a_healthy_mirror(workspaces: Workspaces, server: GitServer) -> None:
    jobs = [(str(workspaces.root), server.url_for(OWNER, REPO), f"proc-{i}") for i in range(2)]
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        paths = pool.starmap(_prepare_in_another_process, jobs)

    assert [Path(p).name for p in paths] == ["proc-0", "proc-1"]
    mirror = workspaces.mirror_path(99, OWNER, REPO)
    assert git(mirror, "fsck", "--strict", "--no-progress") == ""
    assert git(mirror, "worktree", "list").count("\n") == 3


# ---------------------------------------------------------------- upkeep


async def test_remove_is_idempotent_and_drops_the_local_branch(workspaces: Workspaces, server: GitServer) -> None:
    worktree = await prepare(workspaces, server, "run-1")
    await workspaces.remove(worktree)
    await workspaces.remove(worktree)

    assert not worktree.path.exists()
    assert git(worktree.mirror, "worktree", "list").count("\n") == 1
    assert git(worktree.mirror, "branch", "--list", worktree.branch) == ""


async def test_reap_removes_what_no_active_run_owns(workspaces: Workspaces, server: GitServer) -> None:
    active = await prepare(workspaces, server, "run-active")
    stale = await prepare(workspaces, server, "run-stale")
    stray = workspaces.worktrees / "run-crashed-before-registering"
    stray.mkdir()
    interrupted_clone = active.mirror.with_name("mirror.git.tmp-deadbeef")
    interrupted_clone.mkdir()

    removed = await workspaces.reap({"run-active"})

    assert sorted(removed) == sorted([stale.path, stray])
    assert active.path.exists() and not stale.path.exists() and not stray.exists()
    assert not interrupted_clone.exists()
    assert git(active.mirror, "worktree", "list").count("\n") == 2


async def test_evict_drops_least_recently_used_mirrors_but_never_one_in_use(tmp_path: Path, server: GitServer) -> None:
    now = [1_000.0]
    workspaces = Workspaces(tmp_path / "data" / "workspaces", clock=lambda: now[0])
    for repo in ("in-use", "old", "new"):
        if repo != REPO:
            server.create_repo(OWNER, repo, FILES)
    in_use = await prepare(workspaces, server, "run-1", repo="in-use")  # the least recently used, but busy
    for repo in ("old", "new"):
        now[0] += 60
        await workspaces.remove(await prepare(workspaces, server, f"run-{repo}", repo=repo))

    workspaces.disk_budget_bytes = 1
    evicted = await workspaces.evict()

    assert evicted == [workspaces.mirror_path(99, OWNER, "old"), workspaces.mirror_path(99, OWNER, "new")]
    assert in_use.mirror.exists() and (in_use.path / "README.md").exists()
    assert not list(workspaces.root.rglob("mirror.git.evicting-*"))

    workspaces.disk_budget_bytes = 10 * 2**30
    assert await workspaces.evict() == []
    again = await prepare(workspaces, server, "run-again", repo="old")  # an evicted mirror is simply cloned again
    assert (again.path / "README.md").exists()


# ---------------------------------------------------------------- branch names


@pytest.mark.parametrize(
    ("request_text", "expected"),
    [
        ("Add a shopping cart", "nofx/12-add-a-shopping-cart"),
        ("  Fix: the `login()` bug!!  ", "nofx/12-fix-the-login-bug"),
        ("Ünïcödé façade café", "nofx/12-unicode-facade-cafe"),
        ("修复登录", "nofx/12-change"),
        ("", "nofx/12-change"),
        ("../../etc/passwd @{u} ~^:?*[\\", "nofx/12-etc-passwd-u"),
        ("word " * 30, "nofx/12-" + "-".join(["word"] * 8)),
        ("x" * 100, "nofx/12-" + "x" * 40),
    ],
)
def test_branch_name(request_text: str, expected: str) -> None:
    assert branch_name(12, request_text) == expected


@hypothesis_settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=10**9), st.text())
def test_branch_names_are_always_valid_refs(issue: int, request_text: str) -> None:
    name = branch_name(issue, request_text)
    slug = name.split("-", 1)[1]
    assert name.startswith(f"nofx/{issue}-") and 0 < len(slug) <= 40
    check = subprocess.run(["git", "check-ref-format", "--branch", name], capture_output=True, check=False)
    assert check.returncode == 0, name
