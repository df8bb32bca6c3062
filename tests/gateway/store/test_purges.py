"""Retention in the store: a batch purges only what is finished and no longer needed, along indexes, and pages go back to the disk."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from gateway.store import AttemptResult, NewEvent, NewNotification, NotificationFilter, SqliteStore, StoredEvent, WebhookResult, WebhookTarget
from gateway.store.migrations import migrate
from gateway.store.sqlite import retention
from tests.gateway.store.test_sqlite import notification

DAY = 86400.0


@contextmanager
def database(store: SqliteStore) -> Iterator[sqlite3.Connection]:
    """A read-only look at the store's file beside the running store."""
    with closing(sqlite3.connect(f"file:{store.path}?mode=ro", uri=True)) as conn:
        yield conn


def count(store: SqliteStore, sql: str, *params: Any) -> int:
    with database(store) as conn:
        return int(conn.execute(sql, params).fetchone()[0])


async def sent(store: SqliteStore, *notifications: NewNotification) -> None:
    """Accept the notifications, claim their deliveries and record each sent: finished, with an attempt and history."""
    await store.accept(list(notifications), tenant="acme", idempotency=None, status=202, body=b"{}")
    claimed = await store.claim_due("sms", limit=len(notifications), owner="w", lease_seconds=60)
    await store.record_attempts(
        [AttemptResult(c.id, c.attempt, "memory", 0.0, 0.0, "sent", "sent", provider_message_id=f"m-{c.id}") for c in claimed]
    )


async def fan_out_everything(store: SqliteStore, endpoint: str | None = None) -> list[StoredEvent]:
    """Move the fan-out cursor past every event, with a webhook delivery of each to ``endpoint`` if one is given."""
    events = await store.events_to_fan_out(limit=10_000)
    targets = [WebhookTarget(event, event.tenant, endpoint) for event in events if event.tenant] if endpoint else []
    await store.fan_out(targets, max(event.seq for event in events))
    return events


async def test_a_finished_old_notification_goes_with_its_deliveries_attempts_and_history(fresh_store: SqliteStore, clock: Any) -> None:
    old, young = notification(), notification()
    await sent(fresh_store, old)
    clock.advance(2 * DAY)
    await sent(fresh_store, young)
    await fan_out_everything(fresh_store)

    batch = await fresh_store.purge_notifications("acme", clock.now() - DAY, limit=100)

    assert (batch.purged, batch.resume_after) == (1, None)
    assert await fresh_store.get_notification("acme", old.id) is None
    assert await fresh_store.get_notification("acme", young.id) is not None
    for table in ("deliveries", "history"):
        assert count(fresh_store, f"SELECT count(*) FROM {table} WHERE notification_id = ?", old.id) == 0, table
        assert count(fresh_store, f"SELECT count(*) FROM {table} WHERE notification_id = ?", young.id) > 0, table


async def test_only_the_tenant_named_is_purged(fresh_store: SqliteStore, clock: Any) -> None:
    await sent(fresh_store, notification())
    await fan_out_everything(fresh_store)
    clock.advance(2 * DAY)
    assert (await fresh_store.purge_notifications("other", clock.now() - DAY, limit=100)).purged == 0
    assert count(fresh_store, "SELECT count(*) FROM notifications") == 1


async def test_a_notification_on_its_way_stays_however_old(fresh_store: SqliteStore, clock: Any) -> None:
    sending, finished = notification(), notification()
    await fresh_store.accept([sending], tenant="acme", idempotency=None, status=202, body=b"{}")
    await fresh_store.claim_due("sms", limit=1, owner="w", lease_seconds=60)  # out to a provider, no outcome yet
    await sent(fresh_store, finished)
    await fan_out_everything(fresh_store)
    clock.advance(2 * DAY)
    assert (await fresh_store.purge_notifications("acme", clock.now() - DAY, limit=100)).purged == 1
    assert await fresh_store.get_notification("acme", sending.id) is not None
    assert await fresh_store.get_notification("acme", finished.id) is None


async def test_a_batch_goes_on_past_notifications_that_must_stay(fresh_store: SqliteStore, clock: Any) -> None:
    """Held notifications at the front do not stop the purge behind them, nor are they looked at again in the round."""
    held = replace(notification(), send_at=clock.now() + 10 * DAY)  # scheduled: queued, not due
    await fresh_store.accept([held], tenant="acme", idempotency=None, status=202, body=b"{}")
    later = [notification() for _ in range(3)]
    await sent(fresh_store, *later)
    await fan_out_everything(fresh_store)
    clock.advance(2 * DAY)
    before = clock.now() - DAY

    first = await fresh_store.purge_notifications("acme", before, limit=2)
    assert (first.purged, first.resume_after) == (1, later[0].id)  # looked at the held one and the next
    second = await fresh_store.purge_notifications("acme", before, limit=2, after=first.resume_after)
    assert (second.purged, second.resume_after) == (2, later[2].id)
    third = await fresh_store.purge_notifications("acme", before, limit=2, after=second.resume_after)
    assert (third.purged, third.resume_after) == (0, None)
    assert [row.id for row in (await fresh_store.list_notifications("acme", NotificationFilter(), limit=10, cursor=None)).items] == [held.id]


async def test_a_notification_changed_since_the_cutoff_stays_its_retention_from_then(fresh_store: SqliteStore, clock: Any) -> None:
    """Scheduled long ahead, sent yesterday: kept a full retention after it went, though made long before."""
    n = replace(notification(), send_at=clock.now() + 3 * DAY)
    await fresh_store.accept([n], tenant="acme", idempotency=None, status=202, body=b"{}")
    clock.advance(3 * DAY)
    [claimed] = await fresh_store.claim_due("sms", limit=10, owner="w", lease_seconds=60)
    await fresh_store.record_attempts([AttemptResult(claimed.id, 1, "memory", 0.0, 0.0, "sent", "sent", provider_message_id="m-1")])
    await fan_out_everything(fresh_store)
    clock.advance(DAY / 2)
    assert (await fresh_store.purge_notifications("acme", clock.now() - DAY, limit=100)).purged == 0
    clock.advance(DAY)
    assert (await fresh_store.purge_notifications("acme", clock.now() - DAY, limit=100)).purged == 1


async def test_events_not_fanned_out_yet_or_pending_to_an_endpoint_keep_their_notification(fresh_store: SqliteStore, clock: Any) -> None:
    n = notification()
    await sent(fresh_store, n)
    clock.advance(2 * DAY)
    before = clock.now() - DAY
    assert (await fresh_store.purge_notifications("acme", before, limit=100)).purged == 0, "its events are not fanned out"

    await fan_out_everything(fresh_store, endpoint="main")
    assert (await fresh_store.purge_notifications("acme", before, limit=100)).purged == 0, "its webhook deliveries are pending"

    pending = (await fresh_store.list_webhook_deliveries("acme")).items
    await fresh_store.record_webhooks([webhook_result(item.id, "dead") for item in pending])
    assert (await fresh_store.purge_notifications("acme", before, limit=100)).purged == 1
    assert count(fresh_store, "SELECT count(*) FROM webhook_deliveries") == 0, "its dead webhook deliveries went with it"


def webhook_result(delivery_id: str, status: str) -> WebhookResult:
    return WebhookResult(id=delivery_id, tenant="acme", endpoint="main", status=status, last_status=500, last_error="500")


async def test_history_lines_about_no_notification_go_by_their_age_once_their_events_are_done(fresh_store: SqliteStore, clock: Any) -> None:
    await fresh_store.add_opt_out("acme", "sms", "+14155550100", "api")
    await fresh_store.add_opt_out("other", "sms", "+14155550100", "api")
    clock.advance(2 * DAY)
    await fresh_store.add_opt_out("acme", "sms", "+14155550101", "api")
    before = clock.now() - DAY
    lines = "SELECT count(*) FROM history WHERE tenant = ? AND notification_id IS NULL"
    assert await fresh_store.purge_history_lines("acme", before, limit=100) == 0, "not fanned out yet"

    await fan_out_everything(fresh_store, endpoint="main")
    assert await fresh_store.purge_history_lines("acme", before, limit=100) == 0, "pending to an endpoint"

    await fresh_store.record_webhooks([webhook_result(item.id, "succeeded") for item in (await fresh_store.list_webhook_deliveries("acme")).items])
    assert await fresh_store.purge_history_lines("acme", before, limit=100) == 1
    assert count(fresh_store, lines, "acme") == 1, "the young opt-out's line stays"
    assert count(fresh_store, lines, "other") == 1, "another tenant's line stays"
    assert count(fresh_store, "SELECT count(*) FROM opt_outs") == 3, "opt-outs themselves are kept"
    assert count(fresh_store, "SELECT count(*) FROM webhook_deliveries WHERE tenant = 'acme'") == 1, "the old line's went with it"


async def test_lines_of_no_tenant_are_purged_by_age(fresh_store: SqliteStore, clock: Any) -> None:
    await fresh_store.record_outcomes([], [], [NewEvent("provider.circuit_opened", "memory", clock.now(), {}, None)])
    await fan_out_everything(fresh_store)
    clock.advance(2 * DAY)
    assert await fresh_store.purge_history_lines(None, clock.now() - 3 * DAY, limit=100) == 0
    assert await fresh_store.purge_history_lines(None, clock.now() - DAY, limit=100) == 1
    assert count(fresh_store, "SELECT count(*) FROM history") == 0


def plans(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> list[str]:
    return [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params)]


@pytest.mark.parametrize(
    ("sql", "params"),
    [
        (retention.NOTIFICATION_CANDIDATES, (0, 0, 0, "acme", "", "ntf_Z", 500)),
        *((statement.format("?, ?"), ("a", "b")) for statement in retention.PURGE_NOTIFICATIONS),
        (retention.OLD_LINES.format(tenant="h.tenant = ?"), ("acme", 0, 0, 500)),
        (retention.OLD_LINES.format(tenant="h.tenant IS NULL"), (0, 0, 500)),
        *((statement.format("?, ?"), (1, 2)) for statement in retention.PURGE_LINES),
    ],
)
def test_every_purge_statement_finds_its_rows_through_an_index(tmp_path: Path, sql: str, params: tuple[Any, ...]) -> None:
    with closing(sqlite3.connect(tmp_path / "plan.sqlite3")) as conn:
        migrate(conn)
        found = plans(conn, sql, params)
    assert found and not [step for step in found if step.startswith("SCAN")], found


async def test_reclaiming_space_gives_the_pages_of_purged_rows_back(fresh_store: SqliteStore, clock: Any) -> None:
    await sent(fresh_store, *[notification() for _ in range(300)])
    await fan_out_everything(fresh_store)
    clock.advance(2 * DAY)
    pages_before = count(fresh_store, "PRAGMA page_count")
    while (await fresh_store.purge_notifications("acme", clock.now() - DAY, limit=100)).resume_after:
        pass
    assert count(fresh_store, "PRAGMA freelist_count") > 0
    assert await fresh_store.reclaim_space(pages=10) == 10
    while await fresh_store.reclaim_space(pages=10) == 10:
        pass
    assert count(fresh_store, "PRAGMA freelist_count") == 0
    assert count(fresh_store, "PRAGMA page_count") < pages_before / 2


async def test_a_new_database_reclaims_pages_incrementally(fresh_store: SqliteStore) -> None:
    assert count(fresh_store, "PRAGMA auto_vacuum") == 2  # incremental


async def test_a_database_made_without_auto_vacuum_is_converted_once_when_opened(
    tmp_path: Path, clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "old.sqlite3"
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:  # as an older Tidings made it
        conn.execute("PRAGMA journal_mode=WAL")
        migrate(conn)
        conn.execute("INSERT INTO opt_outs (tenant, channel, address, since, source) VALUES ('acme', 'sms', '+14155550100', 0, 'api')")
        assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 0

    caplog.set_level(logging.INFO, logger="gateway.store.writer")
    store = SqliteStore(path, clock)
    await store.open()
    try:
        assert count(store, "PRAGMA auto_vacuum") == 2
        assert count(store, "SELECT count(*) FROM opt_outs") == 1, "the data survives the conversion"
        assert await store.opted_out("acme", [("sms", "+14155550100")]) == {("sms", "+14155550100")}
    finally:
        await store.close()
    converting = [r for r in caplog.records if "converting the database" in r.getMessage()]
    assert len(converting) == 1

    caplog.clear()
    await store.open()  # once: a converted database is left as it is
    await store.close()
    assert not [r for r in caplog.records if "converting the database" in r.getMessage()]
