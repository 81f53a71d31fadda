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
        scope = f"http.{http_origin(url)}.extraheader" if url else "http.extraheader"
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


async def run_git(
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


async def git(
    *args: str,
    token: str | None = None,
    url: str | None = None,
    cwd: Path | None = None,
    extra_env: dict[str, str] | None = None,
    input: bytes | None = None,
    check: bool = True,
) -> str:
    env = {**git_env(token, url=url), **(extra_env or {})}
    code, out, err = await run_git(args, env=env, cwd=cwd, secrets=_secrets(token), input=input)
    if check and code != 0:
        raise GitError(args, code, err)
    return out


async def git_or_none(*args: str, cwd: Path | None = None) -> str | None:
    """stdout of a local query that may legitimately fail (a ref that does not exist), else None."""
    code, out, _ = await run_git(args, env=git_env(None), cwd=cwd)
    return out.strip() if code == 0 else None
