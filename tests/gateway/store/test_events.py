"""Events are written with the change that causes them: one row per transition tenants hear about."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from gateway import ids
from gateway.store import AttemptResult, NewDelivery, NewNotification, ReceivedStatus, SqliteStore, StoredEvent
from tests.gateway.store.test_sqlite import notification


async def events_of(store: SqliteStore, notification_id: str) -> list[StoredEvent]:
    """The notification's events, oldest first."""
    return [e for e in reversed(await store.list_events(tenant="acme")) if e.subject == notification_id]


async def accept_and_claim(store: SqliteStore, n: NewNotification, channel: str = "sms") -> Any:
    await store.accept([n], tenant="acme", idempotency=None, status=202, body=b"{}")
    [claimed] = await store.claim_due(channel, limit=10, owner="w", lease_seconds=60)
    return claimed


async def test_accept_send_and_receipts_each_write_their_event_with_the_common_fields(fresh_store: SqliteStore, clock: Any) -> None:
    n = replace(notification(), template_id="otp")
    claimed = await accept_and_claim(fresh_store, n)
    await fresh_store.record_attempts(
        [AttemptResult(claimed.id, 1, "memory", 0.0, 0.0, "sent", "sent", provider_message_id="m-1")]
    )
    await fresh_store.apply_statuses([ReceivedStatus("memory", "m-1", "delivered"), ReceivedStatus("memory", "m-1", "read")])
    await fresh_store.apply_statuses([ReceivedStatus("memory", "m-1", "delivered")])  # late duplicate: no event
    events = await events_of(fresh_store, n.id)
    assert [e.type for e in events] == ["message.queued", "message.sent", "message.delivered", "message.read"]
    assert not any(e.data["simulated"] for e in events), "the memory provider is a real one"
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    sent = events[1]
    assert sent.tenant == "acme" and sent.at == clock.now() and sent.id.startswith("evt_")
    assert sent.data == {
        "notification_id": n.id, "tenant": "acme", "delivery_id": claimed.id, "channel": "sms",
        "status": "sent", "reason": None, "template_id": "otp", "simulated": False,
    }
    assert events[0].data["channels"] == ["sms"] and events[0].data["status"] == "queued"


async def test_an_email_opened_then_clicked_is_told_as_each_and_a_late_open_changes_nothing(fresh_store: SqliteStore) -> None:
    n = replace(notification(), channels=["email"], recipient={"email": "a@b.example"}, deliveries=[NewDelivery(ids.new_id(ids.DELIVERY), "email", 0, "a@b.example", {"body": "hi"})])
    claimed = await accept_and_claim(fresh_store, n, channel="email")
    await fresh_store.record_attempts([AttemptResult(claimed.id, 1, "memory", 0.0, 0.0, "sent", "sent", provider_message_id="m-2")])
    for status in ("delivered", "opened", "clicked", "opened"):
        await fresh_store.apply_statuses([ReceivedStatus("memory", "m-2", status)])
    events = await events_of(fresh_store, n.id)
    assert [e.type for e in events] == ["message.queued", "message.sent", "message.delivered", "message.opened", "message.clicked"]
    assert [e.data["status"] for e in events[2:]] == ["delivered", "opened", "clicked"]
    found = await fresh_store.get_notification("acme", n.id)
    assert found is not None and (found.status, found.deliveries[0].status) == ("clicked", "clicked")


async def test_a_permanent_failure_without_fallback_is_dead_lettered_and_failed_with_its_reason(fresh_store: SqliteStore) -> None:
    n = notification()
    claimed = await accept_and_claim(fresh_store, n)
    await fresh_store.record_attempts(
        [AttemptResult(claimed.id, 1, "memory", 0.0, 0.0, "permanent", "failed", error="recipient rejected")]
    )
    events = await events_of(fresh_store, n.id)
    assert [e.type for e in events] == ["message.queued", "message.dead_lettered", "message.failed"]
    assert events[1].data["reason"] == "permanent: recipient rejected"
    assert events[2].data["status"] == "failed"
    assert events[2].data["reason"] == "permanent: recipient rejected"


async def test_a_channel_failing_before_its_fallback_is_not_a_failed_message(fresh_store: SqliteStore) -> None:
    sms, email = ids.new_id(ids.DELIVERY), ids.new_id(ids.DELIVERY)
    n = replace(
        notification(), strategy="fallback", channels=["sms", "email"], recipient={"phone": "+14155550100", "email": "a@b.example"},
        deliveries=[NewDelivery(sms, "sms", 0, "+14155550100", {"body": "hi"}), NewDelivery(email, "email", 1, "a@b.example", {"body": "hi"})],
    )
    claimed = await accept_and_claim(fresh_store, n)
    await fresh_store.record_attempts([AttemptResult(claimed.id, 1, "memory", 0.0, 0.0, "permanent", "failed", error="no")])
    assert [e.type for e in await events_of(fresh_store, n.id)] == ["message.queued"]
    [second] = await fresh_store.claim_due("email", limit=10, owner="w", lease_seconds=60)
    await fresh_store.record_attempts([AttemptResult(second.id, 1, "memory", 0.0, 0.0, "permanent", "failed", error="bounced mailbox")])
    events = await events_of(fresh_store, n.id)
    assert [e.type for e in events] == ["message.queued", "message.dead_lettered", "message.failed"]
    assert events[2].data["reason"] == "permanent: bounced mailbox"


async def test_a_delivery_that_expires_in_the_queue_is_dead_lettered_with_the_reason(fresh_store: SqliteStore, clock: Any) -> None:
    n = replace(notification(), expires_at=clock.now() + 10)
    await fresh_store.accept([n], tenant="acme", idempotency=None, status=202, body=b"{}")
    clock.advance(11)
    assert await fresh_store.claim_due("sms", limit=10, owner="w", lease_seconds=60) == []
    events = await events_of(fresh_store, n.id)
    assert [e.type for e in events] == ["message.queued", "message.dead_lettered", "message.failed"]
    assert events[1].data["reason"].startswith("expired")
