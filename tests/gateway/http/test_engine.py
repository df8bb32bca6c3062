"""The delivery engine through the API: retry schedules, dead letters, channel fallback, scheduling.

Time is the fake clock's: a test moves it past a retry delay or a deadline and wakes the
dispatcher, so schedules of minutes take milliseconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from conftest import OTHER_KEY, TEST_KEY, Api, FakeClock, MemoryProvider, sms_body

from gateway.clock import isoformat
from gateway.http.appkeys import POLICY_WATCHER, SETTINGS, STORE

SMS = "+14155550100"
EMAIL = "ada@example.com"


def both(strategy: str | None = None, **notification: Any) -> dict[str, Any]:
    """OTP on sms first, then email."""
    content: dict[str, Any] = {"channels": ["sms", "email"], "template_id": "otp", "data": {"code": "1"}} | notification
    if strategy is not None:
        content["strategy"] = strategy
    return {"recipient": {"phone": SMS, "email": EMAIL}, "notification": content}


def iso(seconds: float) -> str:
    return isoformat(seconds)


def channel_statuses(notification: dict[str, Any]) -> dict[str, str]:
    return {d["channel"]: d["status"] for d in notification["deliveries"]}


async def settle(api: Api, clock: FakeClock, seconds: float) -> None:
    """Move the clock on, and let the dispatcher do all that is then due."""
    clock.advance(seconds)
    await api.idle()


async def test_fallback_tries_the_next_channel_only_when_the_first_fails_for_good(api: Api, memory_provider: type[MemoryProvider]) -> None:
    memory_provider.script[SMS] = ["permanent"]
    _, body = await api.send(both("fallback"))
    done = await api.wait_for(body["notification_id"], lambda n: channel_statuses(n) == {"sms": "failed", "email": "sent"})
    assert done["status"] == "sent"
    assert done["strategy"] == "fallback"
    assert [m.channel for m in memory_provider.sent] == ["sms", "email"]
    assert ("fallback", "waiting", "queued") in [(e["action"], e["from_status"], e["to_status"]) for e in done["audit"]]


async def test_fallback_skips_the_later_channels_once_one_is_sent(api: Api, memory_provider: type[MemoryProvider]) -> None:
    _, body = await api.send(both("fallback"))
    done = await api.wait_for(body["notification_id"], lambda n: channel_statuses(n) == {"sms": "sent", "email": "skipped"})
    assert done["status"] == "sent"
    assert [m.channel for m in memory_provider.sent] == ["sms"]


async def test_fallback_after_moves_on_when_the_first_channel_is_not_delivered_in_time(
    api: Api, memory_provider: type[MemoryProvider], clock: FakeClock
) -> None:
    _, body = await api.send(both("fallback", fallback_after="90s"))
    nid = body["notification_id"]
    await api.wait_for(nid, lambda n: channel_statuses(n) == {"sms": "sent", "email": "waiting"})
    await settle(api, clock, 89)
    early = await api.notification(nid)
    assert channel_statuses(early) == {"sms": "sent", "email": "waiting"}
    await settle(api, clock, 2)
    done = await api.wait_for(nid, lambda n: channel_statuses(n) == {"sms": "sent", "email": "sent"})
    assert [m.channel for m in memory_provider.sent] == ["sms", "email"], "the sms already sent is not cancelled"
    assert "not delivered within 90s" in [e for e in done["audit"] if e["action"] == "fallback"][0]["reason"]


async def test_fallback_after_is_not_needed_when_a_receipt_says_delivered(api: Api) -> None:
    # The sandbox (test keys) reports delivered straight after sending.
    _, body = await api.send(both("fallback", fallback_after=90), key=TEST_KEY)
    done = await api.wait_for(body["notification_id"], lambda n: channel_statuses(n) == {"sms": "delivered", "email": "skipped"}, key=TEST_KEY)
    assert done["status"] == "delivered"


async def test_strategy_all_sends_every_channel_at_once(api: Api, memory_provider: type[MemoryProvider]) -> None:
    _, body = await api.send(both())
    done = await api.wait_for(body["notification_id"], lambda n: channel_statuses(n) == {"sms": "sent", "email": "sent"})
    assert done["strategy"] == "all"


async def test_a_permanent_failure_with_no_fallback_left_is_dead_lettered(api: Api, memory_provider: type[MemoryProvider]) -> None:
    memory_provider.script[SMS] = ["permanent"]
    memory_provider.script[EMAIL] = ["permanent"]
    _, body = await api.send(both("fallback"))
    done = await api.wait_for(body["notification_id"], lambda n: channel_statuses(n) == {"sms": "failed", "email": "failed"})
    assert done["status"] == "failed"
    sms, email = done["deliveries"]
    assert sms["dead_letter"] is None, "the sms failed, and email took over: not a dead letter"
    assert email["dead_reason"] == "permanent"
    assert email["dead_letter"] == {"reason": "permanent", "at": email["updated_at"]}


@pytest.fixture
def schedules(policy_dir: Path) -> None:
    (policy_dir / "schedules.yaml").write_text("retry_schedules:\n  default: {delays: [10s, 1m]}\n")  # two retries: three attempts


@pytest.mark.usefixtures("schedules")
async def test_transient_failures_retry_on_the_policy_schedule_then_dead_letter(
    aiohttp_client: Any, make_app: Callable[..., web.Application], memory_provider: type[MemoryProvider], clock: FakeClock
) -> None:
    api = Api(await aiohttp_client(make_app()))
    memory_provider.script[SMS] = ["transient", "transient", "transient"]
    start = clock.now()
    _, body = await api.send({"recipient": {"phone": SMS}, "notification": {"channels": ["sms"], "body": "hi"}})
    nid = body["notification_id"]
    first = await api.wait_for(nid, lambda n: n["deliveries"][0]["attempt_count"] == 1 and n["deliveries"][0]["last_error"])
    assert first["deliveries"][0]["next_attempt_at"] == iso(start + 10)
    await settle(api, clock, 9)
    assert (await api.notification(nid))["deliveries"][0]["attempt_count"] == 1, "not before its delay"
    await settle(api, clock, 1)
    second = await api.wait_for(nid, lambda n: n["deliveries"][0]["attempt_count"] == 2 and len(n["deliveries"][0]["attempts"]) == 2)
    assert second["deliveries"][0]["next_attempt_at"] == iso(start + 10 + 60)
    await settle(api, clock, 60)
    done = await api.wait_for(nid, lambda n: n["status"] == "failed")
    delivery = done["deliveries"][0]
    assert delivery["dead_reason"] == "retries_exhausted"
    assert [a["outcome"] for a in delivery["attempts"]] == ["transient", "transient", "transient"]


async def test_send_at_holds_the_first_attempt_until_then(api: Api, memory_provider: type[MemoryProvider], clock: FakeClock) -> None:
    _, body = await api.send(both(send_at=iso(clock.now() + 300)))
    nid = body["notification_id"]
    await api.idle()
    clock.advance(299)
    await api.idle()
    assert memory_provider.sent == [], "nothing goes out a second early"
    assert (await api.notification(nid))["status"] == "queued"
    clock.advance(1)
    await api.idle()
    assert len(memory_provider.sent) == 2
    assert (await api.notification(nid))["status"] == "sent"


async def test_a_delivery_that_cannot_go_out_before_it_expires_is_dead_lettered(
    api: Api, memory_provider: type[MemoryProvider], clock: FakeClock
) -> None:
    _, body = await api.send(both(send_at=iso(clock.now() + 300), expires_at=iso(clock.now() + 600)))
    await settle(api, clock, 601)
    done = await api.wait_for(body["notification_id"], lambda n: n["status"] == "failed")
    assert {d["dead_reason"] for d in done["deliveries"]} == {"expired"}
    assert memory_provider.sent == []


@pytest.mark.parametrize(("strategy", "dead_letter"), [("all", True), ("fallback", False)])
async def test_a_recipient_who_opts_out_while_a_message_waits_never_gets_it(
    api: Api, memory_provider: type[MemoryProvider], clock: FakeClock, strategy: str, dead_letter: bool
) -> None:
    """Accepting refuses an address that opted out; an opt-out that comes while a scheduled message waits stops it too."""
    _, body = await api.send(both(strategy, send_at=iso(clock.now() + 300)))
    response = await api.client.post("/api/v1/opt-outs", json={"channel": "sms", "address": SMS}, headers=api.headers())
    assert response.status == 201
    await settle(api, clock, 300)
    done = await api.wait_for(body["notification_id"], lambda n: n["status"] == "sent")
    assert [m.channel for m in memory_provider.sent] == ["email"], "the sms never reached a provider"
    [sms] = [d for d in done["deliveries"] if d["channel"] == "sms"]
    assert sms["status"] == "failed" and sms["attempts"] == []
    assert (sms["dead_letter"] is not None) is dead_letter, "with a fallback waiting it is not a dead letter"
    assert "opted out of sms after the message was accepted" in sms["last_error"]
    assert [line["action"] for line in done["audit"] if line["delivery_id"] == sms["delivery_id"]] == [
        "dead_lettered" if dead_letter else "failed"
    ]


async def test_a_retry_that_would_run_after_expiry_dead_letters_instead(
    api: Api, memory_provider: type[MemoryProvider], clock: FakeClock
) -> None:
    memory_provider.script[SMS] = ["transient"]
    _, body = await api.send({"recipient": {"phone": SMS}, "notification": {"channels": ["sms"], "body": "hi", "expires_at": iso(clock.now() + 5)}})
    done = await api.wait_for(body["notification_id"], lambda n: n["status"] == "failed")
    assert done["deliveries"][0]["dead_reason"] == "expired"


@pytest.mark.parametrize(
    ("notification", "field", "code"),
    [
        ({"send_at": "2026-05-01T09:30:00"}, "notification.send_at", "invalid_schedule"),
        ({"send_at": "next tuesday"}, "notification.send_at", "invalid_schedule"),
        ({"expires_at": "2020-01-01T00:00:00Z"}, "notification.expires_at", "invalid_schedule"),
        ({"fallback_after": "90s"}, "notification.fallback_after", "invalid_strategy"),
        ({"strategy": "fallback", "fallback_after": "soon"}, "notification.fallback_after", "validation_failed"),
        ({"strategy": "sometimes"}, "notification.strategy", "validation_failed"),
    ],
)
async def test_bad_schedules_and_strategies_are_refused_and_nothing_is_queued(
    api: Api, notification: dict[str, Any], field: str, code: str
) -> None:
    status, answer = await api.send(both(**notification))
    assert status == 422, answer
    assert (answer["error"]["details"][0]["field"], answer["error"]["details"][0]["code"]) == (field, code)
    _, listing = await api.get("/api/v1/notifications")
    assert listing["items"] == []


async def test_high_priority_goes_first_through_a_throttled_channel_whatever_the_tenant(
    aiohttp_client: Any, make_app: Callable[..., web.Application], policy_dir: Path,
    memory_provider: type[MemoryProvider], clock: FakeClock,
) -> None:
    policy = policy_dir / "policy.yaml"
    policy.write_text(policy.read_text().replace("sms: {providers: [memory]}", "sms: {providers: [memory], throughput: 1/s}"))
    api = Api(await aiohttp_client(make_app()))
    rows = [{"phone": f"+1415555030{i}"} for i in range(4)]
    status, _ = await api.send_bulk({"channels": ["sms"], "body": "Spring sale", "recipients": rows})
    assert status == 202
    await memory_provider.wait_for_sends(1)  # one token: the first bulk row
    _, otp = await api.send(sms_body("+14155559999"), key=OTHER_KEY)
    for expected in range(2, 6):
        await settle(api, clock, 1)
        await memory_provider.wait_for_sends(expected)
    assert [m.to for m in memory_provider.sent][:2] == ["+14155550300", "+14155559999"], "the other tenant's OTP is next"
    assert len(memory_provider.sent) == 5


async def test_a_throttled_channel_goes_on_as_tokens_refill_without_waiting_to_be_woken(
    aiohttp_client: Any, make_app: Callable[..., web.Application], policy_dir: Path,
    memory_provider: type[MemoryProvider], clock: FakeClock, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("gateway.engine.dispatcher.IDLE_POLL", 60.0)  # an idle loop would sleep through the test
    policy = policy_dir / "policy.yaml"
    policy.write_text(policy.read_text().replace("sms: {providers: [memory]}", "sms: {providers: [memory], throughput: 2/s}"))
    api = Api(await aiohttp_client(make_app()))
    await api.send_bulk({"channels": ["sms"], "body": "Spring sale", "recipients": [{"phone": f"+1415555040{i}"} for i in range(6)]})
    await memory_provider.wait_for_sends(2)
    clock.advance(1)
    await memory_provider.wait_for_sends(4)
    clock.advance(1)
    await memory_provider.wait_for_sends(6)


async def test_a_send_whose_outcome_is_not_yet_recorded_when_its_lease_runs_out_is_not_sent_again(
    api: Api, memory_provider: type[MemoryProvider], clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The vendor took the message, but the store is slow to record it: the lease ends meanwhile. No second send."""
    store = api.app[STORE]
    record, claim = store.record_outcomes, store.claim_due
    stalled, claimed_again = asyncio.Event(), asyncio.Event()

    async def slow_record(*args: Any, **kwargs: Any) -> Any:
        await stalled.wait()
        return await record(*args, **kwargs)

    async def watched_claim(*args: Any, **kwargs: Any) -> Any:
        found = await claim(*args, **kwargs)
        if stalled_since is not None and clock.now() > stalled_since:
            claimed_again.set()
        return found

    stalled_since: float | None = None
    monkeypatch.setattr(store, "record_outcomes", slow_record)
    monkeypatch.setattr(store, "claim_due", watched_claim)
    _, body = await api.send({"recipient": {"phone": SMS}, "notification": {"channels": ["sms"], "body": "hi"}})
    await memory_provider.wait_for_sends(1)
    stalled_since = clock.now()
    clock.advance(api.app[SETTINGS].lease_seconds + 1)
    api.wake()
    try:
        await asyncio.wait_for(claimed_again.wait(), 5)  # the dispatcher has looked for due work with the lease run out
    finally:
        stalled.set()  # even when that fails: a held-back record would hold up the app's shutdown for good
    await api.idle()
    assert len(memory_provider.sent) == 1, "sent once: the delivery was still this process's, its outcome on the way"
    delivery = (await api.notification(body["notification_id"]))["deliveries"][0]
    assert (delivery["status"], delivery["attempt_count"], len(delivery["attempts"])) == ("sent", 1, 1)


async def test_a_delivery_whose_channel_lost_every_instance_records_why_and_no_made_up_instance(
    api: Api, clock: FakeClock, policy_dir: Path, memory_provider: type[MemoryProvider]
) -> None:
    _, body = await api.send({"recipient": {"phone": SMS}, "notification": {"channels": ["sms"], "body": "hi", "send_at": iso(clock.now() + 60)}})
    policy = policy_dir / "policy.yaml"
    policy.write_text(policy.read_text().replace("  sms: {providers: [memory]}\n", ""))
    assert await api.app[POLICY_WATCHER].reload() is True
    await settle(api, clock, 60)
    [attempt] = (await api.notification(body["notification_id"]))["deliveries"][0]["attempts"]
    assert (attempt["provider"], attempt["outcome"]) == (None, "transient")
    assert attempt["error"] == "sms unavailable: no provider instance serves it"
    assert memory_provider.sent == []
