"""Claiming business events and due digests: lanes in turn, leases between workers, and queries that read only what they take."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from gateway.store import EventCandidate, EventProcessing, NewBusinessEvent, SqliteStore
from gateway.store.migrations import migrate
from gateway.store.sqlite import business_events


def event(tenant: str, event_id: str, mode: str = "live") -> NewBusinessEvent:
    return NewBusinessEvent(tenant, mode, event_id, "order.shipped", "low", {"event_id": event_id}, f"tdk_{tenant}")


async def keep(store: SqliteStore, *events: NewBusinessEvent) -> None:
    for new in events:
        assert await store.accept_business_event(new)


def nothing_matched(found: Any) -> EventProcessing:
    return EventProcessing(found.seq, found.tenant, found.mode, found.event_id, [EventCandidate(None, None, reason="no_route_matched")])


async def test_claims_go_round_the_lanes_and_go_on_after_the_lane_the_last_one_ended_on(fresh_store: SqliteStore) -> None:
    await keep(fresh_store, *(event("acme", f"a{n}") for n in range(4)), event("beta", "b0"), event("acme", "t0", "test"))
    first = await fresh_store.claim_business_events(limit=2, owner="w", lease_seconds=60)
    assert [e.event_id for e in first] == ["a0", "t0"]
    second = await fresh_store.claim_business_events(limit=2, owner="w2", lease_seconds=60, after=("acme", "test"))
    assert [e.event_id for e in second] == ["b0", "a1"], "beta's turn comes before acme's live lane again"


async def test_another_owner_skips_what_is_claimed_until_the_lease_runs_out_or_it_is_recorded(fresh_store: SqliteStore, clock: Any) -> None:
    await keep(fresh_store, event("acme", "a0"), event("acme", "a1"))
    mine = await fresh_store.claim_business_events(limit=1, owner="w", lease_seconds=60)
    assert [e.event_id for e in mine] == ["a0"]
    assert [e.event_id for e in await fresh_store.claim_business_events(limit=5, owner="x", lease_seconds=60)] == ["a1"]
    assert [e.event_id for e in await fresh_store.claim_business_events(limit=5, owner="w", lease_seconds=60)] == ["a0"], "its own again"
    assert await fresh_store.claim_business_events(limit=5, owner="y", lease_seconds=60) == []
    clock.advance(61)
    assert [e.event_id for e in await fresh_store.claim_business_events(limit=5, owner="y", lease_seconds=60)] == ["a0", "a1"]
    recorded = await fresh_store.record_event_processing([nothing_matched(e) for e in mine])
    assert [r.notified for r in recorded] == [0]
    assert [e.event_id for e in await fresh_store.claim_business_events(limit=5, owner="z", lease_seconds=60)] == []
    clock.advance(61)
    assert [e.event_id for e in await fresh_store.claim_business_events(limit=5, owner="z", lease_seconds=60)] == ["a1"], "a0 is processed"


async def test_an_event_recorded_twice_is_kept_once(fresh_store: SqliteStore) -> None:
    await keep(fresh_store, event("acme", "a0"))
    [found] = await fresh_store.claim_business_events(limit=1, owner="w", lease_seconds=60)
    processing = nothing_matched(found)
    await fresh_store.record_event_processing([processing, processing])
    stored = await fresh_store.get_business_event("acme", "live", "a0")
    assert stored is not None and stored.outcomes is not None and len(stored.outcomes) == 1


def plans(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> list[str]:
    return [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params)]


@pytest.mark.parametrize(
    ("sql", "params", "table"),
    [
        (business_events.PENDING_TENANTS, ("live",), "business_events"),
        (business_events.LANE_PENDING, ("live", "acme", "[]", 100), "business_events"),
        (business_events.OPEN_DIGEST_TENANTS, ("live",), "digests"),
        (business_events.LANE_DUE_DIGESTS, ("live", "acme", 0.0, "[]", 100), "digests"),
    ],
)
def test_claims_find_lanes_and_their_work_through_an_index_without_sorting(tmp_path: Path, sql: str, params: tuple[Any, ...], table: str) -> None:
    with closing(sqlite3.connect(tmp_path / "plan.sqlite3")) as conn:
        migrate(conn)
        conn.executemany(
            "INSERT INTO business_events (tenant, mode, event_id, name, severity, received, key_prefix, received_at) VALUES (?, ?, ?, 'x', 'low', '{}', 'k', 0)",
            [(f"t{n % 50}", "live", f"e{n}") for n in range(2000)],
        )
        conn.execute("ANALYZE")
        found = plans(conn, sql, params)
    assert any(step.startswith("SEARCH") and table in step for step in found), found
    assert not [step for step in found if step.startswith(f"SCAN {table}") or "TEMP B-TREE" in step], found
