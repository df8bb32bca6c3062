"""What a write sets off: history rows (audit and events), notification status roll-ups and fallback moves, gathered per batch."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from gateway import ids, statuses
from gateway.store.records import NewEvent
from gateway.store.sqlite.base import DISPATCHER, FALLBACK, NEVER, dumps, select_in


def insert_events(conn: sqlite3.Connection, events: Sequence[NewEvent]) -> None:
    insert_event_rows(conn, [(ids.new_id(ids.EVENT), e.tenant, e.type, e.subject, dumps(dict(e.data)), e.at) for e in events])


def insert_event_rows(conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """(id, tenant, type, subject, data JSON, at) rows; ``seq`` orders them, per tenant as overall."""
    if rows:
        conn.executemany("INSERT INTO events (id, tenant, type, subject, data, at) VALUES (?, ?, ?, ?, ?, ?)", rows)


def insert_audits(conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    if rows:
        conn.executemany(
            "INSERT INTO audit_events (tenant, notification_id, delivery_id, at, actor, action, from_status, to_status, reason) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )


def refresh_notifications(conn: sqlite3.Connection, notification_ids: Iterable[str], now: float, changes: Changes) -> None:
    """Recompute each notification's status from its deliveries'; note ``message.failed`` when it fails as a whole.

    The notification's failure is final only here, after fallbacks: one channel failing while
    another may still get through is not a failed message.
    """
    found: dict[str, list[Any]] = {}
    for row in select_in(
        conn,
        "SELECT d.notification_id, d.status, n.status, n.tenant, n.template_id, d.dead_reason, d.last_error "
        "FROM deliveries d JOIN notifications n ON n.id = d.notification_id WHERE d.notification_id IN ({}) ORDER BY d.position",
        notification_ids,
    ):
        found.setdefault(row[0], []).append(row)
    updates = []
    for notification_id, rows in found.items():
        status = statuses.aggregate(row[1] for row in rows)
        updates.append((status, now, notification_id, status))
        previous, tenant, template_id = rows[0][2], rows[0][3], rows[0][4]
        if status in statuses.TERMINAL_FAILURES and previous not in statuses.TERMINAL_FAILURES:
            data = {"status": status, "reason": failure_reason(rows), "template_id": template_id}
            changes.event("message.failed", tenant, notification_id, now, data)
    conn.executemany("UPDATE notifications SET status = ?, updated_at = ? WHERE id = ? AND status != ?", updates)


def failure_reason(rows: Sequence[Any]) -> str | None:
    """Why the last channel to fail failed (its dead-letter reason and error), for ``message.failed``."""
    for *_ignored, dead_reason, last_error in reversed(rows):
        if dead_reason or last_error:
            return f"{dead_reason}: {last_error}" if dead_reason and last_error else dead_reason or last_error
    return None


class Changes:
    """Audit rows, event rows and affected notifications gathered over a batch, written with one statement each.

    Events ride in the same transaction as the change that causes them, so a receiver is never
    told about a status the database does not hold, and a crash never loses an event.
    """

    def __init__(self) -> None:
        self.audits: list[tuple[Any, ...]] = []
        self.events: list[tuple[Any, ...]] = []
        self.touched: set[str] = set()
        self.fallbacks: set[str] = set()  # notifications with strategy "fallback" whose deliveries moved

    def event(self, type_: str, tenant: str, notification_id: str, at: float, data: Mapping[str, Any]) -> None:
        """Note a ``message.*`` event about ``notification_id``; ``data`` adds to the common fields."""
        body = {"notification_id": notification_id, "tenant": tenant} | dict(data)
        self.events.append((ids.new_id(ids.EVENT), tenant, type_, notification_id, dumps(body), at))

    def delivery_event(
        self, type_: str, tenant: str, notification_id: str, delivery_id: str, at: float, *,
        channel: str, status: str, reason: str | None, template_id: str | None,
    ) -> None:
        """Note an event about one delivery (sent, delivered, read, dead_lettered)."""
        data = {"delivery_id": delivery_id, "channel": channel, "status": status, "reason": reason, "template_id": template_id}
        self.event(type_, tenant, notification_id, at, data)

    def moved(self, notification_id: str, strategy: str) -> None:
        self.touched.add(notification_id)
        if strategy == FALLBACK:
            self.fallbacks.add(notification_id)

    def flush(self, conn: sqlite3.Connection, now: float) -> None:
        settle_fallbacks(conn, self, now)
        insert_audits(conn, self.audits)
        refresh_notifications(conn, self.touched, now, self)
        insert_event_rows(conn, self.events)


def has_fallback(conn: sqlite3.Connection, notification_id: str, position: int, strategy: str) -> bool:
    """Whether a channel after ``position`` is still waiting to be tried."""
    if strategy != FALLBACK:
        return False
    found = conn.execute(
        "SELECT 1 FROM deliveries WHERE notification_id = ? AND position > ? AND status = 'waiting' LIMIT 1",
        (notification_id, position),
    ).fetchone()
    return found is not None


def dead_letter(
    conn: sqlite3.Connection, rows: Sequence[tuple[str, str, str, str]], reason: str, message: str, now: float, changes: Changes
) -> None:
    """Give up on deliveries (id, notification id, tenant, status) for ``reason``, keeping them for replay."""
    if not rows:
        return
    conn.executemany(
        "UPDATE deliveries SET status = 'dead_lettered', dead_reason = ?, last_error = ?, lease_owner = NULL, "
        "lease_until = NULL, updated_at = ? WHERE id = ?",
        [(reason, message, now, row[0]) for row in rows],
    )
    found = {
        row[0]: row[1:]
        for row in select_in(
            conn,
            "SELECT d.id, n.strategy, d.channel, n.template_id FROM deliveries d JOIN notifications n ON n.id = d.notification_id "
            "WHERE d.id IN ({})",
            (row[0] for row in rows),
        )
    }
    for delivery_id, notification_id, tenant, status in rows:
        strategy, channel, template_id = found.get(delivery_id, ("", "", None))
        changes.audits.append((tenant, notification_id, delivery_id, now, DISPATCHER, "dead_lettered", status, statuses.DEAD_LETTERED, f"{reason}: {message}"))
        changes.delivery_event(
            "message.dead_lettered", tenant, notification_id, delivery_id, now,
            channel=channel, status=statuses.DEAD_LETTERED, reason=f"{reason}: {message}", template_id=template_id,
        )
        changes.moved(notification_id, strategy)


def activate_overdue_fallbacks(conn: sqlite3.Connection, channel: str, now: float, changes: Changes) -> None:
    """Start waiting fallback deliveries of ``channel`` whose channel before them ran out of time."""
    rows = conn.execute(
        "SELECT d.id, d.notification_id, d.tenant, n.fallback_after FROM deliveries d JOIN notifications n ON n.id = d.notification_id "
        "WHERE d.channel = ? AND d.status = 'waiting' AND d.next_attempt_at <= ?",
        (channel, now),
    ).fetchall()
    for delivery_id, notification_id, tenant, fallback_after in rows:
        reason = f"the channel before it was not delivered within {fallback_after:g}s"
        activate(conn, delivery_id, notification_id, tenant, now, reason, changes)


def activate(conn: sqlite3.Connection, delivery_id: str, notification_id: str, tenant: str, now: float, reason: str, changes: Changes) -> None:
    conn.execute(
        "UPDATE deliveries SET status = 'queued', next_attempt_at = ?, updated_at = ? WHERE id = ? AND status = 'waiting'",
        (now, now, delivery_id),
    )
    changes.audits.append((tenant, notification_id, delivery_id, now, DISPATCHER, "fallback", statuses.WAITING, statuses.QUEUED, reason))
    changes.moved(notification_id, FALLBACK)
    # The channel after this one now gets its own deadline, counted from now.
    conn.execute(
        "UPDATE deliveries SET next_attempt_at = ? + COALESCE((SELECT fallback_after FROM notifications WHERE id = ?), ?) "
        "WHERE id = (SELECT id FROM deliveries WHERE notification_id = ? AND status = 'waiting' ORDER BY position LIMIT 1)",
        (now, notification_id, NEVER, notification_id),
    )


def settle_fallbacks(conn: sqlite3.Connection, changes: Changes, now: float) -> None:
    """Move fallback notifications on: skip what is no longer needed, start the next channel after a failure.

    An earlier channel that was delivered (or sent, when no ``fallback_after`` asks to wait for
    delivery) makes the waiting ones unnecessary. When nothing is in flight or sent any more,
    the first waiting channel starts.
    """
    if not changes.fallbacks:
        return
    pending, changes.fallbacks = changes.fallbacks, set()
    rows = select_in(
        conn,
        "SELECT d.notification_id, d.id, d.tenant, d.status, n.fallback_after FROM deliveries d "
        "JOIN notifications n ON n.id = d.notification_id WHERE d.notification_id IN ({}) ORDER BY d.notification_id, d.position",
        pending,
    )
    by_notification: dict[str, list[Any]] = {}
    for row in rows:
        by_notification.setdefault(row[0], []).append(row)
    skips: list[tuple[Any, ...]] = []
    for notification_id, deliveries in by_notification.items():
        found = {row[3] for row in deliveries}
        waiting = [row for row in deliveries if row[3] == statuses.WAITING]
        if not waiting:
            continue
        fallback_after = deliveries[0][4]
        if found & {statuses.DELIVERED, statuses.READ} or (fallback_after is None and statuses.SENT in found):
            for _nid, delivery_id, tenant, _status, _after in waiting:
                skips.append((now, delivery_id))
                changes.audits.append((tenant, notification_id, delivery_id, now, DISPATCHER, "skipped", statuses.WAITING, statuses.SKIPPED, "an earlier channel got through"))
            changes.touched.add(notification_id)
        elif not found & (statuses.IN_FLIGHT | {statuses.SENT}):
            _nid, delivery_id, tenant, _status, _after = waiting[0]
            activate(conn, delivery_id, notification_id, tenant, now, "the channel before it failed", changes)
    conn.executemany("UPDATE deliveries SET status = 'skipped', updated_at = ? WHERE id = ? AND status = 'waiting'", skips)
    changes.fallbacks.clear()  # activations above need no second pass: the activated channel is now in flight
