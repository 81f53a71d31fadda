"""Inside setup's sandbox, in front of the setup command: its only way out is nofx's egress proxy.

The sandbox's network namespace has nothing but its own loopback, so this listens on 127.0.0.1, relays every
connection to the proxy's unix socket (bound into the sandbox), runs the command with the proxy variables pointing
here, and exits as the command did. It is copied beside the socket and run by the worker's own interpreter with
`-I -S`: the standard library only, nothing of nofx and nothing the sandbox's environment could inject.

Usage: python3 -I -S forward.py <proxy socket> <command argv…>
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy")


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until end of stream, then pass the half close on (a CONNECT tunnel's TLS needs both directions).
    The egress proxy uses it too: this file imports nothing but the standard library."""
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()


async def _run(proxy_socket: str, argv: list[str]) -> int:
    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(proxy_socket)
        except OSError:
            writer.close()
            return
        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            up_writer.close()
            writer.close()

    server = await asyncio.start_server(relay, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    env = {**os.environ, **dict.fromkeys(PROXY_VARIABLES, url), "NO_PROXY": "", "no_proxy": ""}
    process = await asyncio.create_subprocess_exec(*argv, env=env)
    code = await process.wait()
    server.close()
    return code if code >= 0 else 128 - code  # killed by a signal: as a shell reports it


def main() -> None:
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        sys.exit("usage: forward.py <proxy socket> -- <command argv…>")
    sys.exit(asyncio.run(_run(sys.argv[1], sys.argv[3:])))


if __name__ == "__main__":
    main()
