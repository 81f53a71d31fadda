"""setup's only way out of its sandbox: an HTTP proxy in the worker that reaches public addresses only.

setup runs in a network namespace of its own (nothing but its own loopback), as gates do. A forwarder inside the
sandbox (`forwarder.py`, run by the worker's own interpreter) listens on 127.0.0.1, points the proxy variables
there and relays each connection over a unix socket to this proxy, which reads one request (CONNECT host:port for
https, an absolute-URI request for http), resolves the host once, refuses an address that is not public
(loopback, private, link-local such as the cloud metadata endpoint 169.254.169.254, shared/CGNAT, multicast,
reserved, unspecified, and such an IPv4 address inside an IPv6 one) and ports other than 80 and 443, unless the
operator's NOFX_SETUP_EGRESS_ALLOW names them, and then connects to the very address it checked: a second lookup
would let DNS rebinding swap it for a private one. Without this, setup could reach the worker's Redis (forged RQ
jobs run in the workers), its database, the metadata endpoint and the operator's private network.

What setup reached and what was refused is kept as `host:port`, never a path, a query or credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import shutil
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from bot.workspace.forwarder import pipe
from bot.workspace.isolation import EGRESS_MOUNT

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]

MODES = ("proxy", "host", "none")
DEFAULT_PORTS = frozenset({80, 443})
MOUNT = EGRESS_MOUNT  # where the sandbox sees the proxy's socket and the forwarder
SOCKET_NAME = "proxy.sock"
FORWARDER_NAME = "forward.py"
HEAD_LIMIT = 64 * 1024  # a request line and headers; a proxy request needs far less
HEAD_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 30.0
MAX_CONNECTIONS = 100  # at once, per setup command: each holds two of the worker's file descriptors
REFUSE_LINGER_S = 5.0  # how long a connection past the cap may take to read its 503
ALLOW_HINT = "the nofx operator can allow a host with NOFX_SETUP_EGRESS_ALLOW (README, 'Dependencies: setup')"
_HOST = re.compile(r"[A-Za-z0-9_.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\]")
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_HOP_HEADERS = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"proxy-authorization", b"te", b"upgrade"})


def address_kind(address: IPAddress) -> str | None:
    """Why setup may not reach `address` by default ("loopback", "private", …), or None for a public one.

    Python's `is_global` alone is not enough: it calls multicast, and (before 3.13) 6to4 and NAT64 forms of private
    IPv4 addresses, global. An IPv4 address inside an IPv6 one (mapped, 6to4, NAT64) is judged as that address.
    """
    if isinstance(address, ipaddress.IPv6Address):
        inner = address.ipv4_mapped or address.sixtofour
        if inner is None and any(address in net for net in _NAT64):
            inner = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if inner is not None:
            kind = address_kind(inner)
            return f"{kind} (inside the IPv6 address)" if kind is not None else None
    checks = (
        (address.is_unspecified, "unspecified"),
        (address.is_loopback, "loopback"),
        (address.is_link_local, "link-local (where the cloud metadata endpoint lives)"),
        (address.is_multicast, "multicast"),
        (isinstance(address, ipaddress.IPv4Address) and address in _CGNAT, "shared (CGNAT)"),
        (isinstance(address, ipaddress.IPv6Address) and address.is_site_local, "site-local"),
        (address.is_private, "private"),
        (address.is_reserved, "reserved"),
        (not address.is_global, "not global"),
    )
    return next((kind for failed, kind in checks if failed), None)


@dataclass(frozen=True)
class Allowed:
    """One NOFX_SETUP_EGRESS_ALLOW entry: a host name, an address or network, or `*` (any public address), with a
    port (None: 80 and 443)."""

    host: str | None = None
    network: IPNetwork | None = None
    port: int | None = None

    @classmethod
    def parse(cls, entry: str) -> Allowed:
        """`host`, `host:port`, `10.0.0.0/8`, `10.0.0.5:3141`, `[fd00::/8]:3141`, `*:8443` (raises ValueError)."""
        text, port = entry.strip(), None
        if text.startswith("["):
            inner, _, rest = text[1:].partition("]")
            text, port = inner, _port(rest.removeprefix(":"), entry) if rest else None
        elif text.count(":") == 1:
            text, raw = text.split(":")
            port = _port(raw, entry)
        if text == "*":
            if port is None:
                raise ValueError(f"NOFX_SETUP_EGRESS_ALLOW: {entry!r}: `*` needs a port (`*:8443`)")
            return cls(port=port)
        with contextlib.suppress(ValueError):
            return cls(network=ipaddress.ip_network(text, strict=False), port=port)
        if not _HOST.fullmatch(text) or text.startswith("["):
            raise ValueError(f"NOFX_SETUP_EGRESS_ALLOW: {entry!r} is not a host, address, network or `*:port`")
        return cls(host=text.lower().rstrip("."), port=port)

    def admits(self, host: str, address: IPAddress, port: int) -> bool:
        if port not in ((self.port,) if self.port is not None else DEFAULT_PORTS):
            return False
        if self.host is not None:
            return host == self.host
        if self.network is not None:
            return address.version == self.network.version and address in self.network
        return address_kind(address) is None


def _port(raw: str, entry: str) -> int:
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ValueError(f"NOFX_SETUP_EGRESS_ALLOW: {entry!r} has no valid port")
    return int(raw)


@dataclass(frozen=True)
class EgressPolicy:
    """How setup reaches out (NOFX_SETUP_EGRESS): `proxy` (this module), `host` (the worker's own network, as before
    this proxy existed) or `none` (no network at all); `allow` lists what the proxy admits beyond public hosts."""

    mode: str = "proxy"
    allow: tuple[Allowed, ...] = ()

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"NOFX_SETUP_EGRESS must be one of {', '.join(MODES)}, not {self.mode!r}")

    @classmethod
    def from_settings(cls, mode: str, allow: str) -> EgressPolicy:
        """From NOFX_SETUP_EGRESS and NOFX_SETUP_EGRESS_ALLOW (entries separated by commas or spaces)."""
        return cls(mode, tuple(Allowed.parse(e) for e in re.split(r"[,\s]+", allow) if e))

    def refusal(self, host: str, address: IPAddress, port: int) -> str | None:
        """Why setup may not reach `address` (what `host` resolved to) on `port`, or None when it may."""
        if any(entry.admits(host, address, port) for entry in self.allow):
            return None
        if (kind := address_kind(address)) is not None:
            return f"{address} is {kind}, not a public address"
        if port not in DEFAULT_PORTS:
            return f"port {port} is neither 80 nor 443"
        return None


@dataclass
class EgressLog:
    """What setup's connections asked for, as `host:port`: reached (with a count) and refused (with the reason)."""

    reached: dict[str, int] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        """Lines for the end of the command's output (empty when setup asked for nothing)."""
        lines = []
        if self.reached:
            lines.append("nofx egress proxy: setup reached " + ", ".join(self.reached))
        for target, why in self.refused.items():
            lines.append(f"nofx egress proxy: refused {target}: {why}; {ALLOW_HINT}")
        return "".join(f"{line}\n" for line in lines)


class EgressProxy:
    """The proxy for one setup command, on a unix socket in a directory the sandbox sees at MOUNT."""

    def __init__(self, policy: EgressPolicy, directory: Path, resolve: Resolver) -> None:
        self.policy, self.directory, self.resolve = policy, directory, resolve
        self.log = EgressLog()
        self._connections: set[asyncio.Task[None]] = set()

    def wrapper(self) -> list[str]:
        """The argv that runs the command behind the forwarder: the worker's interpreter (see `interpreter()`)."""
        return [str(interpreter()), "-I", "-S", str(MOUNT / FORWARDER_NAME), str(MOUNT / SOCKET_NAME), "--"]

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            if len(self._connections) > MAX_CONNECTIONS:  # the worker's descriptors are not setup's to exhaust
                await _answer(writer, 503, f"nofx egress proxy: more than {MAX_CONNECTIONS} connections at once")
                writer.write_eof()  # then let the client read it: closing on its unread request would reset
                await asyncio.wait_for(_discard(reader), REFUSE_LINGER_S)
                return
            await self._handle(reader, writer)
        except (ConnectionError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass  # the client went away or sent garbage: nothing to answer
        finally:
            self._connections.discard(task)
            writer.close()

    async def close(self) -> None:
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT_S)
        request = _parse(head)
        if request is None:
            await _answer(writer, 400, "nofx egress proxy: expected CONNECT host:port or an absolute http:// URL")
            return
        host = request.host.lower().rstrip(".")  # as the allow list and the records spell it
        target = f"[{host}]:{request.port}" if ":" in host else f"{host}:{request.port}"
        opened = await self._open(host, request.port, target)
        if isinstance(opened, _Refusal):
            await _answer(writer, opened.status, f"nofx egress proxy: {opened.text}")
            return
        up_reader, up_writer = opened
        self.log.reached[target] = self.log.reached.get(target, 0) + 1
        try:
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n" if request.forward is None else b"")
            up_writer.write(request.forward or b"")
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            up_writer.close()

    async def _open(
        self, host: str, port: int, target: str
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | _Refusal:
        """Resolve once, check every address, connect to the first admitted one: the address checked is the address
        connected to. Else the status and text to answer with."""
        try:
            addresses = await asyncio.wait_for(self.resolve(host, port), CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError, UnicodeError):
            return _Refusal(502, f"cannot resolve {target}")
        reasons = [(address, self.policy.refusal(host, address, port)) for address in addresses]
        admitted = [address for address, why in reasons if why is None]
        if not admitted:
            why = next((why for _, why in reasons if why), f"{target} has no address")
            self.log.refused[target] = why
            return _Refusal(403, f"refused {target}: {why}; {ALLOW_HINT}")
        failure = ""
        for address in admitted:
            try:
                return await asyncio.wait_for(asyncio.open_connection(str(address), port), CONNECT_TIMEOUT_S)
            except (OSError, TimeoutError) as exc:
                failure = "timed out" if isinstance(exc, TimeoutError) else exc.strerror or type(exc).__name__
        return _Refusal(502, f"cannot connect to {target}: {failure}")


@dataclass(frozen=True)
class _Refusal:
    status: int  # 403: the policy refused it; 502: it could not be resolved or connected to
    text: str


@dataclass(frozen=True)
class _Request:
    host: str  # a name or an address, without brackets
    port: int
    forward: bytes | None  # for a plain http request: its head as the origin server gets it; None for CONNECT


def _parse(head: bytes) -> _Request | None:
    """A proxy request's head: `CONNECT host:port` or `METHOD http://host[:port]/path`; None when it is neither."""
    line, _, headers = head.partition(b"\r\n")
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        return None
    method, target, version = (part.decode("ascii", errors="replace") for part in parts)
    if method == "CONNECT":
        host, _, raw = target.rpartition(":")
        if not _HOST.fullmatch(host) or not raw.isdigit() or not 0 < int(raw) < 65536:
            return None
        return _Request(host.strip("[]"), int(raw), None)
    url = urlsplit(target)
    try:
        port = url.port or 80
    except ValueError:
        return None
    host = url.hostname or ""  # without the userinfo (never recorded) and the brackets
    if url.scheme != "http" or not (_HOST.fullmatch(host) or _HOST.fullmatch(f"[{host}]")):
        return None
    path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    kept = [h for h in headers.split(b"\r\n") if h and h.split(b":", 1)[0].strip().lower() not in _HOP_HEADERS]
    forward = b"\r\n".join([f"{method} {path} {version}".encode(), *kept, b"Connection: close", b"", b""])
    return _Request(host, port, forward)


async def _discard(reader: asyncio.StreamReader) -> None:
    while await reader.read(65536):
        pass


async def _answer(writer: asyncio.StreamWriter, status: int, text: str) -> None:
    reason = {400: "Bad Request", 403: "Forbidden", 502: "Bad Gateway", 503: "Service Unavailable"}[status]
    body = f"{text}\n".encode()
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
        f"Connection: close\r\n\r\n".encode()
        + body
    )
    await writer.drain()


async def system_resolve(host: str, port: int) -> list[IPAddress]:
    """The host's addresses, in the resolver's order, each once (an address literal is its own answer)."""
    with contextlib.suppress(ValueError):
        return [ipaddress.ip_address(host)]
    found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[IPAddress] = []
    for *_, sockaddr in found:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


def interpreter() -> Path:
    """The worker's own Python inside its installation (`interpreter_prefix`, which the sandbox sees): past a venv's
    symlink, or the installation's own binary when the venv holds a copy."""
    prefix = interpreter_prefix()
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (Path(sys.executable).resolve(), prefix / "bin" / version, prefix / "bin" / "python3"):
        if candidate.is_relative_to(prefix) and candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no Python interpreter under {prefix} to run setup's egress forwarder")


def interpreter_prefix() -> Path:
    """The directory the forwarder's interpreter needs read-only in the sandbox (its binary, stdlib, libpython)."""
    return Path(sys.base_prefix).resolve()


@contextlib.asynccontextmanager
async def egress_proxy(policy: EgressPolicy, *, resolve: Resolver = system_resolve) -> AsyncIterator[EgressProxy]:
    """A proxy listening for one command's lifetime, in a fresh directory with the forwarder beside its socket."""
    directory = Path(tempfile.mkdtemp(prefix="nofx-egress-"))
    proxy = EgressProxy(policy, directory, resolve)
    try:
        shutil.copyfile(Path(__file__).with_name("forwarder.py"), directory / FORWARDER_NAME)
        server = await asyncio.start_unix_server(proxy.serve, path=str(directory / SOCKET_NAME), limit=HEAD_LIMIT)
        try:
            yield proxy
        finally:
            server.close()
            await proxy.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
