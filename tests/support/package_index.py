"""A stand-in package index on 127.0.0.1 for setup's egress tests: a directory served over HTTP, every request's
path kept. Nothing comes from the internet."""

from __future__ import annotations

import contextlib
import functools
import http.server
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path


class Index:
    """A ThreadingHTTPServer over `root`; `paths` lists what was asked for, in order."""

    def __init__(self, root: Path) -> None:
        self.paths: list[str] = []
        seen = self.paths

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append(self.path)
                super().do_GET()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=root))
        self.port: int = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @classmethod
    @contextlib.contextmanager
    def serving(cls, root: Path, files: Mapping[str, bytes]) -> Iterator[Index]:
        """Serve `files` (relative path -> content) from `root` until the block ends."""
        for name, content in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(content)
        index = cls(root)
        try:
            yield index
        finally:
            index.server.shutdown()
            index.server.server_close()
