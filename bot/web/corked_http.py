"""uvicorn's HTTP protocol with its writes corked for one turn of the event loop, as Node's `http` does.

uvicorn writes a response's head and body as two `send`s, two TCP segments: under a burst of deliveries
the second system call and segment were a tenth of the web process's CPU. Writes made in the same turn
of the loop go out as one.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CorkedHttpToolsProtocol(HttpToolsProtocol):
    """`uvicorn.run(http=CorkedHttpToolsProtocol)`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_CorkedTransport(transport))  # type: ignore[arg-type]


class _CorkedTransport:
    """A transport whose `write`s wait for the end of the current loop turn and then go out together."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def _flush(self) -> None:
        if self._pending:
            data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
            self._pending = []
            if not self._transport.is_closing():
                self._transport.write(data)

    def __getattr__(self, name: str) -> Any:  # everything else is the real transport's
        return getattr(self._transport, name)
