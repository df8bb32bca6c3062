"""Idempotency keys: a retried request is answered from the first one and sends nothing new."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from conftest import LIVE_KEY, OTHER_KEY, Api, MemoryProvider, sms_body

SEND = "/api/v1/notifications/send"
BULK = "/api/v1/notifications/bulk"
LIST = "/api/v1/notifications"


async def listed(api: Api, key: str = LIVE_KEY) -> list[dict[str, Any]]:
    status, page = await api.get(f"{LIST}?limit=200", key=key)
    assert status == 200, page
    return page["items"]


async def post_raw(api: Api, raw: bytes, *, key: str = LIVE_KEY, path: str = SEND, **headers: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    response = await api.client.post(path, data=raw, headers=api.headers(key, **{"Content-Type": "application/json", **headers}))
    return response.status, await response.json(), dict(response.headers)


async def test_a_retried_send_with_the_same_idempotency_key_header_is_answered_from_the_first_and_sent_once(
    api: Api, memory_provider: type[MemoryProvider]
) -> None:
    first = await api.client.post(SEND, json=sms_body(), headers=api.headers(**{"Idempotency-Key": "order-42"}))
    assert first.status == 202
    assert "Idempotent-Replayed" not in first.headers
    first_body = await first.json()
    await api.wait_for(first_body["notification_id"], lambda n: n["status"] == "sent")

    again = await api.client.post(SEND, json=sms_body(), headers=api.headers(**{"Idempotency-Key": "order-42"}))
    assert again.status == 202
    assert again.headers["Idempotent-Replayed"] == "true"
    assert await again.json() == first_body

    notification = await api.notification(first_body["notification_id"])
    assert notification["idempotency_key"] == "order-42"
    assert [n["notification_id"] for n in await listed(api)] == [first_body["notification_id"]]
    assert len(memory_provider.sent) == 1


async def test_the_idempotency_key_body_field_deduplicates_like_the_header(api: Api, memory_provider: type[MemoryProvider]) -> None:
    body = sms_body() | {"idempotency_key": "field-key-1"}
    status, first = await api.send(body)
    assert status == 202
    await api.wait_for(first["notification_id"], lambda n: n["status"] == "sent")

    response = await api.client.post(SEND, json=body, headers=api.headers())
    assert response.status == 202
    assert response.headers["Idempotent-Replayed"] == "true"
    assert (await response.json())["notification_id"] == first["notification_id"]
    assert len(await listed(api)) == 1
    assert len(memory_provider.sent) == 1


async def test_the_same_key_in_header_and_field_is_accepted(api: Api) -> None:
    body = sms_body() | {"idempotency_key": "both-1"}
    status, first = await api.send(body, **{"Idempotency-Key": "both-1"})
    assert status == 202
    status, again = await api.send(body, **{"Idempotency-Key": "both-1"})
    assert status == 202
    assert again["notification_id"] == first["notification_id"]


async def test_reusing_a_key_with_a_different_body_is_a_409_and_queues_nothing_new(api: Api, memory_provider: type[MemoryProvider]) -> None:
    status, first = await api.send(sms_body(), **{"Idempotency-Key": "k-conflict"})
    assert status == 202
    await api.wait_for(first["notification_id"], lambda n: n["status"] == "sent")

    status, answer = await api.send(sms_body("+14155550199"), **{"Idempotency-Key": "k-conflict"})
    assert status == 409
    assert answer["error"]["code"] == "idempotency_conflict"
    assert set(answer["error"]) == {"code", "message", "details"}
    assert [n["notification_id"] for n in await listed(api)] == [first["notification_id"]]
    assert [m.to for m in memory_provider.sent] == ["+14155550100"]

    status, again = await api.send(sms_body(), **{"Idempotency-Key": "k-conflict"})
    assert status == 202, "the original body still replays after a conflict"
    assert again["notification_id"] == first["notification_id"]


@pytest.mark.parametrize(
    "variant",
    [
        sms_body(data={"code": "999999"}),
        sms_body(channels=["sms", "whatsapp"]),
        sms_body(priority="bulk"),
        sms_body() | {"metadata": {"order": "42"}},
    ],
    ids=["other data", "more channels", "other priority", "added metadata"],
)
async def test_any_change_to_the_body_under_the_same_key_is_a_conflict(api: Api, variant: dict[str, Any]) -> None:
    status, _ = await api.send(sms_body(), **{"Idempotency-Key": "k-variant"})
    assert status == 202
    status, answer = await api.send(variant, **{"Idempotency-Key": "k-variant"})
    assert status == 409
    assert answer["error"]["code"] == "idempotency_conflict"
    assert len(await listed(api)) == 1


async def test_key_order_and_whitespace_in_the_json_do_not_make_a_different_body(api: Api, memory_provider: type[MemoryProvider]) -> None:
    compact = b'{"recipient":{"phone":"+14155550100"},"notification":{"channels":["sms"],"template_id":"otp","data":{"code":"123456"}}}'
    reordered = b"""{
        "notification" : { "data" : { "code" : "123456" } , "template_id" : "otp" , "channels" : [ "sms" ] },
        "recipient"    : { "phone" : "+14155550100" }
    }"""
    status, first, headers = await post_raw(api, compact, **{"Idempotency-Key": "k-order"})
    assert status == 202
    assert "Idempotent-Replayed" not in headers
    status, again, headers = await post_raw(api, reordered, **{"Idempotency-Key": "k-order"})
    assert status == 202
    assert headers["Idempotent-Replayed"] == "true"
    assert again == first
    assert len(await listed(api)) == 1
    await api.wait_for(first["notification_id"], lambda n: n["status"] == "sent")
    assert len(memory_provider.sent) == 1


async def test_idempotency_keys_are_scoped_per_tenant(api: Api, memory_provider: type[MemoryProvider]) -> None:
    status, ours = await api.send(sms_body(), **{"Idempotency-Key": "shared-key"})
    assert status == 202
    response = await api.client.post(SEND, json=sms_body(), headers=api.headers(OTHER_KEY, **{"Idempotency-Key": "shared-key"}))
    assert response.status == 202
    assert "Idempotent-Replayed" not in response.headers
    theirs = await response.json()
    assert theirs["notification_id"] != ours["notification_id"]

    assert [n["notification_id"] for n in await listed(api)] == [ours["notification_id"]]
    assert [n["notification_id"] for n in await listed(api, OTHER_KEY)] == [theirs["notification_id"]]
    await api.wait_for(ours["notification_id"], lambda n: n["status"] == "sent")
    await api.wait_for(theirs["notification_id"], lambda n: n["status"] == "sent", key=OTHER_KEY)
    assert len(memory_provider.sent) == 2

    status, _ = await api.send(sms_body("+14155550199"), key=OTHER_KEY, **{"Idempotency-Key": "shared-key"})
    assert status == 409, "within one tenant the key still guards its body"


async def test_a_header_and_a_field_that_differ_are_a_422_and_queue_nothing(api: Api) -> None:
    status, answer = await api.send(sms_body() | {"idempotency_key": "field"}, **{"Idempotency-Key": "header"})
    assert status == 422
    assert answer["error"]["code"] == "invalid_idempotency_key"
    assert [d["code"] for d in answer["error"]["details"]] == ["invalid_idempotency_key"]
    assert await listed(api) == []


@pytest.mark.parametrize("key", ["", "k" * 256])
async def test_an_empty_or_overlong_idempotency_key_header_is_a_422(api: Api, key: str) -> None:
    status, answer = await api.send(sms_body(), **{"Idempotency-Key": key})
    assert status == 422
    assert answer["error"]["code"] == "invalid_idempotency_key"
    assert await listed(api) == []


async def test_the_longest_allowed_key_works(api: Api) -> None:
    key = "k" * 255
    status, first = await api.send(sms_body(), **{"Idempotency-Key": key})
    assert status == 202
    status, again = await api.send(sms_body(), **{"Idempotency-Key": key})
    assert again["notification_id"] == first["notification_id"]


async def test_a_refused_request_does_not_use_up_its_key(api: Api) -> None:
    status, _ = await api.send(sms_body(channels=["pigeon"]), **{"Idempotency-Key": "k-refused"})
    assert status == 422
    status, accepted = await api.send(sms_body(), **{"Idempotency-Key": "k-refused"})
    assert status == 202
    assert [n["notification_id"] for n in await listed(api)] == [accepted["notification_id"]]


async def test_requests_without_a_key_are_never_deduplicated(api: Api) -> None:
    first = (await api.send(sms_body()))[1]["notification_id"]
    second = (await api.send(sms_body()))[1]["notification_id"]
    assert first != second
    assert len(await listed(api)) == 2


async def test_ten_concurrent_identical_sends_with_one_key_make_exactly_one_notification(
    api: Api, memory_provider: type[MemoryProvider]
) -> None:
    raw = orjson.dumps(sms_body())
    answers = await asyncio.gather(*(post_raw(api, raw, **{"Idempotency-Key": "burst"}) for _ in range(10)))
    assert [status for status, _, _ in answers] == [202] * 10
    assert len({body["notification_id"] for _, body, _ in answers}) == 1
    assert sum(headers.get("Idempotent-Replayed") == "true" for _, _, headers in answers) == 9

    items = await listed(api)
    assert len(items) == 1
    await api.wait_for(items[0]["notification_id"], lambda n: n["status"] == "sent")
    assert len(memory_provider.sent) == 1


async def test_concurrent_sends_with_one_key_but_different_bodies_accept_one_and_refuse_the_rest(api: Api) -> None:
    bodies = [orjson.dumps(sms_body(f"+1415555{n:04d}")) for n in range(6)]
    answers = await asyncio.gather(*(post_raw(api, raw, **{"Idempotency-Key": "race"}) for raw in bodies))
    statuses = sorted(status for status, _, _ in answers)
    assert statuses == [202] + [409] * 5
    assert len(await listed(api)) == 1


async def test_a_retried_bulk_request_is_answered_from_the_first(api: Api) -> None:
    body = {"channels": ["sms"], "template_id": "otp", "recipients": [{"phone": "+14155550100", "data": {"code": "1"}}, {"phone": "+14155550101", "data": {"code": "2"}}]}
    first = await api.client.post(BULK, json=body, headers=api.headers(**{"Idempotency-Key": "bulk-1"}))
    assert first.status == 202
    first_body = await first.json()
    again = await api.client.post(BULK, json=body, headers=api.headers(**{"Idempotency-Key": "bulk-1"}))
    assert again.status == 202
    assert again.headers["Idempotent-Replayed"] == "true"
    assert await again.json() == first_body
    assert len(await listed(api)) == 2


async def test_a_send_and_a_bulk_request_under_one_key_conflict(api: Api) -> None:
    status, _ = await api.send(sms_body(), **{"Idempotency-Key": "cross"})
    assert status == 202
    body = {"channels": ["sms"], "template_id": "otp", "data": {"code": "1"}, "recipients": [{"phone": "+14155550100"}]}
    response = await api.client.post(BULK, json=body, headers=api.headers(**{"Idempotency-Key": "cross"}))
    assert response.status == 409
    assert (await response.json())["error"]["code"] == "idempotency_conflict"
