"""Business events: kept as received (an outbox), processed once, what each route did, dedupe windows, repeats held, digests.

Accepting an event is one insert, unique per (tenant, mode, event id): a repeat changes
nothing. Pending events (and due digests) are claimed a (tenant, mode) lane at a time, in turns
(:mod:`gateway.store.sqlite.turns`), each lane read from its own index, so one lane's flood is
never read to reach another's event; claims are held in memory (:mod:`gateway.store.sqlite.claims`).
Processing commits the notifications a batch of events makes, what every route did for every
recipient and the events' processed marks in one transaction, so an event is processed
exactly once, however often a crash interrupts it. Dedupe windows and repeat holds are
checked and written inside that same transaction, so two events of one fingerprint never both
get through. Digests are rows that collect events per (route, recipient) until due; sending
one commits its notification and its ``sent`` mark together.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

import orjson

from gateway.clock import Clock
from gateway.store.records import (
    DigestResult,
    DueDigest,
    EventCandidate,
    EventFilter,
    EventProcessing,
    EventRecorded,
    NewBusinessEvent,
    NewNotification,
    Page,
)
from gateway.store.sqlite.base import StoreBase, dumps, loads
from gateway.store.sqlite.claims import Claims
from gateway.store.sqlite.cursors import decode_seq_cursor, encode_seq_cursor
from gateway.store.sqlite.outbox import MODES, insert_notifications
from gateway.store.sqlite.quotas import charge_quota
from gateway.store.sqlite.retention import delete_all
from gateway.store.sqlite.turns import Lane, in_turns
from gateway.store.stored import BusinessEvent, EventOutcome

NOTIFIED: Final = "notified"
DIGESTED: Final = "digested"
SUPPRESSED: Final = "suppressed"
DEDUPLICATED: Final = "deduplicated"
ACKNOWLEDGED_REPEAT: Final = "acknowledged_repeat"
DIGEST_FULL: Final = "digest_full"
MAX_DIGEST_EVENTS: Final = 1000
"""Events one digest holds: the one that fills it sends it at once."""

OUTCOME_COLUMNS: Final = (
    "o.route, o.recipient_index, o.result, COALESCE(o.reason, d.reason), COALESCE(o.message, d.message), "
    "COALESCE(o.notification_id, d.notification_id), COALESCE(n.status, dn.status), o.first_event_id, d.due_at, d.status"
)
OUTCOMES: Final = (
    f"SELECT {OUTCOME_COLUMNS} FROM event_outcomes o LEFT JOIN notifications n ON n.id = o.notification_id "
    "LEFT JOIN digests d ON d.id = o.digest_id LEFT JOIN notifications dn ON dn.id = d.notification_id "
    "WHERE o.event_seq = ? ORDER BY o.position"
)
PURGE_EVENTS: Final = ("DELETE FROM event_outcomes WHERE event_seq IN ({})", "DELETE FROM business_events WHERE seq IN ({})")
PURGE_DIGESTS: Final = ("DELETE FROM digest_items WHERE digest_id IN ({})", "DELETE FROM digests WHERE id IN ({})")

# The tenants of one mode with events still to process: one index seek each, however long their queues.
PENDING_TENANTS: Final = (
    "WITH RECURSIVE t(tenant) AS ("
    "SELECT (SELECT MIN(tenant) FROM business_events WHERE mode = ?1 AND processed_at IS NULL) "
    "UNION ALL SELECT (SELECT MIN(tenant) FROM business_events WHERE mode = ?1 AND processed_at IS NULL AND tenant > t.tenant) "
    "FROM t WHERE t.tenant IS NOT NULL) SELECT tenant FROM t WHERE tenant IS NOT NULL"
)
# One lane's pending events, oldest first, but those another worker holds.
LANE_PENDING: Final = (
    "SELECT * FROM business_events WHERE mode = ? AND tenant = ? AND processed_at IS NULL "
    "AND seq NOT IN (SELECT value FROM json_each(?)) ORDER BY seq LIMIT ?"
)
# The tenants of one mode with open digests (due or not), and one lane's due digests, oldest due first.
OPEN_DIGEST_TENANTS: Final = (
    "WITH RECURSIVE t(tenant) AS ("
    "SELECT (SELECT MIN(tenant) FROM digests WHERE mode = ?1 AND status = 'open') "
    "UNION ALL SELECT (SELECT MIN(tenant) FROM digests WHERE mode = ?1 AND status = 'open' AND tenant > t.tenant) "
    "FROM t WHERE t.tenant IS NOT NULL) SELECT tenant FROM t WHERE tenant IS NOT NULL"
)
LANE_DUE_DIGESTS: Final = (
    "SELECT * FROM digests WHERE mode = ? AND tenant = ? AND status = 'open' AND due_at <= ? "
    "AND id NOT IN (SELECT value FROM json_each(?)) ORDER BY due_at, id LIMIT ?"
)


class BusinessEventStore(StoreBase):
    """Business events, their outcomes, dedupe windows, repeat holds and digests."""

    def __init__(self, path: Path, clock: Clock, *, synchronous: str = "FULL") -> None:
        super().__init__(path, clock, synchronous=synchronous)
        self._event_claims = Claims()
        self._digest_claims = Claims()

    async def accept_business_event(self, event: NewBusinessEvent) -> bool:
        """Keep a new event to be processed; False (nothing written) when its id was used in the tenant and mode before."""
        now = self.clock.now()

        def job(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO business_events (tenant, mode, event_id, name, severity, received, key_prefix, key_name, received_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (event.tenant, event.mode, event.event_id, event.name, event.severity, dumps(dict(event.received)),
                 event.key_prefix, event.key_name, now),
            )
            return cursor.rowcount == 1

        accepted: bool = await self._write(job)
        return accepted

    async def claim_business_events(self, *, limit: int, owner: str, lease_seconds: float, after: Lane | None = None) -> list[BusinessEvent]:
        """Up to ``limit`` pending events for ``owner``, a (tenant, mode) lane at a time in turns from after ``after``,
        each lane's oldest first; none another owner holds. They are the owner's for ``lease_seconds`` or until recorded."""
        async with self._event_claims.lock:
            now = self.clock.now()
            others = orjson.dumps(self._event_claims.held_by_others(owner, now)).decode()

            def read(conn: sqlite3.Connection) -> list[sqlite3.Row]:
                lanes = [
                    ((tenant, mode), conn.execute(LANE_PENDING, (mode, tenant, others, limit)))
                    for mode in MODES for (tenant,) in conn.execute(PENDING_TENANTS, (mode,)).fetchall()
                ]
                return in_turns(lanes, after, limit)

            events = [business_event(row) for row in await self._read(read)]
            self._event_claims.take(owner, (event.seq for event in events), now + lease_seconds)
        return events

    async def record_event_processing(self, batch: Sequence[EventProcessing]) -> list[EventRecorded]:
        """Apply dedupe and repeat holds, keep the notifications, outcomes, quota spent and processed mark of every event
        in ``batch`` at once; what was kept for each, in order.

        An event already processed is left as it is (nothing written, no channel to wake).
        """
        now = self.clock.now()

        def job(conn: sqlite3.Connection) -> list[EventRecorded]:
            return [_record_processing(conn, processing, now) for processing in batch]

        recorded: list[EventRecorded] = await self._write(job)
        self._event_claims.drop(processing.seq for processing in batch)
        return recorded

    async def get_business_event(self, tenant: str, mode: str, event_id: str) -> BusinessEvent | None:
        """The tenant's event of that id in ``mode``, with what each route did; None if there is none."""

        def read(conn: sqlite3.Connection) -> BusinessEvent | None:
            row = conn.execute(
                "SELECT * FROM business_events WHERE tenant = ? AND mode = ? AND event_id = ?", (tenant, mode, event_id)
            ).fetchone()
            if row is None:
                return None
            outcomes = [_outcome(found) for found in conn.execute(OUTCOMES, (row["seq"],))]
            return business_event(row, outcomes)

        return await self._read(read)

    async def list_business_events(self, tenant: str, where: EventFilter, *, limit: int, cursor: str | None) -> Page[BusinessEvent]:
        """The tenant's events of ``where.mode`` (of one name, when given), newest first, ``limit`` a page, without outcomes."""
        clauses = ["tenant = ?", "mode = ?"]
        params: list[Any] = [tenant, where.mode]
        if where.event_name is not None:
            clauses.append("name = ?")
            params.append(where.event_name)
        if cursor is not None:
            clauses.append("seq < ?")
            params.append(decode_seq_cursor(cursor))
        rows = await self._fetch(f"SELECT * FROM business_events WHERE {' AND '.join(clauses)} ORDER BY seq DESC LIMIT ?", (*params, limit + 1))
        items = [business_event(row) for row in rows[:limit]]
        return Page(items, encode_seq_cursor(items[-1].seq) if len(rows) > limit else None)

    async def next_digest_due(self) -> float | None:
        """When the next open digest is due; None when none is open."""
        rows = await self._fetch("SELECT MIN(due_at) FROM digests WHERE status = 'open'")
        return rows[0][0] if rows else None

    async def claim_due_digests(self, *, limit: int, owner: str, lease_seconds: float, after: Lane | None = None) -> list[DueDigest]:
        """Up to ``limit`` open digests due by now for ``owner``, a (tenant, mode) lane at a time in turns from after
        ``after``, each lane's oldest due first; none another owner holds. Each with its events' variables in arrival order."""
        async with self._digest_claims.lock:
            now = self.clock.now()
            others = orjson.dumps(self._digest_claims.held_by_others(owner, now)).decode()

            def read(conn: sqlite3.Connection) -> list[DueDigest]:
                lanes = [
                    ((tenant, mode), conn.execute(LANE_DUE_DIGESTS, (mode, tenant, now, others, limit)))
                    for mode in MODES for (tenant,) in conn.execute(OPEN_DIGEST_TENANTS, (mode,)).fetchall()
                ]
                return [_due_digest(conn, row) for row in in_turns(lanes, after, limit)]

            found = await self._read(read)
            self._digest_claims.take(owner, (digest.id for digest in found), now + lease_seconds)
        return found

    async def record_digests(self, results: Sequence[DigestResult]) -> set[str]:
        """Settle due digests: each sent with its notification, or failed with why; the channels to wake. Each settles once."""
        now = self.clock.now()

        def job(conn: sqlite3.Connection) -> set[str]:
            made: list[tuple[NewNotification, str]] = []
            for result in results:
                status = "sent" if result.notification is not None else "failed"
                notification_id = result.notification.id if result.notification is not None else None
                settled = conn.execute(
                    "UPDATE digests SET status = ?, notification_id = ?, reason = ?, message = ?, settled_at = ? WHERE id = ? AND status = 'open' "
                    "RETURNING route",
                    (status, notification_id, result.reason, result.message, now, result.id),
                ).fetchone()
                if settled is not None and result.notification is not None:
                    made.append((result.notification, settled[0]))
                    if result.quota is not None:
                        charge_quota(conn, result.quota)
            insert_notifications(conn, [notification for notification, _ in made], now)
            conn.executemany("UPDATE notifications SET route = ? WHERE id = ?", [(route, n.id) for n, route in made])
            return {delivery.channel for notification, _ in made for delivery in notification.deliveries}

        channels: set[str] = await self._write(job)
        self._digest_claims.drop(result.id for result in results)
        return channels

    async def purge_business_events(self, tenant: str, before: float, *, limit: int) -> int:
        """Forget up to ``limit`` of the tenant's processed events received before ``before``, and digests settled before it; how many went."""

        def job(conn: sqlite3.Connection) -> int:
            seqs = [row[0] for row in conn.execute(
                "SELECT seq FROM business_events WHERE tenant = ? AND received_at < ? AND processed_at IS NOT NULL LIMIT ?",
                (tenant, before, limit),
            )]
            digests = [row[0] for row in conn.execute(
                "SELECT id FROM digests WHERE tenant = ? AND status != 'open' AND settled_at < ? LIMIT ?", (tenant, before, limit)
            )]
            delete_all(conn, PURGE_EVENTS, seqs)
            delete_all(conn, PURGE_DIGESTS, digests)
            return len(seqs) + len(digests)

        purged: int = await self._write(job, background=True)
        return purged

    async def purge_event_windows(self, before: float) -> int:
        """Forget dedupe windows and repeat holds that ended before ``before``; how many went."""

        def job(conn: sqlite3.Connection) -> int:
            windows = conn.execute("DELETE FROM event_dedupe WHERE expires_at < ?", (before,)).rowcount
            return windows + conn.execute("DELETE FROM repeat_holds WHERE until < ?", (before,)).rowcount

        purged: int = await self._write(job, background=True)
        return purged


def _record_processing(conn: sqlite3.Connection, processing: EventProcessing, now: float) -> EventRecorded:
    """One event's processing written (see :meth:`BusinessEventStore.record_event_processing`); nothing if it was processed before."""
    row = conn.execute("SELECT received_at, processed_at FROM business_events WHERE seq = ?", (processing.seq,)).fetchone()
    if row is None or row[1] is not None:
        return EventRecorded(frozenset(), 0)
    received_at = row[0]
    made: list[NewNotification] = []
    outcomes = []
    for position, candidate in enumerate(processing.candidates):
        outcome = _settle(conn, processing, candidate, received_at)
        if outcome[0] == NOTIFIED and candidate.notification is not None:
            made.append(candidate.notification)
        outcomes.append((processing.seq, position, candidate.route, candidate.recipient_index, *outcome))
    insert_notifications(conn, made, now)
    by_id = {c.notification.id: c for c in processing.candidates if c.notification is not None}
    conn.executemany(
        "UPDATE notifications SET event_id = ?, route = ?, fingerprint = ? WHERE id = ?",
        [(processing.event_id, by_id[n.id].route, by_id[n.id].fingerprint, n.id) for n in made],
    )
    conn.executemany(
        "INSERT INTO event_outcomes (event_seq, position, route, recipient_index, result, reason, message, notification_id, "
        "first_event_id, digest_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        outcomes,
    )
    conn.execute("UPDATE business_events SET processed_at = ? WHERE seq = ?", (now, processing.seq))
    if processing.quota is not None and made:
        charge_quota(conn, replace(processing.quota, count=len(made)))
    return EventRecorded(frozenset(d.channel for notification in made for d in notification.deliveries), len(made))


def _due_digest(conn: sqlite3.Connection, row: sqlite3.Row) -> DueDigest:
    """A due digest's row with its events' variables, in the order the events came."""
    items = conn.execute("SELECT event_id, variables FROM digest_items WHERE digest_id = ? ORDER BY event_seq", (row["id"],)).fetchall()
    return DueDigest(
        id=row["id"], tenant=row["tenant"], mode=row["mode"], route=row["route"], recipient=loads(row["recipient"]),
        key_prefix=row["key_prefix"], key_name=row["key_name"], due_at=row["due_at"],
        events=[loads(item[1]) for item in items], event_ids=[item[0] for item in items],
    )


def _settle(conn: sqlite3.Connection, processing: EventProcessing, candidate: EventCandidate, at: float) -> tuple[Any, ...]:
    """(result, reason, message, notification id, first event id, digest id) of one candidate, writing what it starts."""
    if candidate.reason is not None:
        return (SUPPRESSED, candidate.reason, candidate.message, None, None, None)
    key = (processing.tenant, processing.mode, candidate.route, candidate.fingerprint)
    if candidate.fingerprint is not None:
        held = conn.execute(
            "SELECT notification_id FROM repeat_holds WHERE tenant = ? AND mode = ? AND route = ? AND fingerprint = ? AND until > ?", (*key, at)
        ).fetchone()
        if held is not None:
            return (SUPPRESSED, ACKNOWLEDGED_REPEAT, f"acknowledged on notification {held[0]}", None, None, None)
    if candidate.fingerprint is not None and candidate.dedupe_window is not None:
        seen = conn.execute(
            "SELECT first_event_id FROM event_dedupe WHERE tenant = ? AND mode = ? AND route = ? AND fingerprint = ? AND expires_at > ?", (*key, at)
        ).fetchone()
        if seen is not None:
            return (SUPPRESSED, DEDUPLICATED, f"the same fingerprint was seen in event {seen[0]!r}", None, seen[0], None)
        conn.execute(
            "INSERT OR REPLACE INTO event_dedupe (tenant, mode, route, fingerprint, first_event_id, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
            (*key, processing.event_id, at + candidate.dedupe_window),
        )
    if candidate.digest is not None:
        digest_id = _collect(conn, processing, candidate, at)
        if digest_id is None:
            message = f"the digest already holds {MAX_DIGEST_EVENTS} events and goes now; later events start the next one"
            return (SUPPRESSED, DIGEST_FULL, message, None, None, None)
        return (DIGESTED, None, None, None, None, digest_id)
    assert candidate.notification is not None
    return (NOTIFIED, None, None, candidate.notification.id, None, None)


def _collect(conn: sqlite3.Connection, processing: EventProcessing, candidate: EventCandidate, at: float) -> int | None:
    """Add the event to the open digest of its route and recipient, opening one if there is none; the digest's id.

    A digest holds at most :data:`MAX_DIGEST_EVENTS` events: the one that fills it makes it due
    at once, and until it has gone (the sender is woken for it) another event for it is not
    collected (None): what one notification renders, and what the sender holds in memory, stays
    bounded however busy a route is.
    """
    entry = candidate.digest
    assert entry is not None and candidate.route is not None
    owner = (processing.tenant, processing.mode, candidate.route, entry.recipient_key)
    found = conn.execute(
        "SELECT id FROM digests WHERE tenant = ? AND mode = ? AND route = ? AND recipient_key = ? AND status = 'open'", owner
    ).fetchone()
    held = 0
    if found is not None:
        digest_id = int(found[0])
        held = conn.execute("SELECT count(*) FROM digest_items WHERE digest_id = ?", (digest_id,)).fetchone()[0]
        if held >= MAX_DIGEST_EVENTS:
            return None
    else:
        event = conn.execute("SELECT key_prefix, key_name FROM business_events WHERE seq = ?", (processing.seq,)).fetchone()
        digest_id = int(conn.execute(
            "INSERT INTO digests (tenant, mode, route, recipient_key, recipient, key_prefix, key_name, due_at, status, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'open', ?) RETURNING id",
            (*owner, dumps(dict(entry.recipient)), event[0], event[1], entry.due_at, at),
        ).fetchone()[0])
    added = conn.execute(
        "INSERT OR IGNORE INTO digest_items (digest_id, event_seq, event_id, variables) VALUES (?, ?, ?, ?)",
        (digest_id, processing.seq, processing.event_id, dumps(dict(entry.variables))),
    ).rowcount
    if held + added >= MAX_DIGEST_EVENTS:
        conn.execute("UPDATE digests SET due_at = min(due_at, ?) WHERE id = ?", (at, digest_id))
    return digest_id


def business_event(row: sqlite3.Row, outcomes: Sequence[EventOutcome] | None = None) -> BusinessEvent:
    return BusinessEvent(
        seq=row["seq"], tenant=row["tenant"], mode=row["mode"], event_id=row["event_id"], name=row["name"], severity=row["severity"],
        received=loads(row["received"]) or {}, key_prefix=row["key_prefix"], key_name=row["key_name"], received_at=row["received_at"],
        processed_at=row["processed_at"], outcomes=outcomes,
    )


def _outcome(row: Sequence[Any]) -> EventOutcome:
    route, index, result, reason, message, notification_id, status, first_event_id, due_at, digest_status = row
    return EventOutcome(
        route=route, recipient_index=index, result=result, reason=reason, message=message, notification_id=notification_id,
        notification_status=status, first_event_id=first_event_id, digest_due_at=due_at, digest_status=digest_status,
    )
