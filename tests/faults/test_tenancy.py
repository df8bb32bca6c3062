"""A test key sees and touches test-mode data only; idempotency is scoped by (tenant, mode).

Live keys see the tenant's notifications in both modes (each item says its ``mode``); test keys see
only what test keys made. Business events, contacts and acknowledgements are stricter: each
mode's are its own, a 404 to the other mode's keys as to another tenant's. What a test key cannot reach answers as if it did not exist (404,
or an empty list), except opt-outs and endpoint controls, which are about real recipients and
real endpoints: a test key is refused those with ``403 live_key_required``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from conftest import LIVE_KEY, OTHER_KEY, TEST_KEY, Api, MemoryProvider, sms_body
from events_support import ROUTES, post_event, processed, shipped

from gateway import InboundReply, signing
from gateway.http.appkeys import INBOUND, STORE

SEND = "/api/v1/notifications/send"


@pytest.fixture
def policy_dir(policy_dir: Path) -> Path:
    (policy_dir / "routes.yaml").write_text(ROUTES)
    return policy_dir


async def send_keyed(api: Api, key: str, idempotency_key: str, phone: str = "+14155550100") -> tuple[int, dict[str, object], bool]:
    response = await api.client.post(SEND, json=sms_body(phone), headers=api.headers(key, **{"Idempotency-Key": idempotency_key}))
    return response.status, await response.json(), response.headers.get("Idempotent-Replayed") == "true"


async def test_a_test_send_with_a_key_does_not_swallow_the_live_send_with_the_same_key(
    api: Api, memory_provider: type[MemoryProvider]
) -> None:
    status, test, replayed = await send_keyed(api, TEST_KEY, "order-7")
    assert (status, replayed, test["mode"]) == (202, False, "test")

    status, live, replayed = await send_keyed(api, LIVE_KEY, "order-7")
    assert (status, replayed, live["mode"]) == (202, False, "live")
    assert live["notification_id"] != test["notification_id"]

    await api.idle()
    assert [message.notification_id for message in memory_provider.sent] == [live["notification_id"]]  # the test one went to the sandbox

    # Within each mode the key still deduplicates.
    status, again, replayed = await send_keyed(api, LIVE_KEY, "order-7")
    assert (status, replayed, again) == (202, True, live)
    status, again, replayed = await send_keyed(api, TEST_KEY, "order-7")
    assert (status, replayed, again) == (202, True, test)


async def test_a_test_key_reads_and_lists_only_test_mode_messages(api: Api) -> None:
    _, live = await api.send(sms_body())
    _, test = await api.send(sms_body(), key=TEST_KEY)

    status, answer = await api.get(f"/api/v1/notifications/{live['notification_id']}", key=TEST_KEY)
    assert (status, answer["error"]["code"]) == (404, "notification_not_found"), "a live message body is not a test key's to read"
    status, listing = await api.get("/api/v1/notifications", key=TEST_KEY)
    assert status == 200
    assert [(item["notification_id"], item["mode"]) for item in listing["items"]] == [(test["notification_id"], "test")]
    status, listing = await api.get("/api/v1/notifications?recipient=%2B14155550100", key=TEST_KEY)
    assert [item["notification_id"] for item in listing["items"]] == [test["notification_id"]]

    # A live key sees both, each marked with its mode.
    status, listing = await api.get("/api/v1/notifications")
    assert {(item["notification_id"], item["mode"]) for item in listing["items"]} == {
        (live["notification_id"], "live"), (test["notification_id"], "test")
    }
    assert (await api.notification(test["notification_id"]))["mode"] == "test"


async def dead_letter(api: Api, memory_provider: type[MemoryProvider], phone: str) -> dict[str, object]:
    memory_provider.script[phone] = ["permanent"]
    _, accepted = await api.send(sms_body(phone))
    done = await api.wait_for(accepted["notification_id"], lambda n: n["status"] == "failed")
    return done["deliveries"][0]


async def test_a_test_key_cannot_list_or_replay_a_live_dead_letter(api: Api, memory_provider: type[MemoryProvider]) -> None:
    delivery = await dead_letter(api, memory_provider, "+14155550177")
    assert len(memory_provider.sent) == 1

    response = await api.client.post(f"/api/v1/dead-letters/{delivery['delivery_id']}/replay", headers=api.headers(TEST_KEY))
    assert (response.status, (await response.json())["error"]["code"]) == (404, "delivery_not_found")
    response = await api.client.post("/api/v1/dead-letters/replay", json={}, headers=api.headers(TEST_KEY))
    assert (response.status, (await response.json())["replayed"]) == (202, 0)
    status, listing = await api.get("/api/v1/dead-letters", key=TEST_KEY)
    assert (status, listing["items"]) == (200, [])

    await api.idle()
    assert len(memory_provider.sent) == 1, "the vendor heard nothing more"
    status, listing = await api.get("/api/v1/dead-letters")
    assert [item["delivery_id"] for item in listing["items"]] == [delivery["delivery_id"]], "still a dead letter, for a live key to replay"
    response = await api.client.post(f"/api/v1/dead-letters/{delivery['delivery_id']}/replay", headers=api.headers(LIVE_KEY))
    assert response.status == 202


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/v1/opt-outs", None),
        ("POST", "/api/v1/opt-outs", {"channel": "sms", "address": "+14155550100"}),
        ("POST", "/api/v1/webhook-deliveries/replay", {"endpoint": "main"}),
        ("POST", "/api/v1/webhook-endpoints/main/enable", None),
    ],
    ids=["list-opt-outs", "add-opt-out", "replay-endpoint", "enable-endpoint"],
)
async def test_what_reaches_real_recipients_or_endpoints_takes_a_live_key(api: Api, method: str, path: str, body: dict[str, str] | None) -> None:
    response = await api.client.request(method, path, json=body, headers=api.headers(TEST_KEY))
    answer = await response.json()
    assert (response.status, answer["error"]["code"]) == (403, "live_key_required")
    status, listing = await api.get("/api/v1/opt-outs")
    assert (status, listing["items"]) == (200, []), "nothing was written"


async def test_a_test_key_sees_only_replies_to_test_messages(api: Api) -> None:
    _, live = await api.send(sms_body())
    _, test = await api.send(sms_body(), key=TEST_KEY)
    live_sent = await api.wait_for(live["notification_id"], lambda n: n["status"] == "sent")
    test_sent = await api.wait_for(test["notification_id"], lambda n: n["status"] in ("sent", "delivered"), key=TEST_KEY)
    replies = [
        ("memory", InboundReply("+14155550100", "who is this?", "sms", in_reply_to=live_sent["deliveries"][0]["provider_message_id"])),
        ("sandbox", InboundReply("+14155550100", "test reply", "sms", in_reply_to=test_sent["deliveries"][0]["provider_message_id"])),
    ]
    for provider, reply in replies:
        api.app[INBOUND].reported(provider, [reply], ["acme"])
    store = api.app[STORE]

    async def both_stored() -> None:
        while True:
            seen = store.commits
            if len((await api.get("/api/v1/replies"))[1]["items"]) == 2:
                return
            await store.wait_for_commit(seen)

    await asyncio.wait_for(both_stored(), 5)
    status, listing = await api.get("/api/v1/replies", key=TEST_KEY)
    assert status == 200
    assert [(item["body"], item["notification_id"]) for item in listing["items"]] == [("test reply", test["notification_id"])]


class Receiver:
    """A tenant's event webhook endpoint that answers 410 Gone: every event is held as ``disabled``."""

    def __init__(self) -> None:
        self.requests = 0

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.requests += 1
        return web.Response(status=410)


async def test_a_test_key_sees_and_replays_only_webhook_deliveries_of_test_messages(
    aiohttp_client: Any, aiohttp_server: Any, make_app: Callable[..., web.Application], policy_dir: Path
) -> None:
    receiver = Receiver()
    endpoint = web.Application()
    endpoint.router.add_post("/hook", receiver.handle)
    url = (await aiohttp_server(endpoint)).make_url("/hook")
    (policy_dir / "webhooks.yaml").write_text(
        f"webhooks:\n  acme:\n    main:\n      url: {url}\n      events: [message.queued]\n      secret: {signing.new_secret()}\n      allow_private: true\n"
    )
    api = Api(await aiohttp_client(make_app()))
    await api.send(sms_body())
    live = await webhook_rows(api, LIVE_KEY, 1)
    await api.send(sms_body(), key=TEST_KEY)
    both = await webhook_rows(api, LIVE_KEY, 2)
    test_id = next(row["webhook_delivery_id"] for row in both if row["webhook_delivery_id"] != live[0]["webhook_delivery_id"])

    status, listing = await api.get("/api/v1/webhook-deliveries", key=TEST_KEY)
    assert (status, [row["webhook_delivery_id"] for row in listing["items"]]) == (200, [test_id])
    response = await api.client.post(f"/api/v1/webhook-deliveries/{live[0]['webhook_delivery_id']}/replay", headers=api.headers(TEST_KEY))
    assert (response.status, (await response.json())["error"]["code"]) == (404, "webhook_delivery_not_found")
    response = await api.client.post(f"/api/v1/webhook-deliveries/{test_id}/replay", headers=api.headers(TEST_KEY))
    assert response.status == 202
    rows = {row["webhook_delivery_id"]: row["status"] for row in await webhook_rows(api, LIVE_KEY, 2)}
    assert rows[live[0]["webhook_delivery_id"]] == "disabled", "the live one was not sent again"


async def webhook_rows(api: Api, key: str, count: int) -> list[dict[str, Any]]:
    """The tenant's webhook deliveries once there are ``count`` of them (5 s at most)."""
    store = api.app[STORE]

    async def poll() -> list[dict[str, Any]]:
        while True:
            seen = store.commits
            rows = (await api.get("/api/v1/webhook-deliveries", key=key))[1]["items"]
            if len(rows) == count and all(row["status"] != "pending" for row in rows):
                return list(rows)
            await store.wait_for_commit(seen)

    return await asyncio.wait_for(poll(), 5)


OWNED = {"live": LIVE_KEY, "test": TEST_KEY}
INTRUDERS = [("live", "other tenant", OTHER_KEY), ("live", "test key", TEST_KEY), ("test", "live key", LIVE_KEY), ("test", "other tenant", OTHER_KEY)]
# (what, method, path with {contact} / {event} / {notification}, body, status, code): each must find nothing of the owner's
REACHES: list[tuple[str, str, str, dict[str, Any] | None, int, str]] = [
    ("read the event", "GET", "/api/v1/events/{event}", None, 404, "event_not_found"),
    ("read the contact", "GET", "/api/v1/contacts/{contact}", None, 404, "contact_not_found"),
    ("patch the contact", "PATCH", "/api/v1/contacts/{contact}", {"locale": "en"}, 404, "contact_not_found"),
    ("delete the contact", "DELETE", "/api/v1/contacts/{contact}", None, 404, "contact_not_found"),
    ("acknowledge the notification", "POST", "/api/v1/notifications/{notification}/acknowledge", {"note": "mine now"}, 404,
     "notification_not_found"),
]
LISTS = ["/api/v1/events", "/api/v1/events?event_name=order.shipped", "/api/v1/contacts", "/api/v1/contacts?external_id=u-owned"]


async def owned_by(api: Api, key: str) -> dict[str, str]:
    """A contact, a processed event and the notification it made, all made with ``key``."""
    response = await api.client.post("/api/v1/contacts", json={"external_id": "u-owned", "email": "ana@example.com"}, headers=api.headers(key))
    assert response.status == 201
    event = await processed(api, shipped("evt-owned"), key=key)
    return {"{contact}": (await response.json())["contact_id"], "{event}": "evt-owned", "{notification}": event["outcomes"][0]["notification_id"]}


@pytest.mark.parametrize(("mode", "who", "intruder"), INTRUDERS, ids=[f"{mode} data, {who}" for mode, who, _ in INTRUDERS])
async def test_events_contacts_and_acknowledgements_are_a_404_to_another_tenant_and_the_other_mode(
    api: Api, mode: str, who: str, intruder: str
) -> None:
    owner = OWNED[mode]
    owned = await owned_by(api, owner)
    await api.idle()  # its notification sent: nothing of the owner's moves by itself from here
    before = {path: (await api.get(path, key=owner))[1] for path in ("/api/v1/events/evt-owned", f"/api/v1/contacts/{owned['{contact}']}")}
    for what, method, template, body, status, code in REACHES:
        path = template
        for name, value in owned.items():
            path = path.replace(name, value)
        response = await api.client.request(method, path, json=body, headers=api.headers(intruder))
        answer = await response.json()
        assert (response.status, answer["error"]["code"]) == (status, code), what
    for path in LISTS:
        status, listing = await api.get(path, key=intruder)
        assert (status, listing["items"]) == (200, []), path

    # The same event id and external id are new in the intruder's world, and leave the owner's as they were.
    status, answer = await post_event(api, shipped("evt-owned"), key=intruder)
    assert (status, answer["status"]) == (202, "accepted")
    response = await api.client.post("/api/v1/contacts", json={"external_id": "u-owned", "phone": "+14155550123"}, headers=api.headers(intruder))
    assert response.status == 201 and (await response.json())["contact_id"] != owned["{contact}"]
    to_contact = {name: value for name, value in shipped("evt-to-contact").items() if name != "recipient"} | {"contact_id": owned["{contact}"]}
    named = await processed(api, to_contact, key=intruder)
    assert named["outcomes"][0]["reason"] == "contact_not_found", "an event cannot reach the owner's contact by its id"
    await api.idle()
    for path, seen in before.items():
        assert (await api.get(path, key=owner))[1] == seen, path
    notification = await api.notification(owned["{notification}"], key=owner)
    assert notification["acknowledged"] is None
