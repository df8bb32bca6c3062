"""The store keeps quota usage with the acceptances that spend it: counts that add up, thresholds decided once on the stored count."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing

from gateway import ids
from gateway.store import IdempotencyClaim, NewDelivery, NewNotification, QuotaCharge, QuotaUsage, SqliteStore, Threshold

THRESHOLDS = (Threshold(0.5, 2), Threshold(1.0, 4))


def notification() -> NewNotification:
    return NewNotification(
        id=ids.new_id(ids.NOTIFICATION), tenant="acme", mode="live", priority="normal", strategy="all", template_id=None,
        recipient={"phone": "+14155550100"}, channels=["sms"],
        deliveries=[NewDelivery(ids.new_id(ids.DELIVERY), "sms", 0, "+14155550100", {"body": "hi"})], created_by="key:test",
    )


def charge(count: int, day: str = "2027-01-15", tokens: float | None = 3.0, mode: str = "live") -> QuotaCharge:
    return QuotaCharge("acme", mode, count, day, 4, THRESHOLDS, tokens, 1_800_000_000.0)


async def accept(store: SqliteStore, quota: QuotaCharge, claim: IdempotencyClaim | None = None) -> bool:
    accepted = await store.accept([notification()], tenant="acme", idempotency=claim, status=202, body=b"{}", quota=quota)
    return not accepted.replayed


async def test_counts_add_up_per_day_and_mode_and_the_rate_level_is_the_last_written(fresh_store: SqliteStore) -> None:
    assert await accept(fresh_store, charge(1, tokens=2.5))
    assert await accept(fresh_store, charge(2, tokens=0.5))
    assert await accept(fresh_store, charge(1, mode="test", tokens=None))
    assert await fresh_store.quota_usage() == [
        QuotaUsage("acme", "live", "2027-01-15", 3, (0.5,), 0.5, 1_800_000_000.0),
        QuotaUsage("acme", "test", "2027-01-15", 1, (), None, 1_800_000_000.0),
    ]
    assert await accept(fresh_store, charge(1, day="2027-01-16"))
    assert (await fresh_store.quota_usage())[0].used == 1, "a new day counts from zero"


async def test_a_replayed_acceptance_spends_nothing(fresh_store: SqliteStore) -> None:
    claim = IdempotencyClaim("k1", "fp1", "live")
    assert await accept(fresh_store, charge(1), claim)
    assert not await accept(fresh_store, charge(1), claim)
    assert [usage.used for usage in await fresh_store.quota_usage()] == [1]


async def test_each_threshold_fires_once_even_when_acceptances_race(fresh_store: SqliteStore) -> None:
    """Two processes each believing the count is theirs to push past a threshold: the store decides, once."""
    await asyncio.gather(*(accept(fresh_store, charge(1)) for _ in range(6)))
    with closing(sqlite3.connect(f"file:{fresh_store.path}?mode=ro", uri=True)) as conn:
        rows = conn.execute(
            "SELECT json_extract(data, '$.threshold'), json_extract(data, '$.used') FROM history "
            "WHERE event_type = 'quota.threshold' ORDER BY seq"
        ).fetchall()
    assert rows == [(0.5, 2), (1.0, 4)]
    assert (await fresh_store.quota_usage())[0].fired == (0.5, 1.0)
