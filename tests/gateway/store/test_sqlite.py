"""The store on a real SQLite file: atomic accepts, leases that survive a dead worker, forward-only receipts."""

from __future__ import annotations

from typing import Any

import pytest

from gateway import ids
from gateway.store import AttemptResult, IdempotencyClaim, NewDelivery, NewNotification, NotificationFilter, ReceivedStatus, SqliteStore


def notification(channel: str = "sms", address: str = "+14155550100") -> NewNotification:
    return NewNotification(
        id=ids.new_id(ids.NOTIFICATION), tenant="acme", mode="live", priority="normal", strategy="all", template_id=None,
        recipient={"phone": address}, channels=[channel],
        deliveries=[NewDelivery(ids.new_id(ids.DELIVERY), channel, 0, address, {"body": "hi"})], created_by="key:test",
    )


async def sent(store: SqliteStore, claimed: Any, message_id: str) -> None:
    await store.record_attempts(
        [AttemptResult(claimed.id, claimed.attempt, "memory", 0.0, 0.0, "sent", "sent", provider_message_id=message_id)]
    )


async def status_of(store: SqliteStore, n: NewNotification) -> str:
    found = await store.get_notification("acme", n.id)
    assert found is not None
    return found.deliveries[0].status


async def test_a_lease_held_by_a_dead_worker_is_reclaimed_only_after_it_expires(fresh_store: SqliteStore, clock: Any) -> None:
    n = notification()
    await fresh_store.accept([n], tenant="acme", idempotency=None, status=202, body=b"{}")
    first = await fresh_store.claim_due("sms", limit=10, owner="dead-worker", lease_seconds=60)
    assert [c.id for c in first] == [n.deliveries[0].id]
    assert await fresh_store.claim_due("sms", limit=10, owner="other", lease_seconds=60) == []
    clock.advance(61)
    again = await fresh_store.claim_due("sms", limit=10, owner="other", lease_seconds=60)
    assert [(c.id, c.attempt, c.reclaimed) for c in again] == [(n.deliveries[0].id, 2, True)]
    found = await fresh_store.get_notification("acme", n.id)
    assert found is not None and "lease_expired" in [entry.action for entry in found.history or ()]


async def test_high_priority_is_claimed_before_bulk(fresh_store: SqliteStore) -> None:
    from dataclasses import replace

    bulk = [replace(notification(), priority="bulk") for _ in range(3)]
    otp = replace(notification(), priority="high")
    await fresh_store.accept([*bulk, otp], tenant="acme", idempotency=None, status=202, body=b"{}")
    claimed = await fresh_store.claim_due("sms", limit=1, owner="w", lease_seconds=60)
    assert claimed[0].notification_id == otp.id


async def test_receipts_never_move_a_status_backwards_and_duplicates_change_nothing(fresh_store: SqliteStore) -> None:
    n = notification()
    await fresh_store.accept([n], tenant="acme", idempotency=None, status=202, body=b"{}")
    (claimed,) = await fresh_store.claim_due("sms", limit=1, owner="w", lease_seconds=60)
    await sent(fresh_store, claimed, "m-1")
    await fresh_store.apply_statuses([ReceivedStatus("memory", "m-1", "delivered")])
    await fresh_store.apply_statuses([ReceivedStatus("memory", "m-1", "sent"), ReceivedStatus("memory", "m-1", "delivered")])
    assert await status_of(fresh_store, n) == "delivered"
    found = await fresh_store.get_notification("acme", n.id)
    assert found is not None and [e.to_status for e in found.history or () if e.action == "receipt"] == ["delivered"]


async def test_a_receipt_that_arrives_before_the_send_is_recorded_is_held_then_applied(fresh_store: SqliteStore) -> None:
    n = notification()
    await fresh_store.accept([n], tenant="acme", idempotency=None, status=202, body=b"{}")
    (claimed,) = await fresh_store.claim_due("sms", limit=1, owner="w", lease_seconds=60)
    await fresh_store.apply_statuses([ReceivedStatus("memory", "early-1", "delivered")])
    assert await status_of(fresh_store, n) == "sending"
    await sent(fresh_store, claimed, "early-1")
    assert await status_of(fresh_store, n) == "delivered"
    found = await fresh_store.get_notification("acme", n.id)
    assert found is not None and found.status == "delivered"


def timed_out(claimed: Any, retry_at: float) -> AttemptResult:
    """A send that timed out: due again at ``retry_at``, no message id learned."""
    return AttemptResult(claimed.id, claimed.attempt, "memory", 0.0, 0.0, "transient", "sending", error="timed out", retry_at=retry_at)


async def test_a_receipt_naming_the_delivery_settles_a_send_that_timed_out(fresh_store: SqliteStore, clock: Any) -> None:
    n = notification()
    await fresh_store.accept([n], tenant="acme", idempotency=None, status=202, body=b"{}")
    (claimed,) = await fresh_store.claim_due("sms", limit=1, owner="w", lease_seconds=60)
    await fresh_store.record_attempts([timed_out(claimed, clock.now() + 3600)])
    await fresh_store.apply_statuses([ReceivedStatus("memory", "m-lost", "delivered", delivery_id=claimed.id)])
    found = await fresh_store.get_notification("acme", n.id)
    assert found is not None
    [delivery] = found.deliveries
    assert (delivery.status, delivery.provider_message_id) == ("delivered", "m-lost")
    await fresh_store.apply_statuses([ReceivedStatus("memory", "m-lost", "read")])  # later receipts match by message id
    assert await status_of(fresh_store, n) == "read"
    clock.advance(7200)
    assert await fresh_store.claim_due("sms", limit=1, owner="w", lease_seconds=60) == []


async def test_a_receipt_naming_the_delivery_waits_for_the_attempt_it_came_from(fresh_store: SqliteStore, clock: Any) -> None:
    n = notification()
    await fresh_store.accept([n], tenant="acme", idempotency=None, status=202, body=b"{}")
    (claimed,) = await fresh_store.claim_due("sms", limit=1, owner="w", lease_seconds=60)
    await fresh_store.apply_statuses([ReceivedStatus("memory", "m-early", "delivered", delivery_id=claimed.id)])
    assert await status_of(fresh_store, n) == "sending"  # no attempt recorded yet: held
    await fresh_store.record_attempts([timed_out(claimed, clock.now() + 3600)])
    assert await status_of(fresh_store, n) == "delivered"


async def test_a_receipt_from_another_instance_never_reaches_a_delivery_by_its_id(fresh_store: SqliteStore, clock: Any) -> None:
    n = notification()
    await fresh_store.accept([n], tenant="acme", idempotency=None, status=202, body=b"{}")
    (claimed,) = await fresh_store.claim_due("sms", limit=1, owner="w", lease_seconds=60)
    await fresh_store.record_attempts([timed_out(claimed, clock.now() + 3600)])
    await fresh_store.apply_statuses([ReceivedStatus("elsewhere", "x-1", "failed", error="forged", delivery_id=claimed.id)])
    assert await status_of(fresh_store, n) == "sending"


async def test_held_receipts_are_purged_with_old_callbacks(fresh_store: SqliteStore, clock: Any) -> None:
    await fresh_store.apply_statuses([ReceivedStatus("memory", "never-sent", "delivered")])
    clock.advance(10)
    await fresh_store.apply_statuses([ReceivedStatus("memory", "newer", "delivered")])
    await fresh_store.purge_inbound(clock.now() - 5)
    n = notification()
    await fresh_store.accept([n], tenant="acme", idempotency=None, status=202, body=b"{}")
    (claimed,) = await fresh_store.claim_due("sms", limit=1, owner="w", lease_seconds=60)
    await sent(fresh_store, claimed, "never-sent")
    assert await status_of(fresh_store, n) == "sent"  # its early receipt was purged
    n2 = notification()
    await fresh_store.accept([n2], tenant="acme", idempotency=None, status=202, body=b"{}")
    (claimed2,) = await fresh_store.claim_due("sms", limit=1, owner="w", lease_seconds=60)
    await sent(fresh_store, claimed2, "newer")
    assert await status_of(fresh_store, n2) == "delivered"


async def test_a_large_batch_of_results_and_receipts_is_applied_row_by_row_in_order(fresh_store: SqliteStore) -> None:
    batch = [notification() for _ in range(650)]  # more rows than one IN (...) chunk
    await fresh_store.accept(batch, tenant="acme", idempotency=None, status=202, body=b"{}")
    claimed = await fresh_store.claim_due("sms", limit=1000, owner="w", lease_seconds=60)
    assert len(claimed) == 650
    await fresh_store.record_attempts(
        [AttemptResult(c.id, c.attempt, "memory", 0.0, 0.0, "sent", "sent", provider_message_id=f"m-{i}") for i, c in enumerate(claimed)]
    )
    receipts = [ReceivedStatus("memory", f"m-{i}", "delivered") for i in range(650)]
    receipts += [ReceivedStatus("memory", "m-0", "read"), ReceivedStatus("memory", "m-0", "delivered"), ReceivedStatus("memory", "later", "sent")]
    await fresh_store.apply_statuses(receipts)
    first = next(n for n in batch if n.deliveries[0].id == claimed[0].id)
    found = await fresh_store.get_notification("acme", first.id)
    assert found is not None
    assert (found.status, found.deliveries[0].status) == ("read", "read")
    assert [(e.from_status, e.to_status) for e in found.history or () if e.action == "receipt"] == [("sent", "delivered"), ("delivered", "read")]
    page = await fresh_store.list_notifications("acme", NotificationFilter(status="delivered"), limit=1000, cursor=None)
    assert len(page.items) == 649


async def test_an_idempotency_key_is_recorded_with_the_accept_and_replayed_after(fresh_store: SqliteStore) -> None:
    claim = IdempotencyClaim("k1", "fp1", "live")
    first = await fresh_store.accept([notification()], tenant="acme", idempotency=claim, status=202, body=b'{"n": 1}')
    again = await fresh_store.accept([notification()], tenant="acme", idempotency=claim, status=202, body=b'{"n": 2}')
    other = await fresh_store.accept([notification()], tenant="acme", idempotency=IdempotencyClaim("k1", "fp2", "live"), status=202, body=b"{}")
    assert (first.replayed, again.replayed, again.body) == (False, True, b'{"n": 1}')
    assert other.replayed and not other.fingerprint_matches
    page = await fresh_store.list_notifications("acme", NotificationFilter(), limit=10, cursor=None)
    assert len(page.items) == 1


async def test_accepted_notifications_survive_closing_and_reopening_the_file(fresh_store: SqliteStore, clock: Any, tmp_path: Any) -> None:
    n = notification()
    await fresh_store.accept([n], tenant="acme", idempotency=None, status=202, body=b"{}")
    await fresh_store.close()
    reopened = SqliteStore(fresh_store.path, clock)
    await reopened.open()
    try:
        assert await status_of(reopened, n) == "queued"
    finally:
        await reopened.close()
    await fresh_store.open()


async def test_one_process_at_a_time_opens_a_store_and_its_files_are_private(tmp_path: Any, clock: Any) -> None:
    from gateway.errors import StoreInUseError

    path = tmp_path / "data" / "tidings.sqlite3"
    path.parent.mkdir()
    path.touch(mode=0o644)  # what an older version left behind
    path.chmod(0o644)
    first = SqliteStore(path, clock)
    await first.open()
    try:
        await first.accept([notification()], tenant="acme", idempotency=None, status=202, body=b"{}")
        assert {p.name: p.stat().st_mode & 0o777 for p in path.parent.iterdir() if p.name.startswith("tidings.sqlite3")} == {
            "tidings.sqlite3": 0o600, "tidings.sqlite3-wal": 0o600, "tidings.sqlite3-shm": 0o600, "tidings.sqlite3.lock": 0o600,
        }
        second = SqliteStore(path, clock)
        with pytest.raises(StoreInUseError, match="in use by another Tidings process"):
            await second.open()
    finally:
        await first.close()
    again = SqliteStore(path, clock)
    await again.open()  # the lock goes with the store that held it
    await again.close()
