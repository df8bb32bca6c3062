"""``/api/v1/dead-letters``: listing what the engine gave up on, and replaying it.

Dead letters are made the way production makes them: the memory provider refuses a send for
good, fails it transiently until the schedule runs out, or the fake clock passes a deadline.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp import web
from conftest import LIVE_KEY, OTHER_KEY, Api, FakeClock, MemoryProvider, sms_body

from gateway import ids
from gateway.clock import isoformat
from gateway.engine import dispatcher
from gateway.http import dead_letters

LIST = "/api/v1/dead-letters"
REPLAY = "/api/v1/dead-letters/replay"
ACTOR = f"key:{LIVE_KEY[:12]}"


def email_body(address: str) -> dict[str, Any]:
    return {"recipient": {"email": address}, "notification": {"channels": ["email"], "subject": "Hi", "body": "Hello"}}


async def dead_letter(api: Api, body: dict[str, Any], key: str = LIVE_KEY) -> tuple[str, str]:
    """Send ``body`` (already scripted to fail) and wait until it is dead-lettered: (notification id, delivery id)."""
    status, sent = await api.send(body, key=key)
    assert status == 202, sent
    await api.wait_for(sent["notification_id"], lambda n: n["status"] == "failed", key=key)
    return sent["notification_id"], sent["deliveries"][0]["delivery_id"]


async def refused(api: Api, memory_provider: type[MemoryProvider], phone: str, key: str = LIVE_KEY) -> str:
    """A delivery dead-lettered because the provider refused it for good; its id."""
    memory_provider.script[phone] = ["permanent"]
    return (await dead_letter(api, sms_body(phone), key))[1]


async def dead_letter_sms(api: Api, memory_provider: type[MemoryProvider]) -> tuple[str, str]:
    memory_provider.script["+14155550101"] = ["permanent"]
    return await dead_letter(api, sms_body("+14155550101"))


async def exhausted(api: Api, memory_provider: type[MemoryProvider], clock: FakeClock, phone: str) -> tuple[str, str]:
    """A delivery that failed transiently until max_attempts (3) ran out: (notification id, delivery id)."""
    memory_provider.script[phone] = ["transient"] * 3
    _, sent = await api.send(sms_body(phone))
    notification_id = sent["notification_id"]
    await api.wait_for(notification_id, lambda n: len(n["deliveries"][0]["attempts"]) == 1)
    await settle(api, clock)
    await api.wait_for(notification_id, lambda n: len(n["deliveries"][0]["attempts"]) == 2)
    await settle(api, clock)
    await api.wait_for(notification_id, lambda n: n["status"] == "failed")
    return notification_id, sent["deliveries"][0]["delivery_id"]


async def expired(api: Api, clock: FakeClock, phone: str) -> tuple[str, str]:
    """A delivery scheduled for later that could not go out before it expired: (notification id, delivery id)."""
    body = sms_body(phone, send_at=isoformat(clock.now() + 300), expires_at=isoformat(clock.now() + 600))
    status, sent = await api.send(body)
    assert status == 202, sent
    clock.advance(601)
    api.wake()
    await api.wait_for(sent["notification_id"], lambda n: n["status"] == "failed")
    return sent["notification_id"], sent["deliveries"][0]["delivery_id"]


async def settle(api: Api, clock: FakeClock) -> None:
    clock.advance(3600)  # past any backoff of the default schedule (base 60s, doubling, ±20%)
    await api.idle()


async def listing(api: Api, key: str = LIVE_KEY, **query: Any) -> dict[str, Any]:
    status, body = await api.get(f"{LIST}?{urlencode(query)}", key=key)
    assert status == 200, body
    return body


async def listed(api: Api, key: str = LIVE_KEY, **query: Any) -> list[str]:
    return [item["delivery_id"] for item in (await listing(api, key, **query))["items"]]


async def post(api: Api, path: str, body: Any = None, key: str = LIVE_KEY) -> tuple[int, dict[str, Any]]:
    response = await api.client.post(path, json=body, headers=api.headers(key))
    return response.status, await response.json()


async def replay_one(api: Api, delivery_id: str, key: str = LIVE_KEY) -> tuple[int, dict[str, Any]]:
    return await post(api, f"/api/v1/dead-letters/{delivery_id}/replay", key=key)


def replay_audits(notification: dict[str, Any]) -> list[dict[str, Any]]:
    return [event for event in notification["audit"] if event["action"] == "replayed"]


@pytest.fixture
async def patient_api(aiohttp_client: Any, make_app: Callable[..., web.Application], monkeypatch: pytest.MonkeyPatch) -> Api:
    """The API over a dispatcher that, idle, looks for work once a minute: only a wake-up makes it look sooner."""
    monkeypatch.setattr(dispatcher, "IDLE_POLL", 60.0)
    return Api(await aiohttp_client(make_app()))


# --- listing -----------------------------------------------------------------------------------


async def test_no_dead_letters_lists_nothing_and_no_cursor(api: Api, memory_provider: type[MemoryProvider]) -> None:
    _, sent = await api.send(sms_body())
    await api.wait_for(sent["notification_id"], lambda n: n["status"] == "sent")
    assert await listing(api) == {"items": [], "next_cursor": None}


async def test_dead_letters_are_listed_newest_first_with_why_and_since_when(
    api: Api, memory_provider: type[MemoryProvider], clock: FakeClock
) -> None:
    first = await refused(api, memory_provider, "+14155550101")
    clock.advance(5)
    memory_provider.script["+14155550102"] = ["permanent"]
    notification_id, second = await dead_letter(api, sms_body("+14155550102"))
    body = await listing(api)
    assert [item["delivery_id"] for item in body["items"]] == [second, first]
    assert body["next_cursor"] is None
    assert body["items"][0] == {
        "delivery_id": second,
        "notification_id": notification_id,
        "channel": "sms",
        "address": "+14155550102",
        "provider": "memory",
        "reason": "permanent",
        "error": "recipient rejected",
        "attempt_count": 1,
        "dead_lettered_at": isoformat(clock.now()),
        "template_id": "otp",
    }


async def test_each_filter_lists_only_the_matching_dead_letters(
    api: Api, memory_provider: type[MemoryProvider], clock: FakeClock
) -> None:
    sms_refused = await refused(api, memory_provider, "+14155550101")
    memory_provider.script["ada@example.com"] = ["permanent"]
    _, email_refused = await dead_letter(api, email_body("ada@example.com"))
    _, sms_exhausted = await exhausted(api, memory_provider, clock, "+14155550102")
    _, sms_expired = await expired(api, clock, "+14155550103")

    assert await listed(api, channel="email") == [email_refused]
    assert await listed(api, reason="permanent") == [email_refused, sms_refused]
    assert await listed(api, reason="retries_exhausted") == [sms_exhausted]
    assert await listed(api, reason="expired") == [sms_expired]
    assert await listed(api, provider="memory") == [sms_exhausted, email_refused, sms_refused], "never tried: no provider"
    assert await listed(api, channel="sms", reason="permanent") == [sms_refused]
    assert await listed(api, channel="push") == []
    assert await listed(api, provider="nowhere") == []


async def test_pages_follow_next_cursor_to_the_last_one(api: Api, memory_provider: type[MemoryProvider]) -> None:
    made = [await refused(api, memory_provider, f"+1415555{n:04d}") for n in range(5)]
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        body = await listing(api, limit=2, **({"cursor": cursor} if cursor else {}))
        seen += [item["delivery_id"] for item in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == made[::-1]
    assert pages == 3


async def test_a_page_is_stable_when_new_dead_letters_arrive(api: Api, memory_provider: type[MemoryProvider]) -> None:
    older = [await refused(api, memory_provider, f"+1415555{n:04d}") for n in range(3)]
    first = await listing(api, limit=2)
    newer = await refused(api, memory_provider, "+14155559999")
    rest = await listing(api, limit=2, cursor=first["next_cursor"])
    assert [item["delivery_id"] for item in rest["items"]] == [older[0]]
    assert newer in await listed(api)


# --- tenants -----------------------------------------------------------------------------------


async def test_another_tenant_sees_none_of_them_and_cannot_replay_them(api: Api, memory_provider: type[MemoryProvider]) -> None:
    delivery_id = await refused(api, memory_provider, "+14155550101")
    assert await listing(api, OTHER_KEY) == {"items": [], "next_cursor": None}
    status, body = await replay_one(api, delivery_id, key=OTHER_KEY)
    assert (status, body["error"]["code"]) == (404, "delivery_not_found")
    status, body = await post(api, REPLAY, {}, key=OTHER_KEY)
    assert (status, body) == (202, {"replayed": 0, "delivery_ids": [], "more": False})
    assert await listed(api) == [delivery_id], "still dead-lettered for its own tenant"


async def test_the_other_tenants_own_dead_letters_are_its_own(api: Api, memory_provider: type[MemoryProvider]) -> None:
    mine = await refused(api, memory_provider, "+14155550101")
    theirs = await refused(api, memory_provider, "+14155550102", key=OTHER_KEY)
    assert await listed(api) == [mine]
    assert await listed(api, OTHER_KEY) == [theirs]


# --- replaying one -----------------------------------------------------------------------------


async def test_a_replayed_delivery_is_queued_again_at_once_and_sent(patient_api: Api, memory_provider: type[MemoryProvider]) -> None:
    api = patient_api
    memory_provider.script["+14155550101"] = ["permanent"]  # then succeeds
    notification_id, delivery_id = await dead_letter(api, sms_body("+14155550101"))
    status, body = await replay_one(api, delivery_id)
    assert (status, body) == (202, {"replayed": [delivery_id]})
    done = await api.wait_for(notification_id, lambda n: n["status"] == "sent")  # within 5 s: the replay woke the dispatcher
    delivery = done["deliveries"][0]
    assert (delivery["status"], delivery["dead_reason"], delivery["attempt_count"]) == ("sent", None, 1)
    assert [a["outcome"] for a in delivery["attempts"]] == ["permanent", "sent"], "the first attempt stays as history"
    [event] = replay_audits(done)
    assert (event["actor"], event["from_status"], event["to_status"]) == (ACTOR, "failed", "queued")
    assert (event["delivery_id"], event["reason"]) == (delivery_id, f"replayed by {ACTOR}")
    assert await listed(api) == []


async def test_a_replay_starts_the_retry_schedule_over(api: Api, memory_provider: type[MemoryProvider], clock: FakeClock) -> None:
    notification_id, delivery_id = await exhausted(api, memory_provider, clock, "+14155550101")
    memory_provider.script["+14155550101"] = ["transient"]  # then succeeds
    status, _ = await replay_one(api, delivery_id)
    assert status == 202
    retrying = await api.wait_for(notification_id, lambda n: len(n["deliveries"][0]["attempts"]) == 4)
    delivery = retrying["deliveries"][0]
    assert delivery["status"] == "sending" and delivery["dead_letter"] is None, "one transient failure after a replay is retried, as on a first try"
    assert (delivery["attempt_count"], delivery["next_attempt_at"] is not None) == (1, True)
    await settle(api, clock)
    done = await api.wait_for(notification_id, lambda n: n["status"] == "sent")
    assert done["deliveries"][0]["attempt_count"] == 2


async def test_a_replay_lifts_the_deadline_the_delivery_missed(api: Api, memory_provider: type[MemoryProvider], clock: FakeClock) -> None:
    notification_id, delivery_id = await expired(api, clock, "+14155550101")
    status, _ = await replay_one(api, delivery_id)
    assert status == 202
    done = await api.wait_for(notification_id, lambda n: n["status"] == "sent")
    assert [m.delivery_id for m in memory_provider.sent] == [delivery_id]
    assert done["deliveries"][0]["dead_reason"] is None


async def test_replaying_a_delivery_that_is_not_dead_lettered_is_a_conflict_and_changes_nothing(
    api: Api, memory_provider: type[MemoryProvider]
) -> None:
    _, sent = await api.send(sms_body())
    notification_id, delivery_id = sent["notification_id"], sent["deliveries"][0]["delivery_id"]
    await api.wait_for(notification_id, lambda n: n["status"] == "sent")
    status, body = await replay_one(api, delivery_id)
    assert (status, body["error"]["code"]) == (409, "not_dead_lettered")
    after = await api.notification(notification_id)
    assert after["deliveries"][0]["status"] == "sent"
    assert replay_audits(after) == []
    assert len(memory_provider.sent) == 1


async def test_replaying_a_dead_letter_twice_is_a_conflict_the_second_time(api: Api, memory_provider: type[MemoryProvider]) -> None:
    memory_provider.script["+14155550101"] = ["permanent"]
    notification_id, delivery_id = await dead_letter(api, sms_body("+14155550101"))
    assert (await replay_one(api, delivery_id))[0] == 202
    await api.wait_for(notification_id, lambda n: n["status"] == "sent")
    status, body = await replay_one(api, delivery_id)
    assert (status, body["error"]["code"]) == (409, "not_dead_lettered")
    assert len(replay_audits(await api.notification(notification_id))) == 1


@pytest.mark.parametrize("delivery_id", [ids.new_id(ids.DELIVERY), ids.new_id(ids.NOTIFICATION), "nonsense"])
async def test_replaying_an_unknown_delivery_is_not_found(api: Api, delivery_id: str) -> None:
    status, body = await replay_one(api, delivery_id)
    assert (status, body["error"]["code"]) == (404, "delivery_not_found")


# --- replaying in bulk -------------------------------------------------------------------------


async def test_bulk_replay_by_filter_replays_only_the_matching_ones(api: Api, memory_provider: type[MemoryProvider]) -> None:
    sms = [await refused(api, memory_provider, f"+1415555{n:04d}") for n in range(2)]
    memory_provider.script["ada@example.com"] = ["permanent"]
    email_notification, email = await dead_letter(api, email_body("ada@example.com"))
    status, body = await post(api, REPLAY, {"channel": "email", "reason": "permanent"})
    assert (status, body) == (202, {"replayed": 1, "delivery_ids": [email], "more": False})
    done = await api.wait_for(email_notification, lambda n: n["status"] == "sent")
    assert [event["actor"] for event in replay_audits(done)] == [ACTOR]
    assert await listed(api) == sms[::-1]


async def test_bulk_replay_filters_by_provider_and_reason(api: Api, memory_provider: type[MemoryProvider], clock: FakeClock) -> None:
    refused_id = await refused(api, memory_provider, "+14155550101")
    _, expired_id = await expired(api, clock, "+14155550102")
    status, body = await post(api, REPLAY, {"provider": "memory"})
    assert (status, body["delivery_ids"]) == (202, [refused_id]), "the expired one was never tried, so has no provider"
    status, body = await post(api, REPLAY, {"reason": "expired"})
    assert (status, body["delivery_ids"]) == (202, [expired_id])


async def test_an_empty_filter_replays_all_oldest_first_and_says_when_more_remain(
    api: Api, memory_provider: type[MemoryProvider], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dead_letters, "MAX_REPLAY", 2)
    made = [await refused(api, memory_provider, f"+1415555{n:04d}") for n in range(3)]
    status, body = await post(api, REPLAY, {})
    assert (status, body) == (202, {"replayed": 2, "delivery_ids": made[:2], "more": True})
    status, body = await post(api, REPLAY, {})
    assert (status, body) == (202, {"replayed": 1, "delivery_ids": made[2:], "more": False})


# --- bad input ---------------------------------------------------------------------------------


def cursor_of(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"reason": "lost"}, "reason"),
        ({"limit": "0"}, "limit"),
        ({"limit": "201"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"cursor": "!!not-base64!!"}, "cursor"),
        ({"cursor": cursor_of(ids.new_id(ids.NOTIFICATION))}, "cursor"),  # the notifications list's, not this one's
    ],
)
async def test_bad_query_parameters_are_refused_with_a_code(api: Api, query: dict[str, str], field: str) -> None:
    status, body = await api.get(f"{LIST}?{urlencode(query)}")
    assert status == 400, body
    assert body["error"]["code"] == "invalid_parameter"
    assert [(d["field"], d["code"]) for d in body["error"]["details"]] == [(field, "invalid_parameter")]


async def test_the_notifications_list_refuses_a_dead_letter_cursor(api: Api) -> None:
    status, body = await api.get(f"/api/v1/notifications?cursor={cursor_of(ids.new_id(ids.DELIVERY))}")
    assert (status, body["error"]["code"]) == (400, "invalid_parameter")


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"channel": "sms", "colour": "red"}, 422, "validation_failed"),
        ({"reason": "lost"}, 422, "validation_failed"),
        ({"channel": 7}, 422, "validation_failed"),
        ([], 422, "validation_failed"),
    ],
)
async def test_bad_replay_bodies_are_refused_and_nothing_is_replayed(
    api: Api, memory_provider: type[MemoryProvider], body: Any, status: int, code: str
) -> None:
    notification_id, delivery_id = await dead_letter_sms(api, memory_provider)
    answer_status, answer = await post(api, REPLAY, body)
    assert (answer_status, answer["error"]["code"]) == (status, code), answer
    assert await listed(api) == [delivery_id]
    assert replay_audits(await api.notification(notification_id)) == []


async def test_a_replay_body_that_is_not_json_is_refused(api: Api, memory_provider: type[MemoryProvider]) -> None:
    _, delivery_id = await dead_letter_sms(api, memory_provider)
    response = await api.client.post(REPLAY, data=b"{nope", headers=api.headers(**{"Content-Type": "application/json"}))
    assert (response.status, (await response.json())["error"]["code"]) == (400, "invalid_json")
    assert await listed(api) == [delivery_id]


@pytest.mark.parametrize(("method", "path"), [("GET", LIST), ("POST", REPLAY), ("POST", f"/api/v1/dead-letters/{ids.new_id(ids.DELIVERY)}/replay")])
async def test_dead_letters_need_an_api_key(api: Api, method: str, path: str) -> None:
    response = await api.client.request(method, path, json={})
    assert response.status == 401

