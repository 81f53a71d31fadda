"""Git smart HTTP on 127.0.0.1 through the real `git http-backend`, refusing anyone without an installation token.

Clone, fetch and push against it prove that the bot authenticates the way GitHub expects: HTTP Basic with the
user `x-access-token` and the installation token as the password, and nothing at all without one.
"""

from __future__ import annotations

import base64
import binascii
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

TOKEN_USER = "x-access-token"
SERVER_IDENTITY = {
    "GIT_AUTHOR_NAME": "Upstream Dev",
    "GIT_AUTHOR_EMAIL": "dev@example.test",
    "GIT_COMMITTER_NAME": "Upstream Dev",
    "GIT_COMMITTER_EMAIL": "dev@example.test",
}


@dataclass(frozen=True)
class GitRequest:
    """One request the server answered, for assertions about what the client did and how it authenticated."""

    method: str
    path: str
    query: str
    authorized: bool
    status: int
    stderr: str = ""  # what http-backend complained about, for debugging a failing test

    @property
    def service(self) -> str:
        """`git-upload-pack` (clone, fetch) or `git-receive-pack` (push), from the query or the path."""
        for name in ("git-upload-pack", "git-receive-pack"):
            if name in self.query or self.path.endswith(name):
                return name
        return ""


class GitServer:
    """Bare repositories under `root`, served as `/<owner>/<repo>.git` over git smart HTTP."""

    def __init__(self, root: Path, accept_token: Callable[[str], bool] | None = None) -> None:
        self.root = Path(root)
        self.tokens: set[str] = set()
        self.accept_token = accept_token or self.tokens.__contains__
        self.requests: list[GitRequest] = []
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> GitServer:
        self.root.mkdir(parents=True, exist_ok=True)
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, name="git-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> GitServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the git server is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def url_for(self, owner: str, repo: str) -> str:
        """The clone URL, shaped like a payload's `repository.clone_url`."""
        return f"{self.base_url}/{owner}/{repo}.git"

    def add_token(self, token: str) -> None:
        """Accept `token` from now on (only when the default token set is in use)."""
        self.tokens.add(token)

    def requests_for(self, service: str | None = None, *, authorized: bool | None = None) -> list[GitRequest]:
        with self._lock:
            found = list(self.requests)
        return [
            r
            for r in found
            if (service is None or r.service == service) and (authorized is None or r.authorized == authorized)
        ]

    # ------------------------------------------------------------ repositories

    def repo_path(self, owner: str, repo: str) -> Path:
        return self.root / owner / f"{repo}.git"

    def create_repo(
        self, owner: str, repo: str, files: dict[str, str], *, default_branch: str = "main", message: str = "Initial"
    ) -> Path:
        """A bare repository that accepts pushes, holding one commit with `files` on `default_branch`."""
        path = self.repo_path(owner, repo)
        path.parent.mkdir(parents=True, exist_ok=True)
        run_git(None, "init", "--quiet", "--bare", f"--initial-branch={default_branch}", str(path))
        run_git(path, "config", "http.receivepack", "true")
        self.commit(owner, repo, files, branch=default_branch, message=message)
        return path

    def commit(
        self,
        owner: str,
        repo: str,
        files: dict[str, str | None],
        *,
        branch: str = "main",
        message: str = "Upstream change",
    ) -> str:
        """Commit on top of `branch` (created if missing) without a work tree; a None content deletes the file."""
        path = self.repo_path(owner, repo)
        parent = run_git(path, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}", check=False).strip()
        with tempfile.TemporaryDirectory(prefix="git-server-index-") as tmp:
            index = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            if parent:
                run_git(path, "read-tree", parent, env=index)
            for name, content in files.items():
                if content is None:
                    run_git(path, "update-index", "--force-remove", "--", name, env=index)
                    continue
                blob = run_git(path, "hash-object", "-w", "--stdin", input=content.encode()).strip()
                run_git(path, "update-index", "--add", "--cacheinfo", f"100644,{blob},{name}", env=index)
            tree = run_git(path, "write-tree", env=index).strip()
        parents = ["-p", parent] if parent else []
        sha = run_git(path, "commit-tree", tree, *parents, "-m", message).strip()
        run_git(path, "update-ref", f"refs/heads/{branch}", sha)
        return sha

    def commit_many(self, owner: str, repo: str, files: dict[str, str | bytes], *, branch: str = "main") -> str:
        """Like `commit`, for thousands of files at once: one `git fast-import` instead of two commands a file."""
        path = self.repo_path(owner, repo)
        parent = run_git(path, "rev-parse", "--verify", f"refs/heads/{branch}").strip()
        stream = [f"commit refs/heads/{branch}", "committer Upstream Dev <dev@example.test> 1700000000 +0000"]
        stream += ["data 11", "Many files", f"from {parent}"]
        body = "\n".join(stream).encode() + b"\n"
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            body += f"M 100644 inline {name}\ndata {len(data)}\n".encode() + data + b"\n"
        run_git(path, "fast-import", "--quiet", input=body)
        return run_git(path, "rev-parse", f"refs/heads/{branch}").strip()

    def show(self, owner: str, repo: str, ref: str, path: str) -> str:
        """A file's content at `ref` in the served repository (`git show ref:path`)."""
        return run_git(self.repo_path(owner, repo), "show", f"{ref}:{path}")

    def git(self, owner: str, repo: str, *args: str, check: bool = True) -> str:
        """Any git command in the served repository, e.g. `log -1 --format=%an <%ae> main`."""
        return run_git(self.repo_path(owner, repo), *args, check=check)

    # ------------------------------------------------------------ serving

    def _authorized(self, header: str | None) -> bool:
        if not header:
            return False
        scheme, _, credential = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(credential.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return user == TOKEN_USER and bool(password) and self.accept_token(password)

    def _record(self, request: GitRequest) -> None:
        with self._lock:
            self.requests.append(request)


def run_git(
    repo: Path | None,
    *args: str,
    env: dict[str, str] | None = None,
    input: bytes | None = None,
    check: bool = True,
) -> str:
    """Plain git for the server side, isolated from the user's and the system's git config."""
    command = ["git", *(["--git-dir", str(repo)] if repo is not None else []), *args]
    result = subprocess.run(command, input=input, capture_output=True, env={**server_env(), **(env or {})}, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {result.stderr.decode(errors='replace')}")
    return result.stdout.decode(errors="replace")


def server_env() -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": os.environ.get("HOME", "/"),
        "LC_ALL": "C",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        **SERVER_IDENTITY,
    }


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, git: GitServer) -> None:
        self.git = git
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    """Runs `git http-backend` as a CGI script, after checking the installation token."""

    server: _Server
    protocol_version = "HTTP/1.0"  # the connection closes after each answer, so bodies need no length

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _handle(self) -> None:
        git = self.server.git
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        body = self._read_body()
        if not git._authorized(self.headers.get("Authorization")):
            git._record(GitRequest(self.command, path, parts.query, False, 401))
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="GitHub"')
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"Authentication required\n")
            return
        status, stderr = self._run_backend(path, parts.query, body)
        git._record(GitRequest(self.command, path, parts.query, True, status, stderr))

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _run_backend(self, path: str, query: str, body: bytes) -> tuple[int, str]:
        env = {
            **server_env(),
            "GIT_PROJECT_ROOT": str(self.server.git.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GATEWAY_INTERFACE": "CGI/1.1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": TOKEN_USER,  # http-backend refuses receive-pack for anonymous users
            "REMOTE_ADDR": self.client_address[0],
        }
        for header in ("Content-Encoding", "Git-Protocol"):
            if value := self.headers.get(header):
                env["HTTP_" + header.upper().replace("-", "_")] = value
        backend = shutil.which("git") or "git"
        process = subprocess.Popen(
            [backend, "http-backend"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        assert process.stdin is not None and process.stdout is not None and process.stderr is not None
        stderr: list[bytes] = []
        errors = process.stderr
        feeder = threading.Thread(target=_feed, args=(process.stdin, body), daemon=True)
        drain = threading.Thread(target=lambda: stderr.append(errors.read()), daemon=True)
        feeder.start()
        drain.start()
        status, headers = _cgi_headers(process.stdout)
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        shutil.copyfileobj(process.stdout, self.wfile, 1 << 16)
        process.wait()
        feeder.join()
        drain.join()
        return status, b"".join(stderr).decode(errors="replace")


def _feed(stream: Any, body: bytes) -> None:
    try:
        stream.write(body)
    except BrokenPipeError:
        pass
    finally:
        stream.close()


def _cgi_headers(stdout: Any) -> tuple[int, list[tuple[str, str]]]:
    """The status and headers a CGI script printed before its body."""
    status = 200
    headers: list[tuple[str, str]] = []
    for raw in iter(stdout.readline, b""):
        line = raw.decode("latin-1").rstrip("\r\n")
        if not line:
            break
        name, _, value = line.partition(":")
        if name.lower() == "status":
            status = int(value.strip().split()[0])
        else:
            headers.append((name, value.strip()))
    return status, headers
