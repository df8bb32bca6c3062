"""Provider callbacks on ``/api/v1/webhooks/{instance}``: real app on loopback, real SQLite, fake vendors."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import textwrap
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from conftest import LIVE_KEY, OTHER_KEY, Api, FakeClock, key_entry, serve
from fakes.vendor import PLUGIN_NAME, FakeVendor, FakeVendorProvider, signed_headers

from gateway import InboundReply, OptOut, ids
from gateway.http.appkeys import INBOUND, OUTCOMES, PROVIDERS, PURGER, SETTINGS, STORE
from gateway.store import InboundRecord, StorageUnavailableError
from gateway.store.sqlite import inbound as sqlite_inbound
from gateway.store.sqlite import outcomes as sqlite_outcomes
from gateway.store.sqlite.receipts import reconcile as real_reconcile

ACME_TOKEN = "acme-vendor-token"
OTHER_TOKEN = "other-vendor-token"
PHONE = "+14155550100"
CALLBACK_BURST = 40


@pytest.fixture
async def vendors() -> AsyncIterator[tuple[FakeVendor, FakeVendor]]:
    """One vendor account per tenant: acme's and other's own instances, each with its own secret."""
    async with FakeVendor(token=ACME_TOKEN) as acme, FakeVendor(token=OTHER_TOKEN) as other:
        yield acme, other


@pytest.fixture
async def api(
    aiohttp_client: Any, tmp_path: Path, clock: FakeClock, vendors: tuple[FakeVendor, FakeVendor]
) -> Api:
    policy_dir = tmp_path / "inbound-policies"
    policy_dir.mkdir()
    acme, other = vendors
    providers = acme.provider_policy("acme_sms", policy_dir) + other.provider_policy("other_sms", policy_dir)
    providers = providers.replace(f"    plugin: {PLUGIN_NAME}\n    config: {{url: {json.dumps(acme.url)}", f"    plugin: {PLUGIN_NAME}\n    tenant: acme\n    config: {{url: {json.dumps(acme.url)}")
    providers = providers.replace(f"    plugin: {PLUGIN_NAME}\n    config: {{url: {json.dumps(other.url)}", f"    plugin: {PLUGIN_NAME}\n    tenant: other\n    config: {{url: {json.dumps(other.url)}")
    policy = textwrap.dedent(
        f"""
        tenants:
          acme:
            api_keys: [{key_entry(LIVE_KEY)}]
            channels:
              sms: {{providers: [acme_sms]}}
          other:
            api_keys: [{key_entry(OTHER_KEY)}]
            channels:
              sms: {{providers: [other_sms]}}
        """
    ) + "providers:\n" + providers
    (policy_dir / "policy.yaml").write_text(policy)
    return await serve(aiohttp_client, policy_dir, {PLUGIN_NAME: FakeVendorProvider}, clock, inbound_max_body_bytes=4096)


def raw_body(**payload: Any) -> dict[str, Any]:
    return {"recipient": {"phone": PHONE}, "notification": {"channels": ["sms"], "body": "hi"}} | payload


async def post_callback(
    api: Api, instance: str, payload: dict[str, Any], *, token: str = ACME_TOKEN, at: float | None = None,
    tamper: Callable[[bytes], bytes] | None = None,
) -> tuple[int, dict[str, Any]]:
    """POST a callback signed as the vendor would, then wait until it has been processed and reconciled."""
    body = json.dumps(payload).encode()
    clock: FakeClock = api.app[STORE].clock  # type: ignore[assignment]
    headers = {"Content-Type": "application/json", **signed_headers(token, body, int(at if at is not None else clock.now()))}
    response = await api.client.post(f"/api/v1/webhooks/{instance}", data=tamper(body) if tamper else body, headers=headers)
    answer = await response.json()
    await settle(api.app)
    return response.status, answer


async def settle(app: web.Application) -> None:
    await app[INBOUND].drain()
    await app[OUTCOMES].drain()


async def sent_sms(api: Api, key: str = LIVE_KEY) -> tuple[str, str]:
    """Send one SMS and wait until the vendor took it: (notification id, vendor message id)."""
    status, accepted = await api.send(raw_body(), key=key)
    assert status == 202, accepted
    found = await api.wait_for(accepted["notification_id"], lambda n: n["status"] == "sent", key=key)
    return accepted["notification_id"], found["deliveries"][0]["provider_message_id"]


def receipt(message_id: str, status: str = "delivered") -> dict[str, Any]:
    return {"id": message_id, "status": status, "to": PHONE, "at": 1_800_000_000.0}


def receipts_audited(notification: dict[str, Any]) -> list[dict[str, Any]]:
    return [event for event in notification["audit"] if event["action"] == "receipt"]


async def test_a_signed_receipt_moves_a_sent_delivery_to_delivered_with_one_audit_event(api: Api) -> None:
    notification_id, message_id = await sent_sms(api)
    status, answer = await post_callback(api, "acme_sms", receipt(message_id))
    assert status == 200 and answer["received"].startswith("whk_")
    found = await api.notification(notification_id)
    assert found["deliveries"][0]["status"] == "delivered"
    assert [(e["from_status"], e["to_status"]) for e in receipts_audited(found)] == [("sent", "delivered")]
    stored = await api.app[STORE].get_inbound(answer["received"])
    assert stored is not None and stored.outcome == "processed" and stored.request.provider == "acme_sms"
    assert json.loads(stored.request.body) == receipt(message_id) and "X-Fake-Signature" in stored.request.headers


async def test_callbacks_arriving_together_are_each_acknowledged_only_once_kept_and_all_reconciled(api: Api) -> None:
    """A vendor's burst: every callback answered 200, none before it is in the database file, and every receipt applied."""
    sent = [await sent_sms(api) for _ in range(CALLBACK_BURST)]
    clock: FakeClock = api.app[STORE].clock  # type: ignore[assignment]
    database = api.app[SETTINGS].database_path
    kept_when_answered: list[bool] = []

    async def post(message_id: str) -> str:
        body = json.dumps(receipt(message_id)).encode()
        headers = {"Content-Type": "application/json", **signed_headers(ACME_TOKEN, body, int(clock.now()))}
        response = await api.client.post("/api/v1/webhooks/acme_sms", data=body, headers=headers)
        assert response.status == 200, await response.text()
        request_id: str = (await response.json())["received"]
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as conn:  # another reader of the file: sees only what is committed
            kept_when_answered.append(conn.execute("SELECT 1 FROM inbound_requests WHERE id = ?", (request_id,)).fetchone() is not None)
        return request_id

    request_ids = await asyncio.gather(*(post(message_id) for _, message_id in sent))
    assert kept_when_answered == [True] * CALLBACK_BURST, "a callback was acknowledged before it was committed"
    await settle(api.app)
    for notification_id, _ in sent:
        found = await api.notification(notification_id)
        assert found["deliveries"][0]["status"] == "delivered"
        assert [(e["from_status"], e["to_status"]) for e in receipts_audited(found)] == [("sent", "delivered")]
    assert {await outcome_of(api, request_id) for request_id in request_ids} == {"processed"}


async def test_a_duplicate_receipt_changes_nothing(api: Api) -> None:
    notification_id, message_id = await sent_sms(api)
    await post_callback(api, "acme_sms", receipt(message_id))
    before = await api.notification(notification_id)
    status, _ = await post_callback(api, "acme_sms", receipt(message_id))
    assert status == 200
    assert await api.notification(notification_id) == before
    assert len(receipts_audited(before)) == 1


async def test_a_receipt_before_the_send_is_recorded_is_held_and_applied_later(api: Api, vendors: tuple[FakeVendor, FakeVendor]) -> None:
    acme, _ = vendors
    acme.script(PHONE, ["timeout"])
    status, accepted = await api.send(raw_body())
    assert status == 202
    await acme.wait_for(lambda v: v.held == 1)
    await post_callback(api, "acme_sms", receipt("msg_00000001"))  # the id the vendor is about to give
    assert (await api.notification(accepted["notification_id"]))["deliveries"][0]["status"] == "sending"
    acme.release()
    found = await api.wait_for(accepted["notification_id"], lambda n: n["deliveries"][0]["status"] == "delivered")
    assert [(e["from_status"], e["to_status"]) for e in receipts_audited(found)] == [("sent", "delivered")]


@pytest.mark.parametrize(
    ("how", "post"),
    [
        ("forged", lambda api, payload: post_callback(api, "acme_sms", payload, token="not-the-secret")),
        ("stale", lambda api, payload: post_callback(api, "acme_sms", payload, at=api.app[STORE].clock.now() - 301)),
        ("re-serialised by a proxy", lambda api, payload: post_callback(api, "acme_sms", payload, tamper=lambda b: json.dumps(json.loads(b), indent=2).encode())),
        ("signed with another tenant's secret", lambda api, payload: post_callback(api, "acme_sms", payload, token=OTHER_TOKEN)),
    ],
)
async def test_a_callback_that_fails_verification_is_401_kept_as_a_summary_and_changes_nothing(api: Api, how: str, post: Any) -> None:
    notification_id, message_id = await sent_sms(api)
    before = await api.notification(notification_id)
    status, answer = await post(api, receipt(message_id))
    assert status == 401, how
    assert answer["error"]["code"] == "webhook_verification_failed"
    request_id = answer["error"]["message"].rsplit("stored as ", 1)[1].rstrip(").")
    assert await api.app[STORE].get_inbound(request_id) is None  # neither its body nor its headers are kept
    refused = await api.app[STORE].get_refused(request_id)
    assert refused is not None and refused.provider == "acme_sms" and refused.source == "127.0.0.1" and refused.reason
    assert refused.size > 0 and refused.sha256 is not None and len(refused.sha256) == 64
    assert await api.notification(notification_id) == before


async def test_credentials_in_a_callback_are_stored_masked_and_a_signed_url_byte_for_byte(api: Api) -> None:
    body = json.dumps(receipt("msg_1")).encode()
    headers = {"Content-Type": "application/json", "Authorization": "Basic dXNlcjpodW50ZXIy",
               **signed_headers(ACME_TOKEN, body, int(api.app[STORE].clock.now()))}
    response = await api.client.post("/api/v1/webhooks/acme_sms?token=hunter2&d=dlv_1&sig=ab%2Bc", data=body, headers=headers)
    stored = await api.app[STORE].get_inbound((await response.json())["received"])
    assert stored is not None and "hunter2" not in json.dumps(stored.request.headers) + stored.request.target
    assert stored.request.target == "/api/v1/webhooks/acme_sms?token=%5Bredacted%5D&d=dlv_1&sig=ab%2Bc"
    assert stored.request.headers["Authorization"] == "Basic [redacted]"
    response = await api.client.post("/api/v1/webhooks/acme_sms?d=dlv_1&sig=ab%2Bc", data=body, headers=headers)
    stored = await api.app[STORE].get_inbound((await response.json())["received"])
    assert stored is not None and stored.request.target == "/api/v1/webhooks/acme_sms?d=dlv_1&sig=ab%2Bc"


async def test_a_huge_body_is_413_and_an_unknown_instance_404(api: Api) -> None:
    response = await api.client.post("/api/v1/webhooks/acme_sms", data=b"x" * 5000, headers={"Content-Type": "application/json"})
    assert response.status == 413 and (await response.json())["error"]["code"] == "payload_too_large"
    status, answer = await post_callback(api, "nobody", receipt("msg_00000001"))
    assert status == 404 and answer["error"]["code"] == "unknown_provider_instance"


async def test_a_get_without_a_plugin_handshake_is_405(api: Api) -> None:
    response = await api.client.get("/api/v1/webhooks/acme_sms")
    assert response.status == 405 and response.headers["Allow"] == "POST"


async def test_another_tenants_instance_cannot_move_this_tenants_delivery(api: Api) -> None:
    notification_id, message_id = await sent_sms(api)
    before = await api.notification(notification_id)
    # Validly signed by the other tenant's vendor account, naming acme's message id: it is that
    # instance's message id space, so it matches nothing of acme's.
    status, _ = await post_callback(api, "other_sms", receipt(message_id), token=OTHER_TOKEN)
    assert status == 200
    assert await api.notification(notification_id) == before


def reply(body: str, message_id: str = "msg_in_1", in_reply_to: str | None = None) -> dict[str, Any]:
    return {"type": "reply", "id": message_id, "from": PHONE, "to": "ACME", "body": body, "in_reply_to": in_reply_to}


async def test_a_reply_is_stored_linked_and_becomes_a_message_replied_event(api: Api) -> None:
    notification_id, message_id = await sent_sms(api)
    status, _ = await post_callback(api, "acme_sms", reply("Thanks!", in_reply_to=message_id))
    assert status == 200
    [stored] = (await api.app[STORE].list_replies("acme")).items
    assert (stored.sender, stored.body, stored.notification_id) == (PHONE, "Thanks!", notification_id)
    [event] = [e for e in await api.app[STORE].list_events(tenant="acme") if e.type == "message.replied"]
    assert event.subject == notification_id and event.data["body"] == "Thanks!"
    assert (await api.app[STORE].list_replies("other")).items == []


async def test_stop_opts_the_recipient_out_until_start(api: Api) -> None:
    await sent_sms(api)
    await post_callback(api, "acme_sms", reply("  stop "))
    status, refused = await api.send(raw_body())
    assert status == 422 and refused["error"]["code"] == "recipient_opted_out"
    assert refused["error"]["details"][0]["field"] == "recipient.phone"
    status, bulk = await api.send_bulk(
        {"channels": ["sms"], "body": "hi", "recipients": [{"phone": PHONE}, {"phone": "+14155550199"}]}
    )
    assert status == 202 and bulk["accepted"] == 1
    assert [(e["index"], e["code"]) for e in bulk["errors"]] == [(0, "recipient_opted_out")]
    status, _ = await api.send(raw_body(), key=OTHER_KEY)  # opt-outs are per tenant
    assert status == 202
    await post_callback(api, "acme_sms", reply("START", message_id="msg_in_2"))
    status, _ = await api.send(raw_body())
    assert status == 202
    assert await opt_events(api, "acme") == [("recipient.opted_in", PHONE), ("recipient.opted_out", PHONE)]  # newest first
    assert await opt_events(api, "other") == []


async def opt_events(api: Api, tenant: str) -> list[tuple[str, str]]:
    """The tenant's ``recipient.*`` events, newest first: (type, address)."""
    events = await api.app[STORE].list_events(tenant=tenant)
    return [(e.type, e.data["address"]) for e in events if e.type.startswith("recipient.")]


async def outcome_of(api: Api, request_id: str) -> str | None:
    """What became of a stored callback (received, processed, rejected); None if it is not kept."""
    stored = await api.app[STORE].get_inbound(request_id)
    return stored.outcome if stored is not None else None


async def test_the_retention_purge_removes_old_raw_requests_and_keeps_new_ones(api: Api, clock: FakeClock) -> None:
    purger = api.app[PURGER]
    _, old = await post_callback(api, "acme_sms", receipt("msg_x"))
    clock.advance(29 * 86400)
    _, new = await post_callback(api, "acme_sms", receipt("msg_y"))
    await wait_until(lambda: purger.asleep)  # the purger is asleep again, on the new time
    runs = purger.runs
    clock.advance(2 * 86400)
    await wait_until(lambda: purger.runs > runs)
    store = api.app[STORE]
    assert await store.get_inbound(old["received"]) is None
    assert await store.get_inbound(new["received"]) is not None


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Let other tasks run until ``predicate`` holds (the purger moves on the fake clock, not in real time)."""
    async with asyncio.timeout(5):
        while not predicate():
            await asyncio.sleep(0)


async def test_processing_answers_before_reconciling(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """The 200 does not wait for reconciliation: a callback is durable and verified, nothing more."""
    notification_id, message_id = await sent_sms(api)
    provider = api.app[PROVIDERS].current.get("acme_sms")
    assert provider is not None
    parsing, go_on = asyncio.Event(), asyncio.Event()
    parse = provider.parse_webhook

    async def held_parse(request: Any) -> Any:
        parsing.set()
        await go_on.wait()
        return await parse(request)

    monkeypatch.setattr(provider, "parse_webhook", held_parse)
    body = json.dumps(receipt(message_id)).encode()
    headers = {"Content-Type": "application/json", **signed_headers(ACME_TOKEN, body, int(api.app[STORE].clock.now()))}
    client: TestClient = api.client
    # A gateway that reconciled before answering would never answer while processing is held.
    response = await asyncio.wait_for(client.post("/api/v1/webhooks/acme_sms", data=body, headers=headers), 5)
    request_id = (await response.json())["received"]
    assert response.status == 200
    await asyncio.wait_for(parsing.wait(), 5)
    assert await outcome_of(api, request_id) == "received"
    assert (await api.notification(notification_id))["deliveries"][0]["status"] == "sent"
    go_on.set()
    await settle(api.app)
    assert await outcome_of(api, request_id) == "processed"
    assert (await api.notification(notification_id))["deliveries"][0]["status"] == "delivered"


async def test_a_callback_is_never_marked_processed_before_its_receipt_is_applied(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """While the store refuses to reconcile, the callback stays ``received`` (processed again on start if the process dies)."""
    notification_id, message_id = await sent_sms(api)
    refusing, refused = threading.Event(), threading.Event()
    refusing.set()

    def reconcile(*args: Any) -> None:
        if refusing.is_set():
            refused.set()
            raise StorageUnavailableError("the store refused a write: disk I/O error")
        real_reconcile(*args)

    for module in (sqlite_inbound, sqlite_outcomes):  # wherever a callback's receipts are reconciled
        monkeypatch.setattr(module, "reconcile", reconcile)
    body = json.dumps(receipt(message_id)).encode()
    headers = {"Content-Type": "application/json", **signed_headers(ACME_TOKEN, body, int(api.app[STORE].clock.now()))}
    response = await api.client.post("/api/v1/webhooks/acme_sms", data=body, headers=headers)
    assert response.status == 200
    request_id = (await response.json())["received"]
    assert await asyncio.to_thread(refused.wait, 5)
    assert await outcome_of(api, request_id) == "received"
    assert (await api.notification(notification_id))["deliveries"][0]["status"] == "sent"
    refusing.clear()
    await settle(api.app)
    assert await outcome_of(api, request_id) == "processed"
    assert (await api.notification(notification_id))["deliveries"][0]["status"] == "delivered"


async def test_a_callback_acknowledged_but_not_processed_before_a_stop_is_processed_on_start(api: Api) -> None:
    notification_id, message_id = await sent_sms(api)
    body = json.dumps(receipt(message_id)).encode()
    # What a process leaves behind when it stops between the 200 and the processing.
    record = InboundRecord(ids.new_id(ids.WEBHOOK), "acme_sms", api.app[STORE].clock.now(), "127.0.0.1", "POST",
                           "/api/v1/webhooks/acme_sms", signed_headers(ACME_TOKEN, body, int(api.app[STORE].clock.now())), body)
    await api.app[STORE].store_inbound([record])
    gone = InboundRecord(ids.new_id(ids.WEBHOOK), "retired_sms", record.received_at, None, "POST", "/api/v1/webhooks/retired_sms", {}, b"{}")
    await api.app[STORE].store_inbound([gone])

    resumed = await api.app[INBOUND].resume(api.app[PROVIDERS].current.instances, lambda _name: ("acme",))
    await settle(api.app)
    assert resumed == 2
    found = await api.notification(notification_id)
    assert found["deliveries"][0]["status"] == "delivered"
    assert await outcome_of(api, record.id) == "processed"
    assert await outcome_of(api, gone.id) == "rejected"
    assert await api.app[STORE].pending_inbound() == []


async def post_json(api: Api, path: str, body: Any, key: str | None = None) -> tuple[int, dict[str, Any]]:
    response = await api.client.post(path, json=body, headers=api.headers(key))
    return response.status, await response.json()


async def test_replies_and_opt_outs_are_listed_per_tenant_through_the_api(api: Api) -> None:
    notification_id, message_id = await sent_sms(api)
    await post_callback(api, "acme_sms", reply("Thanks!", in_reply_to=message_id))
    await post_callback(api, "acme_sms", reply("STOP", message_id="msg_in_2"))
    status, replies = await api.get("/api/v1/replies?limit=1")
    assert status == 200 and [r["body"] for r in replies["items"]] == ["STOP"]
    _, older = await api.get(f"/api/v1/replies?limit=1&cursor={replies['next_cursor']}")
    [thanks] = older["items"]
    assert (thanks["from"], thanks["notification_id"], thanks["in_reply_to"], older["next_cursor"]) == (PHONE, notification_id, message_id, None)
    status, opt_outs = await api.get("/api/v1/opt-outs")
    [opted] = opt_outs["items"]
    assert (opted["channel"], opted["address"]) == ("sms", PHONE) and opted["source"].startswith("reply via acme_sms")
    assert (await api.get("/api/v1/replies", key=OTHER_KEY))[1]["items"] == []
    assert (await api.get("/api/v1/opt-outs", key=OTHER_KEY))[1]["items"] == []
    status, bad = await api.get("/api/v1/replies?cursor=nonsense")
    assert status == 400 and bad["error"]["code"] == "invalid_parameter"


async def test_a_tenant_records_an_opt_out_from_its_own_system_and_sends_to_it_are_refused(api: Api) -> None:
    status, created = await post_json(api, "/api/v1/opt-outs", {"channel": "sms", "address": PHONE})
    assert status == 201 and created["created"] is True
    status, refused = await api.send(raw_body())
    assert status == 422 and refused["error"]["code"] == "recipient_opted_out"
    status, again = await post_json(api, "/api/v1/opt-outs", {"channel": "sms", "address": PHONE})
    assert status == 200 and again["created"] is False
    [opted] = (await api.get("/api/v1/opt-outs?channel=sms"))[1]["items"]
    assert opted["source"].startswith("api key:")
    assert await opt_events(api, "acme") == [("recipient.opted_out", PHONE)], "told once, when it changed"
    status, _ = await api.send(raw_body(), key=OTHER_KEY)
    assert status == 202, "another tenant's opt-out list is its own"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"channel": "fax", "address": PHONE}, "unknown_channel"),
        ({"channel": "sms"}, "validation_failed"),
        ({"channel": "sms", "address": "   "}, "validation_failed"),
        ({"channel": "sms", "address": PHONE, "colour": "red"}, "validation_failed"),
        ([1, 2], "validation_failed"),
    ],
)
async def test_a_bad_opt_out_is_refused_and_records_nothing(api: Api, body: Any, code: str) -> None:
    status, refused = await post_json(api, "/api/v1/opt-outs", body)
    assert status == 422 and refused["error"]["code"] == code, refused
    assert (await api.get("/api/v1/opt-outs"))[1]["items"] == []


async def test_a_reply_a_plugin_reports_by_itself_is_stored_like_one_from_a_callback(api: Api) -> None:
    notification_id, message_id = await sent_sms(api)
    provider = api.app[PROVIDERS].current.instances["acme_sms"]
    provider.context.report([InboundReply(sender=PHONE, body="Polled reply", channel="sms", in_reply_to=message_id)])
    await api.app[INBOUND].drain()
    [stored] = (await api.get("/api/v1/replies"))[1]["items"]
    assert (stored["body"], stored["notification_id"]) == ("Polled reply", notification_id)


async def test_an_opt_out_a_plugin_reports_is_recorded_for_its_tenant_without_a_reply(api: Api) -> None:
    await sent_sms(api)
    provider = api.app[PROVIDERS].current.instances["acme_sms"]
    provider.context.report([OptOut("sms", PHONE, reason="on the carrier's opt-out list")])
    await api.app[INBOUND].drain()
    [opted] = (await api.get("/api/v1/opt-outs"))[1]["items"]
    assert (opted["channel"], opted["address"], opted["source"]) == ("sms", PHONE, "acme_sms: on the carrier's opt-out list")
    assert (await api.get("/api/v1/replies"))[1]["items"] == []
    status, refused = await api.send(raw_body())
    assert status == 422 and refused["error"]["code"] == "recipient_opted_out"
    status, _ = await api.send(raw_body(), key=OTHER_KEY)
    assert status == 202
    provider.context.report([OptOut("sms", PHONE, opted_out=False, reason="re-subscribed")])
    await api.app[INBOUND].drain()
    status, _ = await api.send(raw_body())
    assert status == 202


async def test_a_vendor_retrying_a_reply_callback_stores_it_and_its_event_once(api: Api) -> None:
    _, message_id = await sent_sms(api)
    for _ in range(2):
        status, _ = await post_callback(api, "acme_sms", reply("Thanks!", message_id="msg_in_7", in_reply_to=message_id))
        assert status == 200
    assert [r["body"] for r in (await api.get("/api/v1/replies"))[1]["items"]] == ["Thanks!"]
    assert len([e for e in await api.app[STORE].list_events(tenant="acme") if e.type == "message.replied"]) == 1
