"""THE git runner: a scrubbed environment, the token only as an HTTP header, a time limit, the process group killed.

Every git command nofx runs goes through `run_git`: nothing inherited but PATH and HOME, no hooks, no prompts, no
credential helpers, output redacted of the token, and on a timeout or cancellation git and its helpers are killed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shlex
import signal
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

TOKEN_USER = "x-access-token"  # noqa: S105 - the user name GitHub wants, not a secret
GIT_TIMEOUT_S = 900.0


class GitError(Exception):
    """A git command failed; the message names the command and ends with git's own words, never a token."""

    def __init__(self, args: Sequence[str], returncode: int | None, stderr: str, *, summary: str | None = None) -> None:
        self.command = shlex.join(["git", *args])
        self.returncode = returncode
        self.stderr = stderr
        tail = stderr.strip()[-2000:]
        message = summary or f"`{self.command}` failed (exit {returncode})"
        super().__init__(f"{message}: {tail}" if tail else message)


def authorization_header(token: str) -> str:
    """The header GitHub accepts for git over HTTPS with an installation token (what actions/checkout sends)."""
    credential = base64.b64encode(f"{TOKEN_USER}:{token}".encode()).decode()
    return f"AUTHORIZATION: basic {credential}"


def git_env(token: str | None, *, url: str | None = None, user_config: bool = False) -> dict[str, str]:
    """A complete environment for git: nothing inherited but PATH and HOME, no prompts, no hooks, token as a header.

    `user_config` lets git read the person's own global and system config (`nofx run` and `nofx review` on their
    machine, e.g. for `user.name`); nofx's own settings below still win over it.

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
        scope = f"http.{http_origin(url)}.extraheader" if url else "http.extraheader"
        config += [(scope, ""), (scope, authorization_header(token))]  # the empty value drops inherited headers
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": os.environ.get("HOME", "/nonexistent"),
        "LC_ALL": "C",  # stable, English messages
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "",
        "GIT_ALLOW_PROTOCOL": "http:https",
        # Abort a transfer that stalls below 1 kB/s for a minute instead of holding the lock forever.
        "GIT_HTTP_LOW_SPEED_LIMIT": "1000",
        "GIT_HTTP_LOW_SPEED_TIME": "60",
        "GIT_CONFIG_COUNT": str(len(config)),
    }
    if user_config:
        if "XDG_CONFIG_HOME" in os.environ:
            env["XDG_CONFIG_HOME"] = os.environ["XDG_CONFIG_HOME"]
    else:
        env |= {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
    for i, (key, value) in enumerate(config):
        env[f"GIT_CONFIG_KEY_{i}"] = key
        env[f"GIT_CONFIG_VALUE_{i}"] = value
    return env


def http_origin(url: str | None) -> str:
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


@dataclass(frozen=True)
class GitResult:
    """What a git command left: its exit code (None when stopped after `max_bytes`), its output, redacted."""

    returncode: int | None
    stdout: str
    stderr: str
    truncated: bool = False  # stdout was cut after `max_bytes`, and git stopped: the rest was never read
    stdout_bytes: bytes = field(default=b"", repr=False)  # undecoded, for object contents (`cat-file --batch`)


async def run_git(
    args: Sequence[str],
    *,
    env: dict[str, str],
    cwd: Path | None = None,
    secrets: Sequence[str] = (),
    input: bytes | None = None,
    timeout_s: float = GIT_TIMEOUT_S,
    max_bytes: int | None = None,
) -> GitResult:
    """Run git, kill its whole process group on timeout, cancellation or too much output; output comes back redacted.

    With `max_bytes`, stdout is read as it comes and git is stopped once it passed `max_bytes`: a huge diff costs
    neither the memory nor the time of reading it all.
    """
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
        async with asyncio.timeout(timeout_s):
            if max_bytes is None:
                out, err = await process.communicate(input)
                truncated = False
            else:
                out, err, truncated = await _read_limited(process, input, max_bytes)
    except BaseException as exc:
        _kill_group(process)
        await process.wait()
        if isinstance(exc, TimeoutError):
            raise GitError(
                args, None, "", summary=f"`{shlex.join(['git', *args])}` timed out after {timeout_s}s"
            ) from None
        raise
    if truncated:
        _kill_group(process)
        await process.wait()
    return GitResult(
        returncode=None if truncated else process.returncode,
        stdout=_redact(out.decode(errors="replace"), secrets),
        stderr=_redact(err.decode(errors="replace"), secrets),
        truncated=truncated,
        stdout_bytes=out if not secrets else b"",
    )


async def _read_limited(
    process: asyncio.subprocess.Process, input: bytes | None, max_bytes: int
) -> tuple[bytes, bytes, bool]:
    """stdout up to just past `max_bytes` (whole if shorter), stderr drained alongside so a full pipe cannot stall git."""
    assert process.stdout is not None and process.stderr is not None
    if input is not None:
        assert process.stdin is not None
        process.stdin.write(input)
        await process.stdin.drain()
        process.stdin.close()
    errors = asyncio.ensure_future(process.stderr.read())
    chunks: list[bytes] = []
    size = 0
    try:
        while chunk := await process.stdout.read(65536):
            chunks.append(chunk)
            size += len(chunk)
            if size > max_bytes:
                errors.cancel()
                return b"".join(chunks), b"", True
        await process.wait()
        return b"".join(chunks), await errors, False
    except BaseException:
        errors.cancel()
        raise


def _kill_group(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


async def git(
    *args: str,
    token: str | None = None,
    url: str | None = None,
    cwd: Path | None = None,
    extra_env: dict[str, str] | None = None,
    input: bytes | None = None,
    check: bool = True,
    timeout_s: float = GIT_TIMEOUT_S,
    user_config: bool = False,
) -> str:
    """stdout of one git command; `token` goes into git's environment as a header scoped to `url`, nowhere else."""
    env = {**git_env(token, url=url, user_config=user_config), **(extra_env or {})}
    result = await run_git(args, env=env, cwd=cwd, secrets=_secrets(token), input=input, timeout_s=timeout_s)
    if check and result.returncode != 0:
        raise GitError(args, result.returncode, result.stderr)
    return result.stdout


async def git_or_none(
    *args: str,
    cwd: Path | None = None,
    extra_env: dict[str, str] | None = None,
    timeout_s: float = GIT_TIMEOUT_S,
    user_config: bool = False,
) -> str | None:
    """stdout of a local query that may legitimately fail (a ref that does not exist), else None."""
    env = {**git_env(None, user_config=user_config), **(extra_env or {})}
    result = await run_git(args, env=env, cwd=cwd, timeout_s=timeout_s)
    return result.stdout.strip() if result.returncode == 0 else None
