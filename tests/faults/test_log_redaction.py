"""API keys and recipients never reach the log: not through aiohttp's own error lines, not at DEBUG.

The server on loopback logs through :func:`gateway.logconfig.configure_logging` exactly as
``tidings serve`` sets it up, at DEBUG, to the captured stderr; requests go out as raw bytes,
since only a raw client can send the header lines aiohttp cannot parse (and then logs as sent).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import LIVE_KEY, Api, FakeClock

from faults.raw_http import exchange, request
from faults.servers import gateway
from gateway.logconfig import configure_logging, redact_credentials
from plugins.sandbox import SandboxProvider

OTHER_SECRET = "sk_live_not_a_tidings_key_0123456789"


@pytest.fixture
async def api(aiohttp_client: Any, tmp_path: Path, clock: FakeClock) -> Api:
    policy = """
        channels:
          email: {providers: [sandbox]}
        """
    return await gateway(aiohttp_client, tmp_path, clock, {"sandbox": SandboxProvider}, providers="sandbox: {plugin: sandbox}\n", policy=policy)


@pytest.fixture
def served_log(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[[str], None]]:
    """Log as the server does, at DEBUG, to the captured stderr; pytest's own handlers come back afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level, {name: logging.getLogger(name).level for name in ("aiohttp.access", "watchfiles.main")}
    yield lambda fmt: configure_logging("DEBUG", fmt)
    root.handlers[:], root.level = saved[0], saved[1]
    for name, level in saved[2].items():
        logging.getLogger(name).setLevel(level)


HEAD = b"GET /api/v1/notifications HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
BAD_LINES = [
    b"X-API-Key: " + LIVE_KEY.encode() + b"\x00",
    b"Authorization: Bearer " + LIVE_KEY.encode() + b"\x01",
    b"X-API-Key: " + OTHER_SECRET.encode() + b"\x00",
    b"Authorization: Basic " + OTHER_SECRET.encode() + b"\x7f",
    b"x-api-key:\t" + LIVE_KEY.encode() + b"\x00trailing",
]


@pytest.mark.parametrize("fmt", ["text", "json"])
async def test_a_key_in_a_header_line_aiohttp_cannot_parse_never_reaches_the_log(
    api: Api, served_log: Callable[[str], None], capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    served_log(fmt)
    for line in BAD_LINES:
        answer = await exchange(api.client.server.host, api.client.server.port, HEAD + line + b"\r\n\r\n")
        assert answer.status == 400
    logged = capsys.readouterr().err
    assert logged.count("Invalid header value char") >= len(BAD_LINES)  # aiohttp did log each line it refused
    if fmt == "json":
        assert all("exception" in orjson.loads(line) for line in logged.splitlines() if "Error handling request" in line)
    assert LIVE_KEY not in logged and LIVE_KEY[4:] not in logged
    assert OTHER_SECRET not in logged


async def test_a_send_at_debug_logs_neither_its_recipient_nor_its_idempotency_key(
    api: Api, served_log: Callable[[str], None], capsys: pytest.CaptureFixture[str]
) -> None:
    """A guard: today nothing at all is logged for an accepted and delivered send, and so it must stay for these."""
    served_log("text")
    recipient, idempotency_key = "ada.private@example.com", "order-7f3a9c-shipped"
    body = {"recipient": {"email": recipient}, "notification": {"channels": ["email"], "subject": "Hi", "body": "Your order shipped"}}
    answer = await exchange(
        api.client.server.host, api.client.server.port,
        request("POST", "/api/v1/notifications/send", {"X-API-Key": LIVE_KEY, "Content-Type": "application/json",
                                                         "Idempotency-Key": idempotency_key}, orjson.dumps(body)),
    )
    assert answer.status == 202
    await api.wait_for(answer.json()["notification_id"], lambda n: n["status"] == "delivered")
    logged = capsys.readouterr().err
    assert recipient not in logged and idempotency_key not in logged and LIVE_KEY not in logged


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("X-API-Key: tdk_abc_123", "X-API-Key: ********"),
        ("{'Authorization': 'Bearer eyJhbGciOi.x.y', 'Host': 'a'}", "'Authorization': 'Bearer ********', 'Host': 'a'"),
        ("authorization=Basic dXNlcjpwYXNz", "authorization=Basic ********"),
        ("key tdk_acme_live_key_for_tests_0001 refused", "key tdk_******** refused"),
        ("Authorizationless text and x-api-keys in prose", "Authorizationless text and x-api-keys in prose"),
    ],
)
def test_credentials_are_masked_wherever_they_stand_in_a_line(text: str, kept: str) -> None:
    assert kept in redact_credentials(text)
