"""One history: a happening is one row, both a line of the timeline and, when tenants are told, the event; older stores migrate into it."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

from gateway import ids
from gateway.store import AttemptResult, NewDelivery, NewReply, ReceivedStatus, SqliteStore
from gateway.store.migrations import MIGRATIONS, migrate
from tests.conftest import FakeClock
from tests.gateway.store.test_sqlite import notification


def store_at_version(path: Path, version: int) -> sqlite3.Connection:
    """A store file as version ``version`` of the schema left it (autocommit: migrate() runs its own transactions)."""
    conn = sqlite3.connect(path, isolation_level=None)
    for number, script in enumerate(MIGRATIONS[:version], start=1):
        conn.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")
    return conn


def history_rows(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT seq, notification_id, action, event_type FROM history ORDER BY seq").fetchall()


async def test_a_two_channel_message_leaves_one_row_per_happening(fresh_store: SqliteStore, tmp_path: Path) -> None:
    """Accepted, sent twice, delivered twice: five rows, each a line of the timeline told as its event (was 7 audit + 5 event rows)."""
    n = replace(
        notification(), channels=["sms", "email"], recipient={"phone": "+14155550100", "email": "a@b.example"},
        deliveries=[
            NewDelivery(ids.new_id(ids.DELIVERY), "sms", 0, "+14155550100", {"body": "hi"}),
            NewDelivery(ids.new_id(ids.DELIVERY), "email", 1, "a@b.example", {"body": "hi"}),
        ],
    )
    await fresh_store.accept([n], tenant="acme", idempotency=None, status=202, body=b"{}")
    claimed = [*await fresh_store.claim_due("sms", limit=5, owner="w", lease_seconds=60), *await fresh_store.claim_due("email", limit=5, owner="w", lease_seconds=60)]
    await fresh_store.record_attempts(
        [AttemptResult(c.id, 1, "memory", 0.0, 0.0, "sent", "sent", provider_message_id=f"m-{c.channel}") for c in claimed]
    )
    await fresh_store.apply_statuses([ReceivedStatus("memory", "m-sms", "delivered"), ReceivedStatus("memory", "m-email", "delivered")])

    rows = history_rows(tmp_path / "store.sqlite3")
    assert [(action, event) for _seq, _n, action, event in rows] == [
        ("accepted", "message.queued"), ("sent", "message.sent"), ("sent", "message.sent"),
        ("receipt", "message.delivered"), ("receipt", "message.delivered"),
    ]
    found = await fresh_store.get_notification("acme", n.id)
    assert found is not None
    assert found.history is not None
    assert [line.action for line in found.history] == ["accepted", "sent", "sent", "receipt", "receipt"]
    assert [e.seq for e in reversed(await fresh_store.list_events(tenant="acme"))] == [row[0] for row in rows]


async def test_a_reply_is_on_the_timeline_of_the_message_it_answers(fresh_store: SqliteStore) -> None:
    n = notification()
    await fresh_store.accept([n], tenant="acme", idempotency=None, status=202, body=b"{}")
    [claimed] = await fresh_store.claim_due("sms", limit=5, owner="w", lease_seconds=60)
    await fresh_store.record_attempts([AttemptResult(claimed.id, 1, "memory", 0.0, 0.0, "sent", "sent", provider_message_id="m-1")])
    reply = NewReply(
        request_id=None, provider="memory", tenants=("acme",), channel="sms", sender="+14155550100", body="thanks",
        received_at=5.0, provider_message_id="r-1", in_reply_to="m-1",
    )
    await fresh_store.record_inbound((), [reply])
    found = await fresh_store.get_notification("acme", n.id)
    assert found is not None
    assert found.history is not None
    [line] = [line for line in found.history if line.action == "message.replied"]
    assert (line.actor, line.delivery_id) == ("provider:memory", claimed.id)


def test_a_store_from_before_the_history_keeps_its_events_and_timelines(tmp_path: Path) -> None:
    """Events keep their seq and id (webhook deliveries point at them); the audit trail follows, without its claims."""
    path = tmp_path / "v7.sqlite3"
    conn = store_at_version(path, 7)
    conn.executemany(
        "INSERT INTO events (seq, id, tenant, type, subject, data, at) VALUES (?, ?, 'acme', ?, 'ntf_1', '{}', ?)",
        [(1, "evt_a", "message.queued", 1.0), (2, "evt_b", "message.sent", 2.0)],
    )
    conn.executemany(
        "INSERT INTO audit_events (tenant, notification_id, delivery_id, at, actor, action, from_status, to_status, reason) "
        "VALUES ('acme', 'ntf_1', ?, ?, ?, ?, ?, ?, NULL)",
        [(None, 1.0, "key:k", "accepted", None, "queued"), ("dlv_1", 1.5, "dispatcher", "claimed", "queued", "sending"),
         ("dlv_1", 2.0, "provider:memory", "sent", "sending", "sent")],
    )
    conn.execute(
        "INSERT INTO webhook_deliveries (id, event_seq, event_id, tenant, endpoint, status, next_attempt_at, created_at, updated_at) "
        "VALUES ('whd_1', 2, 'evt_b', 'acme', 'main', 'pending', 0, 0, 0)"
    )
    assert migrate(conn) == len(MIGRATIONS)
    events = conn.execute("SELECT seq, event_id, event_type FROM history WHERE event_type IS NOT NULL ORDER BY seq").fetchall()
    assert events == [(1, "evt_a", "message.queued"), (2, "evt_b", "message.sent")]
    timeline = conn.execute("SELECT action, to_status FROM history WHERE notification_id = 'ntf_1' ORDER BY seq").fetchall()
    assert timeline == [("accepted", "queued"), ("sent", "sent")]
    joined = conn.execute("SELECT e.event_id FROM webhook_deliveries w JOIN history e ON e.seq = w.event_seq").fetchall()
    assert joined == [("evt_b",)]
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert not tables & {"events", "audit_events"}
    conn.close()


async def test_the_migrated_store_opens_and_fans_out_after_its_last_event(tmp_path: Path) -> None:
    path = tmp_path / "v7.sqlite3"
    conn = store_at_version(path, 7)
    conn.execute("INSERT INTO events (seq, id, tenant, type, subject, data, at) VALUES (7, 'evt_old', 'acme', 'message.sent', 'ntf_1', '{}', 1)")
    conn.execute("UPDATE webhook_fanout SET last_seq = 7")
    conn.close()
    store = SqliteStore(path, FakeClock(100.0))
    await store.open()
    try:
        assert await store.events_to_fan_out(limit=10) == []  # fanned out before the upgrade: not sent twice
        n = notification()
        await store.accept([n], tenant="acme", idempotency=None, status=202, body=b"{}")
        [queued] = await store.events_to_fan_out(limit=10)
        assert (queued.type, queued.seq > 7) == ("message.queued", True)
    finally:
        await store.close()


def test_a_store_from_before_v13_keeps_its_attempts_and_event_ids(tmp_path: Path) -> None:
    """Attempts become lines of history (not on the timeline); stored event ids and payloads stay as they were."""
    path = tmp_path / "v12.sqlite3"
    conn = store_at_version(path, 12)
    conn.execute(
        "INSERT INTO notifications (id, tenant, status, mode, priority, strategy, recipient, channels, created_by, created_at, updated_at) "
        "VALUES ('ntf_1', 'acme', 'sent', 'live', 'normal', 'all', '{}', '[\"sms\"]', 'key:k', 1, 2)"
    )
    conn.execute(
        "INSERT INTO deliveries (id, notification_id, tenant, channel, position, address, mode, priority_rank, status, content, "
        "next_attempt_at, created_at, updated_at) VALUES ('dlv_1', 'ntf_1', 'acme', 'sms', 0, '+1', 'live', 1, 'sent', '{}', 0, 1, 2)"
    )
    conn.execute(
        "INSERT INTO history (seq, at, tenant, subject, notification_id, delivery_id, actor, action, event_id, event_type, data) "
        "VALUES (5, 2.0, 'acme', 'ntf_1', 'ntf_1', 'dlv_1', 'provider:memory', 'sent', 'evt_b', 'message.sent', '{\"kept\": true}')"
    )
    conn.executemany(
        "INSERT INTO attempts (id, delivery_id, notification_id, number, provider, started_at, finished_at, outcome, provider_message_id, error, detail) "
        "VALUES (?, 'dlv_1', 'ntf_1', ?, 'memory', ?, ?, ?, ?, ?, NULL)",
        [("att_1", 1, 1.0, 1.1, "transient", None, "timed out"), ("att_2", 2, 1.5, 2.0, "sent", "m-1", None)],
    )
    assert migrate(conn) == len(MIGRATIONS)
    conn.close()
    store_rows = sqlite3.connect(path).execute(
        "SELECT seq, action, attempt, provider, outcome, provider_message_id, error, event_id, subject FROM history ORDER BY seq"
    ).fetchall()
    assert store_rows == [
        (5, "sent", None, None, None, None, None, "evt_b", None),
        (6, "attempt", 1, "memory", "transient", None, "timed out", None, None),
        (7, "attempt", 2, "memory", "sent", "m-1", None, None, None),
    ]


async def test_the_ids_a_store_derives_are_the_same_at_every_read(fresh_store: SqliteStore) -> None:
    """Events and attempts keep no id of their own: it is derived from seq, and never changes or repeats."""
    first, second = notification(), notification()
    await fresh_store.accept([first, second], tenant="acme", idempotency=None, status=202, body=b"{}")
    claimed = await fresh_store.claim_due("sms", limit=5, owner="w", lease_seconds=60)
    await fresh_store.record_attempts([AttemptResult(c.id, 1, "memory", 1.0, 1.0, "sent", "sent", provider_message_id=f"m-{c.id}") for c in claimed])
    listed = await fresh_store.list_events(tenant="acme")
    fanned = await fresh_store.events_to_fan_out(limit=10)
    assert {e.seq: e.id for e in listed} == {e.seq: e.id for e in fanned}
    assert len({e.id for e in listed}) == len(listed) == 4
    assert all(ids.has_prefix(e.id, ids.EVENT) for e in listed)
    sent = [e for e in listed if e.type == "message.sent"]
    assert {e.data["delivery_id"] for e in sent} == {c.id for c in claimed}
    assert all(e.data["channel"] == "sms" and e.data["status"] == "sent" and e.subject in (first.id, second.id) for e in sent)
    found = await fresh_store.get_notification("acme", first.id)
    again = await fresh_store.get_notification("acme", first.id)
    assert found is not None and again is not None
    [attempt] = found.deliveries[0].attempts or ()
    assert ids.has_prefix(attempt.id, ids.ATTEMPT)
    assert attempt.id == (again.deliveries[0].attempts or ())[0].id
    assert (attempt.number, attempt.provider, attempt.outcome) == (1, "memory", "sent")


async def test_the_store_tells_when_history_grows_and_a_write_adding_none_does_not_count(tmp_path: Path) -> None:
    """What the event worker waits on: its own bookkeeping (outcomes, the cursor) commits often and adds no event."""
    store = SqliteStore(tmp_path / "store.sqlite3", FakeClock(100.0))
    await store.open()
    try:
        assert store.history_seq == 0
        grown = asyncio.ensure_future(store.wait_for_history(0))
        await store.accept([notification()], tenant="acme", idempotency=None, status=202, body=b"{}")
        await asyncio.wait_for(grown, 5)
        [queued] = await store.events_to_fan_out(limit=10)
        assert store.history_seq == queued.seq
        commits = store.commits
        assert await store.keep_fan_out_cursor(queued.seq) == queued.seq
        assert (store.commits, store.history_seq) == (commits + 1, queued.seq), "a commit, but no new history"
        assert await store.keep_fan_out_cursor(queued.seq - 1) == queued.seq, "the cursor never moves back"
        assert store.commits == commits + 1, "and a write that changes nothing is no commit to wait on"
    finally:
        await store.close()
    reopened = SqliteStore(tmp_path / "store.sqlite3", FakeClock(100.0))
    await reopened.open()
    try:
        assert (reopened.history_seq, await reopened.fan_out_cursor()) == (queued.seq, queued.seq)
    finally:
        await reopened.close()
