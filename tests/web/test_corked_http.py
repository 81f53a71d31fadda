"""The corked transport: writes of one event-loop turn reach the socket as one write, and nothing is lost."""

from __future__ import annotations

import asyncio

from bot.web.corked_http import _CorkedTransport


class _Recording(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


async def test_a_head_and_body_written_in_one_turn_go_out_as_one_write() -> None:
    socket = _Recording()
    corked = _CorkedTransport(socket)

    corked.write(b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\n")
    corked.write(b"{}")
    assert socket.writes == []
    await asyncio.sleep(0)

    assert socket.writes == [b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\n{}"]


async def test_close_sends_what_waits_first_and_a_closed_socket_gets_nothing_more() -> None:
    socket = _Recording()
    corked = _CorkedTransport(socket)

    corked.write(b"last words")
    corked.close()
    corked.write(b"too late")
    await asyncio.sleep(0)

    assert socket.writes == [b"last words"] and socket.closed
