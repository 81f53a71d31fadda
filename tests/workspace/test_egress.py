"""setup's egress proxy: which addresses it admits, and that it connects to the very address it checked.

The proxy is driven over its own unix socket, as the forwarder in the sandbox drives it (no bubblewrap needed);
the last tests run real commands behind the forwarder in the sandbox and skip, saying why, where bwrap cannot work.
"""

from __future__ import annotations

import asyncio
import ipaddress
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.settings import Settings, SettingsError
from bot.workspace import egress
from bot.workspace import isolation as layouts
from bot.workspace.egress import (
    SOCKET_NAME,
    Allowed,
    EgressPolicy,
    EgressProxy,
    IPAddress,
    address_kind,
    egress_proxy,
    system_resolve,
)
from bot.workspace.sandbox import run_command
from tests.support.package_index import Index

NO_BWRAP = "bwrap is not installed or cannot create namespaces here (isolation.probe() says why)"


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),  # the worker's Redis, PostgreSQL
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),  # unique local
        ("169.254.169.254", "link-local"),  # the cloud metadata endpoint
        ("fe80::1", "link-local"),
        ("fd00:ec2::254", "private"),  # EC2's IPv6 metadata endpoint
        ("100.64.0.1", "shared (CGNAT)"),
        ("224.0.0.1", "multicast"),  # Python's is_global alone calls this global
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),  # noqa: S104 - connecting there reaches the host's own listeners
        ("::", "unspecified"),
        ("240.0.0.1", "private"),
        ("255.255.255.255", "private"),
        ("192.0.2.1", "private"),  # documentation
        ("fec0::1", "site-local"),
        ("::ffff:127.0.0.1", "loopback (inside the IPv6 address)"),  # IPv4-mapped
        ("::ffff:169.254.169.254", "link-local"),
        ("2002:7f00:1::1", "loopback (inside the IPv6 address)"),  # 6to4 of 127.0.0.1
        ("64:ff9b::a9fe:a9fe", "link-local"),  # NAT64 of 169.254.169.254
        ("8.8.8.8", None),
        ("151.101.0.223", None),  # pypi.org
        ("2606:4700::1111", None),
        ("::ffff:8.8.8.8", None),  # a mapped address reaches the IPv4 one
        ("64:ff9b::808:808", None),  # NAT64 of 8.8.8.8: an IPv6-only worker reaches pypi.org so
    ],
)
def test_only_public_addresses_pass(address: str, kind: str | None) -> None:
    found = address_kind(ipaddress.ip_address(address))
    assert found == kind if kind is None else found is not None and found.startswith(kind), found


def test_ports_other_than_80_and_443_and_private_hosts_need_the_operator() -> None:
    policy = EgressPolicy.from_settings(
        "proxy", "pypi.internal, 10.9.0.0/16:3141 [fd00::/8]:8080,127.0.0.1:8000 *:9418"
    )
    public, private, mirror = (ipaddress.ip_address(a) for a in ("8.8.8.8", "10.9.1.1", "10.20.0.5"))
    assert policy.refusal("example.com", public, 443) is None
    assert policy.refusal("example.com", public, 22) == "port 22 is neither 80 nor 443"
    assert policy.refusal("git.example.com", public, 9418) is None  # `*:9418`: any public address on that port
    assert policy.refusal("pypi.internal", mirror, 443) is None  # named: its private address is the operator's
    assert policy.refusal("pypi.internal", mirror, 3141) is not None  # named without a port: 80 and 443
    assert policy.refusal("elsewhere", mirror, 443) == "10.20.0.5 is private, not a public address"
    assert policy.refusal("anything", private, 3141) is None  # the network, on its port
    assert policy.refusal("anything", private, 443) == "10.9.1.1 is private, not a public address"
    assert policy.refusal("x", ipaddress.ip_address("fd00::5"), 8080) is None
    assert policy.refusal("x", ipaddress.ip_address("127.0.0.1"), 8000) is None
    assert policy.refusal("x", ipaddress.ip_address("127.0.0.1"), 6379) is not None  # not the Redis beside it
    assert policy.refusal("x", ipaddress.ip_address("169.254.169.254"), 80) is not None


@pytest.mark.parametrize("entry", ["*", "host:0", "host:99999", "bad host", "a:b:c", "[fd00::1]:x"])
def test_a_malformed_allow_entry_is_refused_naming_the_setting(entry: str) -> None:
    with pytest.raises(ValueError, match="NOFX_SETUP_EGRESS_ALLOW"):
        Allowed.parse(entry)


def test_an_unknown_mode_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="NOFX_SETUP_EGRESS"):
        EgressPolicy("open")
    with pytest.raises(SettingsError, match="NOFX_SETUP_EGRESS must be `proxy` \\(the default\\), `host` or `none`"):
        Settings.from_env({"NOFX_SETUP_EGRESS": "open"}, env_file=tmp_path / ".env")


@pytest.fixture
def index(tmp_path: Path) -> Iterator[Index]:
    with Index.serving(tmp_path / "index", {"greeting.txt": b"hello from the index\n"}) as served:
        yield served


async def ask(proxy: EgressProxy, request: bytes) -> bytes:
    """Send one request over the proxy's socket, as the forwarder relays it; everything the proxy answered."""
    reader, writer = await asyncio.open_unix_connection(str(proxy.directory / SOCKET_NAME))
    writer.write(request)
    answer = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    return answer


async def test_a_loopback_destination_is_refused_with_a_403_that_names_it() -> None:
    async with egress_proxy(EgressPolicy()) as proxy:
        tunnel = await ask(proxy, b"CONNECT 127.0.0.1:6379 HTTP/1.1\r\nHost: 127.0.0.1:6379\r\n\r\n")
        plain = await ask(proxy, b"GET http://169.254.169.254/latest/meta-data/ HTTP/1.1\r\nHost: x\r\n\r\n")
        mapped = await ask(proxy, b"CONNECT [::ffff:127.0.0.1]:443 HTTP/1.1\r\n\r\n")

    assert tunnel.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert b"refused 127.0.0.1:6379: 127.0.0.1 is loopback, not a public address" in tunnel
    assert plain.startswith(b"HTTP/1.1 403 ") and b"169.254.169.254 is link-local" in plain
    assert mapped.startswith(b"HTTP/1.1 403 ") and b"inside the IPv6 address" in mapped
    assert list(proxy.log.refused) == ["127.0.0.1:6379", "169.254.169.254:80", "[::ffff:127.0.0.1]:443"]
    assert proxy.log.reached == {}


async def test_an_allowed_host_is_fetched_and_only_host_and_port_are_recorded(index: Index) -> None:
    policy = EgressPolicy.from_settings("proxy", f"127.0.0.1:{index.port}")
    async with egress_proxy(policy) as proxy:
        answer = await ask(
            proxy,
            f"GET http://user:hunter2@127.0.0.1:{index.port}/greeting.txt?token=abc HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{index.port}\r\nProxy-Authorization: Basic c2VjcmV0\r\n\r\n".encode(),
        )

    assert answer.startswith(b"HTTP/1.0 200 ") and answer.endswith(b"hello from the index\n")
    assert index.paths == ["/greeting.txt?token=abc"]  # the origin-form the server expects
    assert proxy.log.reached == {f"127.0.0.1:{index.port}": 1}
    summary = proxy.log.summary()
    assert summary == f"nofx egress proxy: setup reached 127.0.0.1:{index.port}\n"
    assert "hunter2" not in summary and "token" not in summary


async def test_the_proxy_connects_to_the_address_it_checked_never_a_second_lookup(index: Index) -> None:
    """DNS rebinding: a name that answers a permitted address to the check and a forbidden one a moment later.
    `.invalid` never resolves on the host: the fetch can only work by connecting to the checked address."""
    answers = [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("169.254.169.254")]
    asked: list[str] = []

    async def rebinding(host: str, port: int) -> list[IPAddress]:
        asked.append(host)
        return [answers[min(len(asked) - 1, 1)]]

    policy = EgressPolicy.from_settings("proxy", f"127.0.0.1/32:{index.port}")
    async with egress_proxy(policy, resolve=rebinding) as proxy:
        answer = await ask(
            proxy,
            f"GET http://index.invalid:{index.port}/greeting.txt HTTP/1.1\r\nHost: index.invalid\r\n\r\n".encode(),
        )

    assert asked == ["index.invalid"]
    assert answer.endswith(b"hello from the index\n") and index.paths == ["/greeting.txt"]
    with pytest.raises(OSError):
        await system_resolve("index.invalid", index.port)


async def test_what_is_not_a_proxy_request_gets_a_400() -> None:
    async with egress_proxy(EgressPolicy()) as proxy:
        origin = await ask(proxy, b"GET /latest/meta-data/ HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n")
        https = await ask(proxy, b"GET https://example.com/ HTTP/1.1\r\n\r\n")

    assert origin.startswith(b"HTTP/1.1 400 ") and https.startswith(b"HTTP/1.1 400 ")
    assert proxy.log.reached == {} and proxy.log.refused == {}


# --- behind the forwarder, in the sandbox -------------------------------------------------------------------------


@pytest.fixture
def bwrap() -> None:
    if not layouts.probe().ok:
        pytest.skip(NO_BWRAP)


async def test_setup_tools_go_through_the_proxy_and_see_its_refusal(bwrap: None, index: Index, tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed on this machine")
    fetch = f"http://127.0.0.1:{index.port}/greeting.txt"
    command = (
        f"curl -sS {fetch}; curl -sS https://127.0.0.1:{index.port}/ ; curl -sS http://169.254.169.254/; "
        f"python3 -c \"import urllib.request as r; print(r.urlopen('{fetch}').read().decode().strip() + ' again')\""
    )

    allowed = EgressPolicy.from_settings("proxy", f"127.0.0.1:{index.port}")
    result = await run_command(command, cwd=tmp_path, timeout_s=60, network=True, egress=allowed)
    refused = await run_command(command, cwd=tmp_path, timeout_s=60, network=True)

    assert result.ok, result.output
    assert "hello from the index\n" in result.output and "hello from the index again\n" in result.output
    assert "nofx egress proxy: refused 169.254.169.254:80: 169.254.169.254 is link-local" in result.output
    assert result.reached == (f"127.0.0.1:{index.port}",) and result.refused == ("169.254.169.254:80",)
    assert "hello" not in refused.output and "CONNECT tunnel failed, response 403" in refused.output
    assert f"nofx egress proxy: refused 127.0.0.1:{index.port}: 127.0.0.1 is loopback" in refused.output
    assert index.paths == ["/greeting.txt", "/greeting.txt"]


async def test_past_the_connection_cap_the_proxy_answers_503(monkeypatch: pytest.MonkeyPatch) -> None:
    """setup may not exhaust the worker's file descriptors: each connection beyond the cap is answered and closed."""
    monkeypatch.setattr(egress, "MAX_CONNECTIONS", 3)
    async with egress_proxy(EgressPolicy()) as proxy:
        idle = [await asyncio.open_unix_connection(str(proxy.directory / SOCKET_NAME)) for _ in range(3)]
        answer = await ask(proxy, b"CONNECT example.com:443 HTTP/1.1\r\n\r\n")
        for _, writer in idle:
            writer.close()

    assert answer.startswith(b"HTTP/1.1 503 ") and b"more than 3 connections at once" in answer
    assert proxy.log.reached == {} and proxy.log.refused == {}
