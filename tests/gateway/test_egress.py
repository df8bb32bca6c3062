"""The SSRF guard: what counts as public, and that the address checked is the address connected to."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import TestServer

from gateway.egress import is_public
from gateway.provider_kit import public_connector, refused_as_private


class StubResolver(AbstractResolver):
    """DNS as a test says it is: ``answers`` maps a name to its addresses. No lookup leaves the process."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        self.asked.append(host)
        return [
            ResolveResult(
                hostname=host, host=address, port=port, family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0, flags=socket.AI_NUMERICHOST,
            )
            for address in self.answers[host]
        ]

    async def close(self) -> None:
        return None


@pytest.fixture
async def receiver(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> tuple[list[bytes], int]:
    """A loopback endpoint that keeps what it is sent; its port."""
    received: list[bytes] = []

    async def handle(request: web.Request) -> web.Response:
        received.append(await request.read())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", handle)
    server = await aiohttp_server(app, host="127.0.0.1")
    return received, int(server.port)


@pytest.mark.parametrize("addresses", [["127.0.0.1"], ["127.0.0.1", "::1"], ["10.0.0.7"], ["169.254.169.254"], ["100.100.100.200"]])
async def test_a_name_that_resolves_to_a_private_address_is_refused_on_the_socket(
    receiver: tuple[list[bytes], int], addresses: list[str]
) -> None:
    received, port = receiver
    resolver = StubResolver({"hooks.example.com": addresses})
    async with aiohttp.ClientSession(connector=public_connector(resolver=resolver)) as session:
        with pytest.raises(aiohttp.ClientError) as caught:
            await session.post(f"http://hooks.example.com:{port}/hook", data=b"{}")
    assert refused_as_private(caught.value)
    assert resolver.asked == ["hooks.example.com"], "resolved once: what was checked is what it would have connected to"
    assert received == []


async def test_the_same_name_and_stub_reach_the_receiver_through_an_unguarded_connector(receiver: tuple[list[bytes], int]) -> None:
    """The control: it is the guard, not the stub, that keeps the request from arriving."""
    received, port = receiver
    resolver = StubResolver({"hooks.example.com": ["127.0.0.1"]})
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=resolver)) as session:
        async with session.post(f"http://hooks.example.com:{port}/hook", data=b"{}") as response:
            assert response.status == 204
    assert received == [b"{}"]


async def test_a_connection_that_fails_for_another_reason_is_not_called_a_refusal(unused_tcp_port: int) -> None:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector()) as session:
        with pytest.raises(aiohttp.ClientError) as caught:
            await session.post(f"http://127.0.0.1:{unused_tcp_port}/hook")
    assert not refused_as_private(caught.value)


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("127.0.0.1", False), ("127.9.9.9", False), ("10.1.2.3", False), ("172.16.0.1", False), ("192.168.1.1", False),
        ("169.254.169.254", False), ("100.64.0.1", False), ("100.100.100.200", False), ("0.0.0.0", False), ("255.255.255.255", False),
        ("224.0.0.1", False), ("198.18.0.1", False), ("240.0.0.1", False),
        ("::1", False), ("::", False), ("fe80::1", False), ("fe80::1%eth0", False), ("fd00::1", False), ("ff02::1", False),
        ("::ffff:127.0.0.1", False), ("::ffff:169.254.169.254", False), ("2002::1", False), ("2002:7f00:1::", False),
        ("64:ff9b::7f00:1", False), ("64:ff9b::a9fe:a9fe", False),
        ("93.184.216.34", True), ("8.8.8.8", True), ("2606:4700::1111", True), ("::ffff:93.184.216.34", True), ("64:ff9b::5db8:d822", True),
    ],
)
def test_only_globally_routable_addresses_are_public(address: str, public: bool) -> None:
    assert is_public(address) is public


def test_the_kit_guard_is_the_egress_guard() -> None:
    from gateway import egress, provider_kit

    assert (provider_kit.public_connector, provider_kit.refused_as_private) == (egress.public_connector, egress.refused_as_private)


async def test_a_private_literal_in_the_url_is_refused_though_aiohttp_never_resolves_it(receiver: tuple[list[bytes], int]) -> None:
    received, port = receiver
    resolver = StubResolver({})
    async with aiohttp.ClientSession(connector=public_connector(resolver=resolver)) as session:
        for host in ("127.0.0.1", "[::ffff:127.0.0.1]", "0.0.0.0"):
            with pytest.raises(aiohttp.ClientError) as caught:
                await session.post(f"http://{host}:{port}/hook")
            assert refused_as_private(caught.value), host
    assert resolver.asked == [] and received == []
