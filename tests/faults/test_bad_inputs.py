"""Hostile input at the running server: every answer is a 4xx in the error envelope, and nothing is written.

A real server on loopback over a real SQLite file, with a mailgun and a vonage instance for
callbacks. Requests go out as raw bytes where a polite client could not send them (header
values that are not UTF-8). The closing figure is printed: bad inputs tried / 5xx seen.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from conftest import LIVE_KEY, Api, FakeClock, MemoryProvider

from faults.raw_http import Answer, exchange, request
from faults.servers import gateway
from plugins.vonage import VonageProvider

SEND = "/api/v1/notifications/send"
BULK = "/api/v1/notifications/bulk"
DEEP = 100_000  # deeper than any JSON parser recurses


@pytest.fixture
async def api(aiohttp_client: Any, tmp_path: Path, clock: FakeClock, memory_provider: type[MemoryProvider]) -> Api:
    providers = """
        memory: {plugin: memory}
        text: {plugin: vonage, config: {api_key: abc123, api_secret: {$file: secrets/vonage-secret},
               signature_secret: {$file: secrets/vonage-signature}}}
        """
    policy = """
        channels:
          sms: {providers: [memory]}
        templates:
          short:
            channels:
              sms: {body: "Hi {{ name | truncate(3) }}"}
        """
    return await gateway(aiohttp_client, tmp_path, clock, {"memory": memory_provider, "vonage": VonageProvider}, providers=providers, policy=policy)


def nested(depth: int) -> bytes:
    """A JSON object ``depth`` levels deep, as text (orjson will not write one past 255)."""
    return b'{"a": ' * (depth - 1) + b'"leaf"' + b"}" * (depth - 1)


def text_cursor(text: str) -> str:
    return "t" + base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def send_body(data: bytes = b"{}") -> bytes:
    return b'{"recipient": {"phone": "+14155550100"}, "notification": {"channels": ["sms"], "body": "hi", "data": ' + data + b"}}"


KEY = LIVE_KEY.encode()
JSON = b"application/json"
# (what it is, raw request, the status and code it must get)
CASES: list[tuple[str, bytes, int, str]] = [
    ("X-API-Key not UTF-8", request("GET", "/api/v1/notifications", {"X-API-Key": b"tdk_\xff\xfe\xfd"}), 400, "invalid_header"),
    ("Authorization not UTF-8", request("GET", "/api/v1/notifications", {"Authorization": b"Bearer tdk_\xc3\x28"}), 400, "invalid_header"),
    ("Idempotency-Key not UTF-8", request("POST", SEND, {"X-API-Key": KEY, "Content-Type": JSON, "Idempotency-Key": b"k\xff"}, send_body()),
     400, "invalid_header"),
    ("signature header not UTF-8 on a callback", request("POST", "/api/v1/webhooks/mail", {"Content-Type": JSON, "X-Mailgun-Signature": b"\xff"},
     b"{}"), 400, "invalid_header"),
    ("deeply nested JSON to mailgun", request("POST", "/api/v1/webhooks/mail", {"Content-Type": JSON}, b"[" * DEEP), 401,
     "webhook_verification_failed"),
    ("deeply nested signature block to mailgun", request("POST", "/api/v1/webhooks/mail", {"Content-Type": JSON},
     b'{"signature": ' + b"[" * DEEP), 401, "webhook_verification_failed"),
    ("deeply nested JSON to vonage", request("POST", "/api/v1/webhooks/text", {"Content-Type": JSON}, b'{"a": ' + b"[" * DEEP + b"]" * DEEP + b"}"),
     401, "webhook_verification_failed"),
    ("data nested 255 levels with an idempotency key", request("POST", SEND, {"X-API-Key": KEY, "Content-Type": JSON, "Idempotency-Key": "deep-1"},
     send_body(data=nested(255))), 422, "validation_failed"),
    ("data nested 255 levels in a bulk", request("POST", BULK, {"X-API-Key": KEY, "Content-Type": JSON, "Idempotency-Key": "deep-2"},
     b'{"channels": ["sms"], "body": "hi", "recipients": [{"phone": "+14155550100"}], "data": ' + nested(255) + b"}"), 422, "validation_failed"),
    ("?limit=² (a digit, but not 0-9)", request("GET", "/api/v1/notifications?limit=%C2%B2", {"X-API-Key": KEY}), 400, "invalid_parameter"),
    ("?limit=٣ (Arabic-Indic three)", request("GET", "/api/v1/dead-letters?limit=%D9%A3", {"X-API-Key": KEY}), 400, "invalid_parameter"),
    ("?limit not UTF-8", request("GET", "/api/v1/notifications?limit=%FF", {"X-API-Key": KEY}), 400, "invalid_parameter"),
    ("cursor seq:²", request("GET", f"/api/v1/replies?cursor={text_cursor('seq:²')}", {"X-API-Key": KEY}), 400, "invalid_parameter"),
    ("cursor not UTF-8", request("GET", "/api/v1/replies?cursor=%FF%FE", {"X-API-Key": KEY}), 400, "invalid_parameter"),
    ("notification id not UTF-8", request("GET", "/api/v1/notifications/ntf_%FF", {"X-API-Key": KEY}), 404, "notification_not_found"),
]


@pytest.mark.parametrize(("what", "raw", "status", "code"), CASES, ids=[case[0] for case in CASES])
async def test_a_bad_input_is_a_4xx_with_a_code_and_writes_nothing(api: Api, what: str, raw: bytes, status: int, code: str) -> None:
    answer = await exchange(api.client.server.host, api.client.server.port, raw)
    assert (answer.status, answer.code) == (status, code), (what, answer.body[:300])
    assert b"Traceback" not in answer.body
    await assert_nothing_queued(api)


async def assert_nothing_queued(api: Api) -> None:
    status, page = await api.get("/api/v1/notifications")
    assert status == 200 and page["items"] == []


async def test_a_filter_that_cannot_take_a_number_fails_that_row_only(api: Api, memory_provider: type[MemoryProvider]) -> None:
    rows = [{"phone": "+14155550100", "data": {"name": "Ada Lovelace"}}, {"phone": "+14155550101", "data": {"name": 12345}}]
    status, answer = await api.send_bulk({"channels": ["sms"], "template_id": "short", "recipients": rows})
    assert status == 202, answer
    assert answer["accepted"] == 1
    assert [(error["index"], error["code"]) for error in answer["errors"]] == [(1, "template_render_failed")]
    status, single = await api.send({"recipient": {"phone": "+14155550101"}, "notification": {"channels": ["sms"], "template_id": "short",
                                                                                              "data": {"name": 7}}})
    assert status == 422 and single["error"]["code"] == "template_render_failed"
    await api.idle()
    assert [message.body for message in memory_provider.sent] == ["Hi ..."]


async def test_a_sweep_of_bad_inputs_sees_no_5xx(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    """Every case above, and a few hundred variations, against one server: the figure for the closing note."""
    host, port = api.client.server.host, api.client.server.port
    tried, failures = 0, []
    for what, raw, _status, _code in CASES + list(variations()):
        answer: Answer = await exchange(host, port, raw)
        tried += 1
        if not 400 <= answer.status < 500 or answer.code is None:
            failures.append((what, answer.status, answer.body[:200]))
    await assert_nothing_queued(api)
    with capsys.disabled():
        print(f"\nbad inputs tried: {tried}; 5xx or unshaped answers seen: {len(failures)}")
    assert failures == []


def variations() -> list[tuple[str, bytes, int, str]]:
    found: list[tuple[str, bytes, int, str]] = []
    for byte in (b"\x80", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xff"):
        for header in ("X-API-Key", "Idempotency-Key", "Authorization", "X-Twilio-Signature", "Content-Type"):
            for target in (SEND, "/api/v1/webhooks/mail", "/api/v1/webhooks/text", "/api/v1/notifications"):
                headers: dict[str, bytes | str] = {"X-API-Key": KEY, "Content-Type": JSON, header: b"v" + byte}
                found.append((f"{header} with {byte!r} to {target}", request("POST", target, headers, send_body()), 400, ""))
    for value in ("%C2%B2", "%D9%A3", "%EF%BC%95", "-1", "0", "1e3", "%FF", "%00", "99999999999999999999999"):
        for path in ("/api/v1/notifications", "/api/v1/dead-letters", "/api/v1/replies", "/api/v1/opt-outs", "/api/v1/webhook-deliveries"):
            found.append((f"limit={value} on {path}", request("GET", f"{path}?limit={value}", {"X-API-Key": KEY}), 400, ""))
    for text in ("seq:²", "seq:-1", "seq:", "seq:٣", "\udcff"):
        cursor = text_cursor(text) if text.isprintable() else "t%FF"
        for path in ("/api/v1/replies", "/api/v1/notifications", "/api/v1/dead-letters", "/api/v1/webhook-deliveries"):
            found.append((f"cursor {text!r} on {path}", request("GET", f"{path}?cursor={cursor}", {"X-API-Key": KEY}), 400, ""))
    for depth in (64, 128, 254, 255, 256, 1000):
        found.append((f"data {depth} deep", request("POST", SEND, {"X-API-Key": KEY, "Content-Type": JSON, "Idempotency-Key": f"d{depth}"},
                                                      send_body(data=nested(depth)) if depth < 1000 else b'{"notification": ' + b"[" * depth), 422, ""))
    for target in ("/api/v1/webhooks/mail", "/api/v1/webhooks/text"):
        for body in (b"[" * DEEP, b'{"signature": {"timestamp": "' + b"9" * 5000 + b'", "token": "x", "signature": "y"}}', b"\xff\xfe",
                     b"sig=%FF&timestamp=1", b'{"a": ' * 5000):
            for content_type in (JSON, b"application/x-www-form-urlencoded", b""):
                headers = {"Content-Type": content_type} if content_type else {}
                found.append((f"callback {body[:20]!r} as {content_type!r} to {target}", request("POST", target, headers, body), 401, ""))
    return found



async def test_an_unexpected_failure_is_a_500_in_the_envelope_with_no_trace(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """The last resort, which none of the inputs above may reach: the envelope, code ``internal_error``, nothing of the failure."""
    from gateway.http.appkeys import STORE

    async def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("disk says /var/lib/secret-path is gone")

    monkeypatch.setattr(api.app[STORE], "list_notifications", broken)
    answer = await exchange(api.client.server.host, api.client.server.port, request("GET", "/api/v1/notifications", {"X-API-Key": KEY}))
    assert (answer.status, answer.code) == (500, "internal_error")
    assert b"Traceback" not in answer.body and b"secret-path" not in answer.body and b"RuntimeError" not in answer.body
