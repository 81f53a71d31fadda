"""The bubblewrap layout for repository code, built only from what nofx recorded, and the check that it still holds.

The layout (later entries are mounted on top of earlier ones):

    /usr /bin /sbin /lib* /opt /etc   read-only from the host (top-level symlinks such as /bin -> usr/bin kept)
    /etc/shadow, /etc/gshadow, …      masked with /dev/null; /etc/ssh and /etc/ssl/private with an empty tmpfs
    /dev /proc                        a minimal /dev, a /proc of the new PID namespace (no other process shows)
    /tmp                              an empty tmpfs of bounded size; HOME is /tmp/home
    each `readonly` path              read-only, at the same path as outside (tool directories)
    each `hidden` path                an empty tmpfs or /dev/null: nofx's data dir and `.env`, should a bind show them
    the run's git dirs                read-only, from the paths nofx recorded when it made the worktree (never from
                                      the worktree's `.git` file, which the command can rewrite): the mirror with
                                      an empty tmpfs over its `worktrees/`, and this worktree's own entry put back
    <cwd> and each `writable` path    read-write, at the same path as outside
    the run's setup directory         at /nofx/setup (SETUP_MOUNT) on every worker, read-write for `setup`, read-only
                                      for the rest, so what setup made (a venv's scripts name their interpreter by
                                      absolute path) works on a worker whose data dir lies elsewhere
    setup's egress proxy              at /nofx/egress (EGRESS_MOUNT), read-only: the proxy's unix socket and the
                                      forwarder, for setup only (bot.workspace.egress)

Nothing else of the host exists inside: not /home or /root, not the nofx data dir (database, `.env`, artifacts,
logs, the queue's socket, other worktrees, other repositories' mirrors), not /run, /var, /srv, /mnt or /sys. The
command runs in new user, mount, PID, IPC, UTS, cgroup and network namespaces (the network one only when
`network=False`: gates and a proxied setup have only their own loopback; `network=True` is setup under the
operator's NOFX_SETUP_EGRESS=host), in a session of its own, with every capability dropped, and
dies with nofx. When a path lies under one of the read-only system directories, the top directory it sits in there
is replaced by an empty tmpfs first, so its siblings stay hidden.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BWRAP_HOME = Path("/tmp/home")  # noqa: S108 - on the sandbox's own empty /tmp
SETUP_MOUNT = Path("/nofx/setup")  # on the sandbox's own root, which bwrap makes afresh
EGRESS_MOUNT = Path("/nofx/egress")  # setup's egress proxy socket and forwarder (bot.workspace.egress)
INSTALL_HINT = "install bubblewrap (Debian/Ubuntu: `apt-get install bubblewrap`; Fedora: `dnf install bubblewrap`)"
USERNS_HINT = (
    "the host must allow unprivileged user namespaces (`sysctl user.max_user_namespaces` above 0, and on Debian and "
    "Ubuntu `kernel.unprivileged_userns_clone=1` / `kernel.apparmor_restrict_unprivileged_userns=0`); in Docker, run "
    "the container with `--security-opt seccomp=unconfined --security-opt apparmor=unconfined` (README, 'The sandbox')"
)
OPT_OUT_HINT = "or set NOFX_SANDBOX=none to run repository code without isolation (unsafe); `nofx doctor` checks this"

_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/opt", "/etc")
_SECRET_FILES = ("/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-", "/etc/security/opasswd")
_SECRET_DIRS = ("/etc/ssh", "/etc/ssl/private")
# Keys nofx's own mirror config holds; anything else there (a filter, an include, core.fsmonitor) was not nofx.
_MIRROR_KEYS = frozenset(
    {
        "core.repositoryformatversion",
        "core.filemode",
        "core.bare",
        "core.logallrefupdates",
        "core.ignorecase",
        "core.precomposeunicode",
        "core.symlinks",
        "remote.origin.url",
        "remote.origin.fetch",
        "extensions.objectformat",
    }
)


class SandboxUnavailable(RuntimeError):
    """No isolation can be built on this host; the message names the cause and the fix. No command ran."""


class WorkspaceTampered(RuntimeError):
    """The worktree's `.git` or the git config nofx relies on is no longer nofx's own; the run must not go on."""


@dataclass(frozen=True)
class GitLayout:
    """What nofx recorded when it made the worktree: its admin dir and the repository (mirror) it belongs to."""

    git_dir: Path  # <mirror>/worktrees/<name>
    common_dir: Path  # the mirror
    nofx_config: bool = True  # nofx wrote the repository's config (a mirror), so it knows every key in it

    def points_here(self, dot_git: str, worktree: Path) -> bool:
        """Whether a `.git` file's text is what git wrote for this worktree: one `gitdir:` line naming git_dir."""
        lines = dot_git.splitlines()
        if len(lines) != 1 or not lines[0].startswith("gitdir: "):
            return False
        return (worktree / lines[0].removeprefix("gitdir: ")).resolve() == self.git_dir.resolve()


@dataclass(frozen=True)
class Probe:
    """Whether bubblewrap works here, and if not, why and what to do."""

    ok: bool
    bwrap: str | None
    reason: str = ""


def probe() -> Probe:
    """Start `true` in a sandbox with the real layout; cached per bwrap binary (containers often forbid namespaces)."""
    return _probe(shutil.which("bwrap", path=os.environ.get("PATH", os.defpath)))


@functools.cache
def _probe(path: str | None) -> Probe:
    if path is None:
        return Probe(False, None, f"bubblewrap (`bwrap`) is not installed on this worker: {INSTALL_HINT}")
    with tempfile.TemporaryDirectory(prefix="nofx-probe-") as trial:
        argv = [path, *bwrap_args(Path(trial).resolve()), "--", "/bin/sh", "-c", "true"]
        try:
            done = subprocess.run(argv, capture_output=True, timeout=10, check=False, env={"PATH": SAFE_PATH})
        except (OSError, subprocess.TimeoutExpired) as exc:
            return Probe(False, path, f"bubblewrap could not be started ({exc}): {INSTALL_HINT}")
    if done.returncode != 0:
        said = done.stderr.decode("utf-8", errors="replace").strip() or f"exit code {done.returncode}"
        return Probe(False, path, f"bubblewrap cannot create a sandbox on this host ({said}): {USERNS_HINT}")
    return Probe(True, path)


def bwrap_args(
    cwd: Path,
    *,
    git: GitLayout | None = None,
    writable: list[Path] | None = None,
    readonly: list[Path] | None = None,
    hidden: list[Path] | None = None,
    network: bool = False,
    tmp_bytes: int = 256 * 2**20,
    setup: Path | None = None,
    setup_writable: bool = False,
    egress: Path | None = None,
) -> list[str]:
    """The bwrap options for the layout the module docstring describes; every path is resolved already.

    `hidden` are nofx's own files and directories (data dir, `.env`): masked wherever a read-only bind would
    otherwise show them (say, a data dir under /opt); the worktree and git dirs inside are bound on top again.
    `network` shares the host's network namespace; `egress` is the directory of setup's egress proxy (its socket
    and the forwarder, `bot.workspace.egress`), read-only at EGRESS_MOUNT.
    """
    writable, readonly, hidden = writable or [], readonly or [], hidden or []
    args: list[str] = []
    for name in _SYSTEM_DIRS:
        path = Path(name)
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), name]
        elif path.is_dir():
            args += ["--ro-bind", name, name]
    args += [arg for name in _SECRET_FILES if Path(name).is_file() for arg in ("--ro-bind", "/dev/null", name)]
    args += [arg for name in _SECRET_DIRS if Path(name).is_dir() for arg in ("--tmpfs", name)]
    args += ["--dev", "/dev", "--proc", "/proc", "--size", str(tmp_bytes), "--tmpfs", "/tmp"]  # noqa: S108
    args += ["--dir", str(BWRAP_HOME)]
    exposed = [cwd, *writable]
    args += [arg for cover in _covers(exposed) for arg in ("--tmpfs", str(cover))]
    for path in readonly:
        if not any(path.is_relative_to(name) for name in _SYSTEM_DIRS):  # those are visible read-only already
            args += ["--ro-bind", str(path), str(path)]
    for path in hidden:
        if path.is_dir():
            args += ["--tmpfs", str(path)]
        elif path.exists():
            args += ["--ro-bind", "/dev/null", str(path)]
    if git is not None:
        args += _git_binds(git, cwd)
    for path in exposed:
        args += ["--bind", str(path), str(path)]
    if setup is not None:
        args += ["--bind" if setup_writable else "--ro-bind", str(setup), str(SETUP_MOUNT)]
    if egress is not None:
        args += ["--ro-bind", str(egress), str(EGRESS_MOUNT)]
    args += ["--chdir", str(cwd), "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    if network:
        args += ["--share-net"]
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


def _git_binds(git: GitLayout, cwd: Path) -> list[str]:
    """Read-only binds that let git work in the linked worktree without showing the mirror's other worktrees."""
    common, own = git.common_dir, git.git_dir
    if common == own:
        return ["--ro-bind", str(own), str(own)]
    args = ["--ro-bind", str(common), str(common)]
    for entry in (common / "worktrees").glob("*/gitdir"):  # checkouts kept inside the mirror would show through
        with contextlib.suppress(OSError, UnicodeDecodeError):
            checkout = Path(entry.read_text(encoding="utf-8").strip()).parent
            if checkout != cwd and checkout.is_relative_to(common) and checkout.is_dir():
                args += ["--tmpfs", str(checkout)]
    if (common / "worktrees").is_dir():
        args += ["--tmpfs", str(common / "worktrees")]
    return [*args, "--ro-bind", str(own), str(own)]


# --- is the worktree still nofx's own? -----------------------------------------------------------------------------


def git_fingerprint(cwd: Path, git: GitLayout) -> str:
    """Refuse a worktree whose `.git` is not what git wrote, or whose config nofx does not recognise; else a digest
    of the git files nofx relies on, to compare after the command (raises WorkspaceTampered)."""
    dot_git = cwd / ".git"
    try:
        content = dot_git.read_text(encoding="utf-8") if dot_git.is_file() and not dot_git.is_symlink() else ""
    except (OSError, UnicodeDecodeError):
        content = ""
    if not git.points_here(content, cwd):
        raise WorkspaceTampered(
            "the worktree's `.git` was changed or replaced by code that ran in it (it no longer points at nofx's "
            "own git dir); nofx refuses to run anything more in this run. Start a new run."
        )
    unknown = sorted(set(_config_keys(git.common_dir / "config")) - _MIRROR_KEYS) if git.nofx_config else []
    if unknown:
        raise WorkspaceTampered(
            f"the repository's git config holds keys nofx did not write ({', '.join(unknown)}); nofx refuses to run "
            "anything more in this run. Start a new run."
        )
    digest = hashlib.sha256(content.encode())
    for path in (
        git.common_dir / "config",
        git.git_dir / "commondir",
        git.git_dir / "gitdir",
        git.git_dir / "config.worktree",
    ):
        digest.update(str(path).encode() + b"\0" + _read(path) + b"\0")
    return digest.hexdigest()


def _config_keys(path: Path) -> list[str]:
    """The keys of one git config file, as git itself parses it (includes not followed)."""
    done = subprocess.run(
        ["git", "config", "--file", str(path), "--no-includes", "--null", "--list"],
        capture_output=True,
        check=False,
        timeout=30,
        env={"PATH": os.environ.get("PATH", os.defpath), "GIT_CONFIG_NOSYSTEM": "1", "HOME": "/nonexistent"},
    )
    if done.returncode != 0:
        raise WorkspaceTampered("the repository's git config cannot be read; nofx refuses to run anything more")
    return [item.split("\n", 1)[0].lower() for item in done.stdout.decode(errors="replace").split("\0") if item]


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b"<absent>"
    except OSError as exc:
        return f"<unreadable: {exc.errno}>".encode()
