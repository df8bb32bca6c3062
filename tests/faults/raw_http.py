"""HTTP/1.1 spoken byte by byte over a loopback socket, for what a well-behaved client cannot send.

aiohttp's client refuses header values that are not text, never sends a malformed header line,
and reads a whole answer before it returns; a fault case needs all three, and to stop writing
half-way through a body. Each call is bounded in time: a server that never answers fails the
test instead of hanging it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import orjson

BOUND = 5.0  # seconds any one exchange may take before the test fails


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)

    @property
    def code(self) -> str | None:
        """The error envelope's code, or None if the body is not the envelope."""
        try:
            error = self.json()["error"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return None
        return error.get("code") if isinstance(error, dict) and isinstance(error.get("message"), str) else None


def request(method: str, target: str, headers: dict[str, bytes | str] | None = None, body: bytes = b"") -> bytes:
    """One request as bytes, header values sent exactly as given (bytes are not encoded)."""
    lines = [f"{method} {target} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"Connection: close"]
    for name, value in (headers or {}).items():
        lines.append(name.encode() + b": " + (value if isinstance(value, bytes) else value.encode()))
    if body:
        lines.append(f"Content-Length: {len(body)}".encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def exchange(host: str, port: int, raw: bytes) -> Answer:
    """Send ``raw``, read the answer to the end of the connection."""
    async with asyncio.timeout(BOUND):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(raw)
            await writer.drain()
            return await read_answer(reader)
        finally:
            writer.close()


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    """One answer: status line, headers, and a body by Content-Length (or to the end of the connection)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    else:
        body = await reader.read()
    return Answer(int(status_line.split()[1]), headers, body)
