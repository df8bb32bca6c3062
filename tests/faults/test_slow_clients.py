"""Clients that send too much or too slowly: cut off with an answer in the envelope, never read whole, never kept open.

A real server on loopback whose request timeout is made small (:data:`TIMEOUT`), spoken to
over raw sockets, since a polite client neither dribbles nor stops half-way through a body.
Each case is bounded by :data:`faults.raw_http.BOUND`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from conftest import LIVE_KEY, Api, FakeClock

from faults.raw_http import BOUND, read_answer
from faults.servers import gateway

TIMEOUT = 0.3  # the test server's TIDINGS_REQUEST_TIMEOUT_SECONDS
CALLBACK_LIMIT, API_LIMIT = 4096, 8192


@pytest.fixture
async def api(aiohttp_client: Any, tmp_path: Path, clock: FakeClock) -> Api:
    return await gateway(
        aiohttp_client, tmp_path, clock, request_timeout_seconds=TIMEOUT, inbound_max_body_bytes=CALLBACK_LIMIT, max_body_bytes=API_LIMIT,
    )


async def connect(api: Api) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(api.client.server.host, api.client.server.port)


def head(method: str, path: str, *lines: str) -> bytes:
    return "\r\n".join([f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *lines, "", ""]).encode()


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


@pytest.mark.parametrize(
    ("path", "headers", "limit"),
    [
        ("/api/v1/webhooks/mail", [], CALLBACK_LIMIT),
        ("/api/v1/notifications/send", [f"X-API-Key: {LIVE_KEY}"], API_LIMIT),
    ],
)
async def test_a_chunked_body_over_the_limit_is_a_413_before_the_client_has_sent_it_all(
    api: Api, path: str, headers: list[str], limit: int
) -> None:
    """The client sends limit + 1 KiB of a body meant to be 10 MB and waits: the answer comes without the rest."""
    reader, writer = await connect(api)
    try:
        writer.write(head("POST", path, "Content-Type: application/json", "Transfer-Encoding: chunked", *headers))
        for _ in range(limit // 1024 + 1):
            writer.write(chunk(b"x" * 1024))
        await writer.drain()  # and nothing more: no last chunk, the other 10 MB never come
        async with asyncio.timeout(BOUND):
            answer = await read_answer(reader)
    finally:
        writer.close()
    assert (answer.status, answer.code) == (413, "payload_too_large")


async def test_a_body_dribbled_in_is_cut_off_with_a_408_after_the_timeout(api: Api) -> None:
    reader, writer = await connect(api)
    try:
        writer.write(head("POST", "/api/v1/webhooks/mail", "Content-Type: application/json", "Content-Length: 100") + b'{"signa')
        await writer.drain()
        async with asyncio.timeout(BOUND):
            answer = await read_answer(reader)
            assert await reader.read() == b""  # and the connection is closed
    finally:
        writer.close()
    assert (answer.status, answer.code) == (408, "request_timeout")


@pytest.mark.parametrize(
    "sent",
    [
        b"",  # a connection that never says anything
        b"POST /api/v1/webhooks/mail HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ",  # headers that never end
        head("GET", "/healthz"),  # one request, then an idle keep-alive connection
    ],
    ids=["silent", "slow headers", "idle keep-alive"],
)
async def test_a_connection_that_does_not_finish_a_request_is_closed_after_the_timeout(api: Api, sent: bytes) -> None:
    reader, writer = await connect(api)
    try:
        writer.write(sent)
        await writer.drain()
        async with asyncio.timeout(BOUND):
            if sent.startswith(b"GET"):
                assert (await read_answer(reader)).status == 200
            assert await reader.read() == b""
    finally:
        writer.close()


async def test_a_body_whose_chunks_break_off_mid_way_is_answered_within_the_timeout(api: Api) -> None:
    """Headers first; once the server asks for the body (100 Continue), a chunk size that is no number.

    aiohttp's C parser drops such a body without telling the reader, so the answer is the
    timeout's 408; its pure-Python parser tells the reader, and the answer is 400 invalid_body.
    Either way the client is answered in the envelope, in bounded time.
    """
    reader, writer = await connect(api)
    try:
        writer.write(head("POST", "/api/v1/webhooks/mail", "Content-Type: application/json", "Transfer-Encoding: chunked", "Expect: 100-continue"))
        await writer.drain()
        async with asyncio.timeout(BOUND):
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 100")
            writer.write(chunk(b'{"a": 1') + b"zz\r\n}\r\n")
            await writer.drain()
            answer = await read_answer(reader)
    finally:
        writer.close()
    assert (answer.status, answer.code) in {(400, "invalid_body"), (408, "request_timeout")}
