"""Event webhooks end to end: a send's events reach a loopback receiver, signed, retried, refused when private."""

from __future__ import annotations

import asyncio
import base64
import functools
import math
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import standardwebhooks
from aiohttp import web
from aiohttp.test_utils import TestServer
from conftest import OTHER_KEY, Api, FakeClock, sms_body
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway import app as app_module
from gateway import signing
from gateway.clock import isoformat
from gateway.engine.event_webhooks import CURSOR_KEPT_EVERY, EventWebhooks
from gateway.http.appkeys import EVENT_WEBHOOKS, HTTP, POLICIES, POLICY_WATCHER, SETTINGS, STORE, WEBHOOK_SIGNER
from gateway.store import ReceivedStatus, SqliteStore, WebhookDelivery

SECRET = signing.new_secret()
PREVIOUS = signing.new_secret()


class Receiver:
    """A tenant's endpoint: answers from ``script`` (then 200) and keeps every request."""

    def __init__(self) -> None:
        self.script: list[int] = []
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.arrived = asyncio.Condition()
        self.hold: asyncio.Event | None = None  # set: requests wait for it before being answered

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), await request.read()))
        async with self.arrived:
            self.arrived.notify_all()
        if self.hold is not None:
            await self.hold.wait()
        status = self.script.pop(0) if self.script else 200
        if 300 <= status < 400:
            return web.Response(status=status, headers={"Location": "/elsewhere"})
        return web.Response(status=status)

    def types(self) -> list[str]:
        return [orjson.loads(body)["type"] for _headers, body in self.requests]


@pytest.fixture
async def receiver(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> tuple[Receiver, str]:
    found = Receiver()
    app = web.Application()
    app.router.add_post("/hook", found.handle)
    app.router.add_post("/elsewhere", found.handle)
    server = await aiohttp_server(app)
    return found, str(server.make_url("/hook"))


def webhooks_policy(url: str, events: str = '["*"]', allow_private: bool = True, schedule: str = "") -> str:
    return (
        f"webhooks:\n  acme:\n    main:\n      url: {url}\n      events: {events}\n      secret: {SECRET}\n"
        f"      previous_secrets: [{PREVIOUS}]\n      allow_private: {str(allow_private).lower()}\n{schedule}"
    )


@pytest.fixture
def start(
    aiohttp_client: Any, make_app: Callable[..., web.Application], policy_dir: Path, clock: FakeClock
) -> Callable[..., Awaitable[Api]]:
    async def build(policy: str) -> Api:
        clock.value = time.time()  # receivers check webhook-timestamp against their own clock
        (policy_dir / "webhooks.yaml").write_text(policy)
        return Api(await aiohttp_client(make_app()))

    return build


async def until(found: Receiver, predicate: Callable[[], bool]) -> None:
    """Wait, request by request, until ``predicate`` holds (5 s at most)."""

    async def wait() -> None:
        async with found.arrived:
            await found.arrived.wait_for(predicate)

    await asyncio.wait_for(wait(), 5)


async def deliveries(api: Api) -> list[WebhookDelivery]:
    return list(reversed((await api.app[STORE].list_webhook_deliveries("acme")).items))


async def send_and_deliver(api: Api) -> str:
    """Send an SMS through the memory provider and report it delivered; its notification id."""
    _, body = await api.send(sms_body())
    found = await api.wait_for(body["notification_id"], lambda n: n["status"] == "sent")
    message_id = found["deliveries"][0]["provider_message_id"]
    await api.app[STORE].apply_statuses([ReceivedStatus("memory", message_id, "delivered")])
    return str(body["notification_id"])


async def test_a_delivered_sms_produces_webhooks_both_the_new_and_the_previous_secret_verify(
    start: Callable[..., Awaitable[Api]], receiver: tuple[Receiver, str]
) -> None:
    found, url = receiver
    api = await start(webhooks_policy(url))
    notification_id = await send_and_deliver(api)
    await until(found, lambda: found.types() == ["message.queued", "message.sent", "message.delivered"])
    for headers, body in found.requests:
        for secret in (SECRET, PREVIOUS):
            payload = standardwebhooks.Webhook(secret).verify(body, headers)
            assert payload["data"]["notification_id"] == notification_id
        assert headers["webhook-signature"].count("v1,") == 2
    seqs = [orjson.loads(body)["data"]["seq"] for _headers, body in found.requests]
    assert seqs == sorted(seqs), "one endpoint hears events in creation order"
    delivered = orjson.loads(found.requests[-1][1])
    assert delivered["data"]["status"] == "delivered" and delivered["timestamp"].endswith("Z")
    assert found.requests[-1][0]["webhook-id"].startswith("evt_")


async def test_an_ed25519_endpoint_gets_v1a_signatures_that_verify_with_the_published_public_key(
    start: Callable[..., Awaitable[Api]], receiver: tuple[Receiver, str], settings: Any
) -> None:
    found, url = receiver
    policy = f"webhooks:\n  acme:\n    main:\n      url: {url}\n      events: [message.queued]\n      signing: ed25519\n      allow_private: true\n"
    api = await start(policy)
    response = await api.client.get("/api/v1/webhooks/public-key")  # public: no API key needed
    status, published = response.status, await response.json()
    assert status == 200 and published["public_key"].startswith("whpk_") and published["algorithm"] == "ed25519"
    await api.send(sms_body())
    await until(found, lambda: found.types() == ["message.queued"])
    headers, body = found.requests[0]
    [signature] = headers["webhook-signature"].split()
    assert signature.startswith("v1a,")
    # No reference library verifies v1a yet: check it with cryptography directly.
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(published["public_key"].removeprefix("whpk_")))
    key.verify(base64.b64decode(signature.removeprefix("v1a,")), f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body)
    with pytest.raises(InvalidSignature):
        key.verify(base64.b64decode(signature.removeprefix("v1a,")), f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body + b" ")
    key_file = settings.data_dir / signing.SIGNING_KEY_FILE
    assert key_file.stat().st_mode & 0o777 == 0o600, "the private key is readable by its owner only"
    assert published["public_key"] not in key_file.read_text() and "whsk_" in key_file.read_text()


async def test_the_signing_key_survives_a_restart_and_an_endpoint_may_take_both_signatures(
    aiohttp_client: Any, make_app: Callable[..., web.Application], policy_dir: Path, receiver: tuple[Receiver, str], clock: FakeClock
) -> None:
    found, url = receiver
    clock.value = time.time()
    (policy_dir / "webhooks.yaml").write_text(
        f"webhooks:\n  acme:\n    main:\n      url: {url}\n      events: [message.queued]\n      signing: ed25519\n"
        f"      secret: {SECRET}\n      allow_private: true\n"
    )
    first = Api(await aiohttp_client(make_app()))
    _, before = await first.get("/api/v1/webhooks/public-key")
    await first.client.close()
    second = Api(await aiohttp_client(make_app()))
    _, after = await second.get("/api/v1/webhooks/public-key")
    assert after["public_key"] == before["public_key"]
    await second.send(sms_body())
    await until(found, lambda: len(found.requests) >= 1)
    headers, body = found.requests[-1]
    assert [item.split(",")[0] for item in headers["webhook-signature"].split()] == ["v1", "v1a"]
    standardwebhooks.Webhook(SECRET).verify(body, headers)  # the v1 part, for receivers that use the secret
    signing.verify_asymmetric(after["public_key"], headers, body, now=time.time())


def test_v1a_verification_refuses_another_key_a_changed_body_and_a_stale_timestamp() -> None:
    signer, stranger = signing.Ed25519Signer.generate(), signing.Ed25519Signer.generate()
    now = 1_800_000_000
    headers = signing.signature_headers([], "evt_1", now, b"{}", signer=signer)
    signing.verify_asymmetric(signer.public_key, headers, b"{}", now=now)
    for public_key, body, at in ((stranger.public_key, b"{}", now), (signer.public_key, b"{ }", now), (signer.public_key, b"{}", now + 301)):
        with pytest.raises(signing.SignatureError):
            signing.verify_asymmetric(public_key, headers, body, now=at)
    assert "whsk_" not in repr(signer)


async def test_only_subscribed_event_types_are_sent(start: Callable[..., Awaitable[Api]], receiver: tuple[Receiver, str]) -> None:
    found, url = receiver
    api = await start(webhooks_policy(url, events="[message.delivered]"))
    await send_and_deliver(api)
    await until(found, lambda: found.types() == ["message.delivered"])
    # Events fan out in order, so the earlier, unsubscribed ones were already passed over.
    assert [d.event_type for d in await deliveries(api)] == ["message.delivered"]


async def test_a_500_is_retried_on_the_schedule_and_then_succeeds(
    start: Callable[..., Awaitable[Api]], receiver: tuple[Receiver, str], clock: FakeClock
) -> None:
    found, url = receiver
    found.script = [500]
    api = await start(webhooks_policy(url, events="[message.queued]"))
    await api.send(sms_body())
    [row] = await _until(api, lambda rows: bool(rows) and rows[0].last_status == 500)
    assert (row.status, row.attempt_count) == ("pending", 1)
    clock.advance(4)
    await api.app[EVENT_WEBHOOKS].until_idle()
    assert len(found.requests) == 1, "not before the 5s of the schedule"
    clock.advance(1)
    [row] = await wait_status(api, "succeeded")
    assert (row.attempt_count, row.last_status) == (2, 200)
    assert found.requests[0][0]["webhook-id"] == found.requests[1][0]["webhook-id"], "a retry is the same message"


async def wait_status(api: Api, status: str) -> list[WebhookDelivery]:
    return await _until(api, lambda rows: bool(rows) and rows[0].status == status)


async def disabled_with_two_sends(start: Callable[..., Awaitable[Api]], found: Receiver, url: str) -> tuple[Api, list[WebhookDelivery]]:
    """An endpoint that answered 410 to the first event, and a second event fanned out after."""
    found.script = [410]
    api = await start(webhooks_policy(url, events="[message.queued]"))
    await api.send(sms_body())
    await wait_status(api, "disabled")
    await api.send(sms_body("+14155550101"))
    return api, await _until(api, lambda rows: len(rows) == 2)


async def test_a_410_disables_the_endpoint(start: Callable[..., Awaitable[Api]], receiver: tuple[Receiver, str]) -> None:
    found, url = receiver
    api, rows = await disabled_with_two_sends(start, found, url)
    assert [r.status for r in rows] == ["disabled", "disabled"]
    assert len(found.requests) == 1, "nothing more goes to a disabled endpoint"


async def _until(api: Api, predicate: Callable[[list[WebhookDelivery]], bool]) -> list[WebhookDelivery]:
    """Re-read the tenant's webhook deliveries after every commit until ``predicate`` holds (5 s at most)."""
    store = api.app[STORE]

    async def poll() -> list[WebhookDelivery]:
        while True:
            seen = store.commits
            if predicate(rows := await deliveries(api)):
                return rows
            await store.wait_for_commit(seen)

    return await asyncio.wait_for(poll(), 5)


async def test_a_redirect_is_a_failure_and_is_not_followed(start: Callable[..., Awaitable[Api]], receiver: tuple[Receiver, str]) -> None:
    found, url = receiver
    found.script = [301]
    api = await start(webhooks_policy(url, events="[message.queued]"))
    await api.send(sms_body())
    [row] = await wait_status(api, "dead")
    assert row.last_status == 301 and "redirects are not followed" in (row.last_error or "")
    assert len(found.requests) == 1, "the Location was not followed"


async def test_a_private_url_without_allow_private_is_refused(
    start: Callable[..., Awaitable[Api]], receiver: tuple[Receiver, str], caplog: pytest.LogCaptureFixture
) -> None:
    found, url = receiver
    api = await start(webhooks_policy(url, events="[message.queued]", allow_private=False))
    await api.send(sms_body())
    [row] = await wait_status(api, "dead")
    assert (row.last_error or "").startswith("refused:") and "not on a public address" in (row.last_error or "")
    assert found.requests == []
    assert "refused" in caplog.text


async def test_a_send_cut_short_by_shutdown_is_due_again_at_once(
    start: Callable[..., Awaitable[Api]], receiver: tuple[Receiver, str], clock: FakeClock
) -> None:
    found, url = receiver
    found.hold = asyncio.Event()
    api = await start(webhooks_policy(url, events="[message.queued]"))
    await api.send(sms_body())
    await until(found, lambda: len(found.requests) == 1)
    await api.app[EVENT_WEBHOOKS].stop()
    found.hold.set()
    (row,) = await deliveries(api)
    assert (row.status, row.attempt_count) == ("pending", 0)
    assert await api.app[STORE].next_webhook_due() == clock.now(), "its lease is given back"


async def test_the_api_lists_webhook_deliveries_and_replays_a_disabled_endpoints_since_a_time(
    start: Callable[..., Awaitable[Api]], receiver: tuple[Receiver, str], clock: FakeClock
) -> None:
    found, url = receiver
    api, _rows = await disabled_with_two_sends(start, found, url)

    status, listing = await api.get("/api/v1/webhook-deliveries?status=disabled&limit=1")
    assert status == 200 and len(listing["items"]) == 1 and listing["next_cursor"]
    first = listing["items"][0]
    assert (first["type"], first["endpoint"], first["status"]) == ("message.queued", "main", "disabled")
    status, rest = await api.get(f"/api/v1/webhook-deliveries?status=disabled&cursor={listing['next_cursor']}")
    assert status == 200 and len(rest["items"]) == 1 and rest["next_cursor"] is None
    _, other = await api.get("/api/v1/webhook-deliveries", key=OTHER_KEY)
    assert other["items"] == [], "another tenant sees none of them"

    response = await api.client.post(
        "/api/v1/webhook-deliveries/replay", json={"endpoint": "main", "since": isoformat(clock.now() - 60)}, headers=api.headers()
    )
    assert response.status == 202 and (await response.json())["replayed"] == 2
    rows = await _until(api, lambda rows: [r.status for r in rows] == ["succeeded", "succeeded"])
    assert len(found.requests) == 3, "the endpoint is enabled again and both events arrived"
    assert rows[0].attempt_count == 1


async def test_replaying_one_webhook_delivery_refuses_what_is_not_dead_or_unknown(
    start: Callable[..., Awaitable[Api]], receiver: tuple[Receiver, str]
) -> None:
    found, url = receiver
    api = await start(webhooks_policy(url, events="[message.queued]"))
    await api.send(sms_body())
    [row] = await wait_status(api, "succeeded")
    done = await api.client.post(f"/api/v1/webhook-deliveries/{row.id}/replay", headers=api.headers())
    assert (done.status, (await done.json())["error"]["code"]) == (409, "not_replayable")
    unknown = await api.client.post("/api/v1/webhook-deliveries/whk_01ARZ3NDEKTSV4RRFFQ69G5FAV/replay", headers=api.headers())
    assert (unknown.status, (await unknown.json())["error"]["code"]) == (404, "webhook_delivery_not_found")
    other = await api.client.post(f"/api/v1/webhook-deliveries/{row.id}/replay", headers=api.headers(OTHER_KEY))
    assert other.status == 404
    bad = await api.client.post("/api/v1/webhook-deliveries/replay", json={"endpoint": "main", "since": "yesterday"}, headers=api.headers())
    assert (bad.status, (await bad.json())["error"]["code"]) == (422, "invalid_schedule")


async def endpoint_state(api: Api) -> dict[str, Any]:
    status, body = await api.get("/api/v1/webhook-endpoints")
    assert status == 200
    [endpoint] = body["items"]
    return endpoint  # type: ignore[no-any-return]


async def test_an_endpoint_failing_continuously_for_disable_after_is_disabled_and_enabling_it_sends_what_it_held(
    start: Callable[..., Awaitable[Api]], receiver: tuple[Receiver, str], clock: FakeClock
) -> None:
    found, url = receiver
    found.script = [500] * 7
    schedule = "retry_schedules:\n  webhooks: {delays: [10m], max_attempts: 20}\n"
    api = await start(webhooks_policy(url, events="[message.queued]", schedule=schedule).replace("      allow_private", "      disable_after: 1h\n      allow_private"))
    assert (await endpoint_state(api))["status"] == "active"
    await api.send(sms_body())
    await _until(api, lambda rows: bool(rows) and rows[0].attempt_count == 1 and rows[0].last_status == 500)
    failing = await endpoint_state(api)
    assert (failing["status"], failing["last_error"], failing["disable_after"]) == ("failing", "HTTP 500", "1h")
    started = clock.now()
    for attempt in range(2, 8):  # every 10 minutes; the seventh failure is an hour after the first
        clock.advance(600)
        # Until the attempt is recorded, not merely claimed: then the next one is due 10 minutes after it (or none is).
        await _until(api, lambda rows, n=attempt: rows[0].attempt_count == n and (rows[0].next_attempt_at or math.inf) > clock.now())
    [row] = await wait_status(api, "disabled")
    disabled = await endpoint_state(api)
    assert disabled["status"] == "disabled" and disabled["failing_since"] == isoformat(started)
    assert disabled["disabled_reason"].startswith(f"failing continuously since {isoformat(started)}")
    assert len(found.requests) == 7

    await api.send(sms_body("+14155550101"))
    await _until(api, lambda rows: [r.status for r in rows] == ["disabled", "disabled"])
    assert len(found.requests) == 7, "a disabled endpoint is sent nothing; its events are held"

    response = await api.client.post("/api/v1/webhook-endpoints/main/enable", headers=api.headers())
    enabled = await response.json()
    assert response.status == 200 and enabled["requeued"] == 2 and enabled["endpoint"]["status"] == "active"
    await _until(api, lambda rows: [r.status for r in rows] == ["succeeded", "succeeded"])
    healthy = await endpoint_state(api)
    assert healthy["status"] == "active" and healthy["failing_since"] is None and healthy["last_success_at"] is not None


async def test_a_success_between_failures_starts_the_failing_period_again(
    start: Callable[..., Awaitable[Api]], receiver: tuple[Receiver, str]
) -> None:
    found, url = receiver
    found.script = [500, 200, 500]
    api = await start(webhooks_policy(url, events="[message.queued]", schedule="retry_schedules:\n  webhooks: {delays: [0s], max_attempts: 3}\n"))
    await api.send(sms_body())
    await wait_status(api, "succeeded")
    assert (await endpoint_state(api))["status"] == "active"
    await api.send(sms_body("+14155550101"))
    await _until(api, lambda rows: len(rows) == 2 and rows[-1].last_status == 500)
    failing = await endpoint_state(api)
    assert failing["status"] == "failing" and failing["last_success_at"] is not None


async def test_enabling_an_unknown_endpoint_is_a_404_in_the_error_shape(start: Callable[..., Awaitable[Api]], receiver: tuple[Receiver, str]) -> None:
    _found, url = receiver
    api = await start(webhooks_policy(url))
    response = await api.client.post("/api/v1/webhook-endpoints/nope/enable", headers=api.headers())
    assert response.status == 404 and (await response.json())["error"]["code"] == "webhook_endpoint_not_found"
    response = await api.client.get("/api/v1/webhook-endpoints")
    assert response.status == 401, "the endpoint list needs an API key"


def notification_ids(found: Receiver) -> list[str]:
    return [orjson.loads(body)["data"]["notification_id"] for _headers, body in found.requests]


async def test_an_endpoint_added_after_a_quiet_time_gets_the_events_from_then_on_once(
    start: Callable[..., Awaitable[Api]], receiver: tuple[Receiver, str], policy_dir: Path, clock: FakeClock
) -> None:
    """With no endpoint anywhere, fan-out reads no event and writes its cursor at most once a second."""
    found, url = receiver
    api = await start("webhooks: {}\n")
    worker = api.app[EVENT_WEBHOOKS]
    _, old = await api.send(sms_body())
    await api.wait_for(old["notification_id"], lambda n: n["status"] == "sent")
    clock.advance(CURSOR_KEPT_EVERY)  # a quiet second
    await worker.until_idle()
    _, recent = await api.send(sms_body())
    await api.wait_for(recent["notification_id"], lambda n: n["status"] == "sent")
    await worker.until_idle()
    (policy_dir / "webhooks.yaml").write_text(webhooks_policy(url, events="[message.queued]"))
    assert await api.app[POLICY_WATCHER].reload() is True
    _, new = await api.send(sms_body())
    await until(found, lambda: new["notification_id"] in notification_ids(found))
    _, newer = await api.send(sms_body())
    await until(found, lambda: newer["notification_id"] in notification_ids(found))
    await worker.until_idle()
    assert notification_ids(found) == [new["notification_id"], newer["notification_id"]], "no older history, nothing twice"


async def test_after_a_crash_an_endpoint_added_meanwhile_gets_at_most_the_last_second_of_history(
    start: Callable[..., Awaitable[Api]], receiver: tuple[Receiver, str], policy_dir: Path, clock: FakeClock
) -> None:
    """The cursor of events that went nowhere is written at most once a second: that much is read again after a crash."""
    found, url = receiver
    api = await start(webhooks_policy(url, events="[message.queued]"))
    worker, store = api.app[EVENT_WEBHOOKS], api.app[STORE]
    await api.send(sms_body(), key=OTHER_KEY)  # the other tenant has no endpoint yet
    await api.idle()  # sent: all its events are in
    await worker.until_idle()
    clock.advance(CURSOR_KEPT_EVERY)
    await worker.until_idle()  # written: the old message's events are behind the stored cursor
    _, recent = await api.send(sms_body(), key=OTHER_KEY)
    await worker.until_idle()  # within the second: in memory only
    other_endpoint = f"  other:\n    main:\n      url: {url}\n      events: [message.queued]\n      secret: {SECRET}\n      allow_private: true\n"
    (policy_dir / "webhooks.yaml").write_text(webhooks_policy(url, events="[message.queued]") + other_endpoint)
    assert await api.app[POLICY_WATCHER].reload() is True

    # What a process started now, after the last one was killed, would do first.
    restarted = EventWebhooks(store, api.app[POLICIES], api.app[HTTP], clock, api.app[WEBHOOK_SIGNER])
    assert await restarted.fan_out() == (1, False)
    await api.app[EVENT_WEBHOOKS].until_idle()
    await until(found, lambda: len(found.requests) == 1)
    assert notification_ids(found) == [recent["notification_id"]], "the last second's event, once; not the older one"
    assert await restarted.fan_out() == (0, False)


async def test_events_that_went_to_no_endpoint_are_neither_sent_nor_doubled_after_a_stop_or_a_crash(
    aiohttp_client: Any, make_app: Callable[..., web.Application], policy_dir: Path, receiver: tuple[Receiver, str], clock: FakeClock
) -> None:
    found, url = receiver
    clock.value = time.time()
    (policy_dir / "webhooks.yaml").write_text(webhooks_policy(url, events="[message.queued]"))
    first = Api(await aiohttp_client(make_app()))
    _, mine = await first.send(sms_body())
    await until(found, lambda: len(found.requests) == 1)
    for _ in range(3):  # the other tenant has no endpoint: its events move the cursor in memory only
        await first.send(sms_body(), key=OTHER_KEY)
    worker, store = first.app[EVENT_WEBHOOKS], first.app[STORE]
    await first.idle()  # sent: no more events to come
    await worker.until_idle()
    assert await store.fan_out_cursor() < (await store.list_events(limit=1))[0].seq, "not written for events that went nowhere"

    # A process killed now starts from the stored cursor: it reads the other tenant's events again, and adds nothing.
    restarted = EventWebhooks(store, first.app[POLICIES], first.app[HTTP], clock, first.app[WEBHOOK_SIGNER])
    assert await restarted.fan_out() == (0, False)
    assert [(d.event_type, d.status) for d in await deliveries(first)] == [("message.queued", "succeeded")]

    database = first.app[SETTINGS].database_path
    await first.client.close()  # a stop writes the cursor
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as conn:
        (cursor,) = conn.execute("SELECT last_seq FROM webhook_fanout").fetchone()
        (newest,) = conn.execute("SELECT MAX(seq) FROM history WHERE event_type IS NOT NULL").fetchone()
    assert cursor == newest
    second = Api(await aiohttp_client(make_app()))
    _, after = await second.send(sms_body())
    await until(found, lambda: len(found.requests) == 2)
    await second.app[EVENT_WEBHOOKS].until_idle()
    assert notification_ids(found) == [mine["notification_id"], after["notification_id"]]


LANE_BATCH = 3


@pytest.fixture
def small_leases(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Event webhook workers that lease 3 deliveries at a time; how many each of a running lane's own leases took."""
    monkeypatch.setattr(app_module, "EventWebhooks", functools.partial(EventWebhooks, batch=LANE_BATCH))
    taken: list[int] = []
    claim = SqliteStore.claim_lane_webhooks

    async def counted(store: SqliteStore, *args: Any, **kwargs: Any) -> Any:
        claimed = await claim(store, *args, **kwargs)
        taken.append(len(claimed))
        return claimed

    monkeypatch.setattr(SqliteStore, "claim_lane_webhooks", counted)
    return taken


async def backlog(api: Api, found: Receiver, sends: int) -> list[str]:
    """``sends`` messages whose events pile up behind the first, which the endpoint holds until they are all fanned out."""
    found.hold = asyncio.Event()
    sent = []
    for number in range(sends):
        _, accepted = await api.send(sms_body(f"+1415555{number:04d}"))
        sent.append(accepted["notification_id"])
        await api.wait_for(accepted["notification_id"], lambda n: n["status"] == "sent")
    await _until(api, lambda rows: len(rows) == 2 * sends)  # queued and sent of each: all fanned out
    found.hold.set()
    return sent


def seqs(found: Receiver) -> list[int]:
    return [orjson.loads(body)["data"]["seq"] for _headers, body in found.requests]


async def test_a_backlog_longer_than_one_lease_goes_out_in_order_once_the_lane_leasing_what_follows(
    start: Callable[..., Awaitable[Api]], receiver: tuple[Receiver, str], small_leases: list[int]
) -> None:
    found, url = receiver
    api = await start(webhooks_policy(url, events="[message.queued, message.sent]"))
    await backlog(api, found, 6)
    await until(found, lambda: len(found.requests) == 12)
    await api.app[EVENT_WEBHOOKS].until_idle()
    assert seqs(found) == sorted(set(seqs(found))), "in creation order, each once"
    assert len(found.requests) == 12
    assert [d.status for d in await deliveries(api)] == ["succeeded"] * 12
    assert max(small_leases, default=0) == LANE_BATCH, "the lane went on with deliveries it leased while sending"


async def test_a_failure_sends_back_what_the_lane_had_leased_to_follow_and_the_order_holds(
    start: Callable[..., Awaitable[Api]], receiver: tuple[Receiver, str], small_leases: list[int], clock: FakeClock
) -> None:
    found, url = receiver
    api = await start(webhooks_policy(url, events="[message.queued, message.sent]"))
    found.script = [200, 200, 200, 503]  # the first, held; then a full lease, whose second fails after what follows is leased
    await backlog(api, found, 4)
    await until(found, lambda: len(found.requests) == 4)
    await api.app[EVENT_WEBHOOKS].until_idle()
    assert len(found.requests) == 4, "the rest wait behind the failed one"
    assert small_leases[:1] == [LANE_BATCH], "the lane had leased what follows before the failure"
    rows = await deliveries(api)
    assert [(d.status, d.attempt_count) for d in rows] == [("succeeded", 1)] * 3 + [("pending", 1)] + [("pending", 0)] * 4
    clock.advance(5)  # the schedule's first retry
    await until(found, lambda: len(found.requests) == 9)
    await api.app[EVENT_WEBHOOKS].until_idle()
    first_tries = seqs(found)[:4]
    assert seqs(found)[4:] == sorted(seqs(found)[4:]) and seqs(found)[4] == first_tries[3], "the failed one again, then the rest in order"
    assert [d.status for d in await deliveries(api)] == ["succeeded"] * 8
