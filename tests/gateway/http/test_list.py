"""``GET /api/v1/notifications``: newest first, filtered, a page at a time, one tenant only."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from conftest import LIVE_KEY, OTHER_KEY, TEST_KEY, Api, MemoryProvider, sms_body

from gateway.http.appkeys import STORE
from gateway.store import ReceivedStatus

LIST = "/api/v1/notifications"


async def page(api: Api, key: str = LIVE_KEY, **query: Any) -> dict[str, Any]:
    status, body = await api.get(f"{LIST}?{urlencode(query)}", key=key)
    assert status == 200, body
    return body


async def ids(api: Api, key: str = LIVE_KEY, **query: Any) -> list[str]:
    return [item["notification_id"] for item in (await page(api, key, **query))["items"]]


async def send_many(api: Api, count: int, key: str = LIVE_KEY, start: int = 0) -> list[str]:
    sent = []
    for n in range(start, start + count):
        status, body = await api.send(sms_body(f"+1415555{n:04d}"), key=key)
        assert status == 202, body
        sent.append(body["notification_id"])
    return sent


def email_body(address: str = "ada@example.com") -> dict[str, Any]:
    return {"recipient": {"email": address}, "notification": {"channels": ["email"], "subject": "Hi", "body": "Hello"}}


async def test_an_empty_tenant_lists_nothing_and_no_cursor(api: Api) -> None:
    assert await page(api) == {"items": [], "next_cursor": None}


async def test_notifications_are_listed_newest_first_with_a_summary_of_each(api: Api) -> None:
    sent = await send_many(api, 5)
    listing = await page(api)
    assert [item["notification_id"] for item in listing["items"]] == sent[::-1]
    assert listing["next_cursor"] is None
    newest = listing["items"][0]
    assert newest["recipient"] == {"phone": "+14155550004"}
    assert newest["channels"] == ["sms"]
    assert newest["template_id"] == "otp"
    assert [d["channel"] for d in newest["deliveries"]] == ["sms"]
    assert newest["deliveries"][0]["address"] == "+14155550004"
    assert "audit" not in newest and "content" not in newest["deliveries"][0]


async def test_the_status_filter_lists_only_notifications_in_that_status(api: Api, memory_provider: type[MemoryProvider]) -> None:
    memory_provider.script["+14155550666"] = ["permanent"]
    status, failing = await api.send(sms_body("+14155550666"))
    assert status == 202
    _, ok = await api.send(sms_body("+14155550100"))
    await api.wait_for(failing["notification_id"], lambda n: n["status"] == "failed")
    await api.wait_for(ok["notification_id"], lambda n: n["status"] == "sent")

    assert await ids(api, status="failed") == [failing["notification_id"]]
    assert await ids(api, status="sent") == [ok["notification_id"]]
    assert await ids(api, status="queued") == []
    assert await ids(api, status="delivered") == []
    assert await ids(api, status="") == [ok["notification_id"], failing["notification_id"]], "an empty filter is no filter"


async def test_the_channel_filter_matches_any_of_a_notifications_channels(api: Api) -> None:
    _, sms = await api.send(sms_body())
    _, email = await api.send(email_body())
    _, both = await api.send(
        {"recipient": {"phone": "+14155550100", "email": "ada@example.com"}, "notification": {"channels": ["email", "sms"], "template_id": "otp", "data": {"code": "1"}}}
    )
    assert await ids(api, channel="sms") == [both["notification_id"], sms["notification_id"]]
    assert await ids(api, channel="email") == [both["notification_id"], email["notification_id"]]
    assert await ids(api, channel="whatsapp") == []


async def test_the_recipient_filter_matches_a_phone_or_an_email_exactly(api: Api) -> None:
    _, first = await api.send(sms_body("+14155550101"))
    _, other = await api.send(sms_body("+14155550102"))
    _, mail = await api.send(email_body("ada@example.com"))
    _, second = await api.send(sms_body("+14155550101"))
    assert await ids(api, recipient="+14155550101") == [second["notification_id"], first["notification_id"]]
    assert await ids(api, recipient="+14155550102") == [other["notification_id"]]
    assert await ids(api, recipient="ada@example.com") == [mail["notification_id"]]
    assert await ids(api, recipient="+1415555010") == [], "no prefix matching"
    assert await ids(api, recipient="nobody@example.com") == []


async def test_filters_combine(api: Api, memory_provider: type[MemoryProvider]) -> None:
    memory_provider.script["+14155550666"] = ["permanent"]
    _, failed = await api.send(sms_body("+14155550666"))
    _, mail = await api.send(email_body())
    await api.wait_for(failed["notification_id"], lambda n: n["status"] == "failed")
    await api.wait_for(mail["notification_id"], lambda n: n["status"] == "sent")
    assert await ids(api, status="failed", channel="sms", recipient="+14155550666") == [failed["notification_id"]]
    assert await ids(api, status="failed", channel="email") == []
    assert await ids(api, status="sent", recipient="+14155550666") == []


async def test_a_failed_delivery_is_findable_even_when_another_channel_got_through(api: Api, memory_provider: type[MemoryProvider]) -> None:
    """``?status=`` is the notification's own; ``?delivery_status=`` any delivery's (with ``channel=``, that channel's)."""
    memory_provider.script["+14155550666"] = ["permanent"]
    both = {"recipient": {"phone": "+14155550666", "email": "ada@example.com"}, "notification": {"channels": ["sms", "email"], "template_id": "otp", "data": {"code": "1"}}}
    _, partly = await api.send(both)
    _, ok = await api.send(sms_body())
    done = await api.wait_for(partly["notification_id"], lambda n: n["status"] == "sent" and n["deliveries"][0]["status"] == "failed")
    assert done["deliveries"][0]["dead_letter"]["reason"] == "permanent", "no fallback left: a dead letter, shown as a property of failed"
    await api.wait_for(ok["notification_id"], lambda n: n["status"] == "sent")
    assert await ids(api, status="failed") == []
    assert await ids(api, delivery_status="failed") == [partly["notification_id"]]
    assert await ids(api, delivery_status="failed", channel="sms") == [partly["notification_id"]]
    assert await ids(api, delivery_status="failed", channel="email") == [], "the same delivery: the email did not fail"
    assert await ids(api, delivery_status="sent") == [ok["notification_id"], partly["notification_id"]]


async def test_opened_and_clicked_are_statuses_to_filter_on(api: Api) -> None:
    _, opened = await api.send(email_body("ada@example.com"))
    _, clicked = await api.send(email_body("bob@example.com"))
    store = api.app[STORE]
    for sent, receipts in ((opened, ["delivered", "opened"]), (clicked, ["delivered", "opened", "clicked", "opened"])):
        found = await api.wait_for(sent["notification_id"], lambda n: n["status"] == "sent")
        message_id = found["deliveries"][0]["provider_message_id"]
        await store.apply_statuses([ReceivedStatus("memory", message_id, status) for status in receipts])
    assert await ids(api, status="opened") == [opened["notification_id"]]
    assert await ids(api, status="clicked") == [clicked["notification_id"]], "a late open does not move a click back"
    assert await ids(api, status="read") == []
    assert (await api.notification(clicked["notification_id"]))["deliveries"][0]["status"] == "clicked"


async def test_dead_lettered_is_no_longer_a_status_and_the_answer_says_where_it_went(api: Api) -> None:
    for name in ("status", "delivery_status"):
        status, body = await api.get(f"{LIST}?{name}=dead_lettered")
        assert status == 400 and body["error"]["code"] == "invalid_parameter"
        [detail] = body["error"]["details"]
        assert detail["field"] == name and "a dead letter is a failed delivery" in detail["message"]
    status, body = await api.get(f"{LIST}?delivery_status=lost")
    assert status == 400 and "must be one of" in body["error"]["details"][0]["message"]


async def test_pages_cover_every_notification_once_in_order(api: Api) -> None:
    sent = await send_many(api, 11)
    seen: list[str] = []
    sizes = []
    cursor = None
    while True:
        listing = await page(api, limit=4, **({"cursor": cursor} if cursor else {}))
        sizes.append(len(listing["items"]))
        seen += [item["notification_id"] for item in listing["items"]]
        cursor = listing["next_cursor"]
        if cursor is None:
            break
    assert sizes == [4, 4, 3]
    assert seen == sent[::-1]


async def test_a_page_that_ends_exactly_at_the_last_item_has_no_next_cursor(api: Api) -> None:
    sent = await send_many(api, 4)
    first = await page(api, limit=2)
    second = await page(api, limit=2, cursor=first["next_cursor"])
    assert [i["notification_id"] for i in second["items"]] == sent[1::-1]
    assert second["next_cursor"] is None


async def test_new_notifications_between_pages_cause_no_duplicates_or_gaps(api: Api) -> None:
    original = await send_many(api, 9)
    first = await page(api, limit=3)
    seen = [item["notification_id"] for item in first["items"]]
    cursor = first["next_cursor"]
    inserted: list[str] = []
    while cursor is not None:
        inserted += await send_many(api, 2, start=100 + len(inserted))
        listing = await page(api, limit=3, cursor=cursor)
        seen += [item["notification_id"] for item in listing["items"]]
        cursor = listing["next_cursor"]
    assert seen == original[::-1], "the walk shows exactly what existed when it began"
    assert len(set(seen)) == len(seen)
    assert await ids(api, limit=200) == (original + inserted)[::-1]


async def test_pagination_keeps_the_filter(api: Api) -> None:
    sms_ids = []
    for n in range(5):
        sms_ids.append((await api.send(sms_body(f"+1415555000{n}")))[1]["notification_id"])
        await api.send(email_body(f"user{n}@example.com"))
    seen: list[str] = []
    cursor = None
    while True:
        listing = await page(api, channel="sms", limit=2, **({"cursor": cursor} if cursor else {}))
        seen += [item["notification_id"] for item in listing["items"]]
        cursor = listing["next_cursor"]
        if cursor is None:
            break
    assert seen == sms_ids[::-1]


async def test_limit_bounds_are_one_and_two_hundred(api: Api) -> None:
    sent = await send_many(api, 3)
    assert await ids(api, limit=1) == [sent[-1]]
    assert await ids(api, limit=200) == sent[::-1]
    assert len(await ids(api)) == 3


async def test_other_tenants_notifications_never_appear(api: Api) -> None:
    ours = await send_many(api, 3)
    theirs = await send_many(api, 3, key=OTHER_KEY, start=0)
    assert await ids(api, limit=200) == ours[::-1]
    assert await ids(api, OTHER_KEY, limit=200) == theirs[::-1]
    assert await ids(api, recipient="+14155550000") == [ours[0]]
    assert await ids(api, OTHER_KEY, recipient="+14155550000") == [theirs[0]]
    for status in ("queued", "sending", "sent"):
        assert set(await ids(api, status=status, channel="sms", limit=200)).isdisjoint(theirs)


async def test_another_tenants_cursor_does_not_reveal_their_notifications(api: Api) -> None:
    await send_many(api, 3, key=OTHER_KEY)
    their_cursor = (await page(api, OTHER_KEY, limit=1))["next_cursor"]
    assert their_cursor is not None
    assert await ids(api, cursor=their_cursor) == []


async def test_test_mode_notifications_are_listed_with_their_mode(api: Api) -> None:
    _, live = await api.send(sms_body())
    _, test = await api.send(sms_body(), key=TEST_KEY)
    listing = await page(api)
    assert [(i["notification_id"], i["mode"]) for i in listing["items"]] == [(test["notification_id"], "test"), (live["notification_id"], "live")]
