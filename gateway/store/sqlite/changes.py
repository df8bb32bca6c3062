"""What a write sets off: lines of history (with the events they are told as), notification roll-ups and fallback moves, gathered per batch."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any, Final

from gateway import lifecycle, statuses
from gateway.store.records import AttemptResult, NewEvent
from gateway.store.sqlite.base import DISPATCHER, FALLBACK, NEVER, dumps, select_in

HISTORY_COLUMNS: Final = (
    "tenant, subject, notification_id, delivery_id, at, actor, action, from_status, to_status, reason, event_type, data, "
    "attempt, provider, started_at, finished_at, outcome, provider_message_id, error, detail, simulated"
)
ATTEMPT_ONLY: Final = "attempt"
"""The action of a line that only records an attempt (one whose result changed nothing): not shown in the timeline."""
NO_ATTEMPT: Final = (None,) * 9
ACCEPTED: Final = "accepted"
FAILED: Final = "failed"


def notification_event(
    tenant: str | None, notification_id: str, delivery_id: str | None, action: str, status: str | None, reason: str | None, *,
    channel: str | None, template_id: str | None, channels: list[str] | None, simulated: bool = False,
) -> dict[str, Any]:
    """The payload of an event that is a notification's own line of history (:meth:`Changes.note` keeps none).

    Accepted: its channels. A delivery's change: its channel, status and reason. The whole
    message failing: its status and why the last channel failed. ``simulated``: the delivery
    (for the whole message, any of its deliveries) went through an instance that reaches no one.
    """
    if action == ACCEPTED:
        own: dict[str, Any] = {"delivery_id": None, "channels": channels, "status": status, "reason": None}
    elif delivery_id is not None:
        own = {"delivery_id": delivery_id, "channel": channel, "status": status, "reason": reason}
    else:
        own = {"status": status, "reason": reason}
    return {"notification_id": notification_id, "tenant": tenant, **own, "template_id": template_id, "simulated": simulated}


def insert_history(conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """Append rows of :data:`HISTORY_COLUMNS`; ``seq`` orders them, per notification and per tenant as overall."""
    if rows:
        conn.executemany(f"INSERT INTO history ({HISTORY_COLUMNS}) VALUES ({', '.join('?' * 21)})", rows)


def attempt_columns(result: AttemptResult, provider: str) -> tuple[Any, ...]:
    """The attempt part of a line of history (``provider`` "" when no instance could be tried; ``simulated`` kept only when true)."""
    return (
        result.attempt, provider, result.started_at, result.finished_at, result.outcome, result.provider_message_id, result.error,
        dumps(result.detail) if result.detail else None, 1 if result.simulated else None,
    )


def event_row(
    event: NewEvent, *, notification_id: str | None = None, delivery_id: str | None = None, actor: str = "gateway"
) -> tuple[Any, ...]:
    """A line of history that is only an event (a reply, an opt-out, a provider's circuit), not a status change.

    With ``notification_id`` it is a line of that notification's timeline too.
    """
    subject = None if event.subject == notification_id else event.subject
    return (
        event.tenant, subject, notification_id, delivery_id, event.at, actor, event.type, None, None, None,
        event.type, dumps(dict(event.data)), *NO_ATTEMPT,
    )


def insert_events(conn: sqlite3.Connection, events: Sequence[NewEvent]) -> None:
    insert_history(conn, [event_row(event) for event in events])


def refresh_notifications(conn: sqlite3.Connection, notification_ids: Iterable[str], now: float, changes: Changes) -> None:
    """Recompute each notification's status from its deliveries'; note ``message.failed`` when it fails as a whole.

    The notification's failure is final only here, after fallbacks: one channel failing while
    another may still get through is not a failed message.
    """
    found: dict[str, list[Any]] = {}
    for row in select_in(
        conn,
        "SELECT d.notification_id, d.status, n.status, n.tenant, d.dead_reason, d.last_error "
        "FROM deliveries d JOIN notifications n ON n.id = d.notification_id WHERE d.notification_id IN ({}) ORDER BY d.position",
        notification_ids,
    ):
        found.setdefault(row[0], []).append(row)
    updates = []
    for notification_id, rows in found.items():
        status = statuses.aggregate(row[1] for row in rows)
        updates.append((status, now, notification_id, status))
        previous, tenant = rows[0][2], rows[0][3]
        if status in statuses.TERMINAL_FAILURES and previous not in statuses.TERMINAL_FAILURES:
            reason = failure_reason(rows)
            changes.note(tenant, notification_id, None, now, DISPATCHER, lifecycle.Entry(FAILED, previous, status, reason, "message.failed"))
    conn.executemany("UPDATE notifications SET status = ?, updated_at = ? WHERE id = ? AND status != ?", updates)


def failure_reason(rows: Sequence[Any]) -> str | None:
    """Why the last channel to fail failed (its dead-letter reason and error), for ``message.failed``."""
    for *_ignored, dead_reason, last_error in reversed(rows):
        if dead_reason or last_error:
            return f"{dead_reason}: {last_error}" if dead_reason and last_error else dead_reason or last_error
    return None


class Changes:
    """Lines of history and affected notifications gathered over a batch, written with one statement each.

    Events ride in the same transaction as the change that causes them, so a receiver is never
    told about a status the database does not hold, and a crash never loses an event.
    """

    def __init__(self) -> None:
        self.history: list[tuple[Any, ...]] = []
        self.touched: set[str] = set()
        self.fallbacks: set[str] = set()  # notifications with strategy "fallback" whose deliveries moved

    def note(
        self, tenant: str, notification_id: str, delivery_id: str | None, at: float, actor: str, entry: lifecycle.Entry,
        attempt: tuple[Any, ...] = NO_ATTEMPT,
    ) -> None:
        """A line of the notification's history, told as ``entry.event`` when it has one (see :func:`notification_event`).

        ``attempt``: the :func:`attempt_columns` of the attempt that made it, if one did.
        """
        self.history.append(
            (tenant, None, notification_id, delivery_id, at, actor, entry.action, entry.from_status, entry.to_status, entry.reason,
             entry.event, None, *attempt)
        )

    def apply(
        self, transition: lifecycle.Transition, tenant: str, notification_id: str, delivery_id: str, at: float, actor: str, *,
        strategy: str, attempt: tuple[Any, ...] = NO_ATTEMPT,
    ) -> None:
        """Note what ``transition`` did to a delivery, and mark its notification to roll up (and move on, with fallback).

        An attempt whose result changed nothing still gets its line, one the timeline does not show.
        """
        if transition.entry is None:
            if attempt is not NO_ATTEMPT:
                self.note(tenant, notification_id, delivery_id, at, actor, lifecycle.Entry(ATTEMPT_ONLY, None, None, None), attempt)
            return
        self.note(tenant, notification_id, delivery_id, at, actor, transition.entry, attempt)
        if transition.settles_notification:
            self.moved(notification_id, strategy)

    def moved(self, notification_id: str, strategy: str) -> None:
        self.touched.add(notification_id)
        if strategy == FALLBACK:
            self.fallbacks.add(notification_id)

    def write_lines(self, conn: sqlite3.Connection) -> None:
        """Write the lines noted so far (later ones, and the roll-up's, follow at :meth:`flush`)."""
        insert_history(conn, self.history)
        self.history = []

    def flush(self, conn: sqlite3.Connection, now: float) -> None:
        settle_fallbacks(conn, self, now)
        refresh_notifications(conn, self.touched, now, self)
        self.write_lines(conn)


def has_fallback(conn: sqlite3.Connection, notification_id: str, position: int, strategy: str) -> bool:
    """Whether a channel after ``position`` is still waiting to be tried."""
    if strategy != FALLBACK:
        return False
    found = conn.execute(
        "SELECT 1 FROM deliveries WHERE notification_id = ? AND position > ? AND status = 'waiting' LIMIT 1",
        (notification_id, position),
    ).fetchone()
    return found is not None


def dead_letter_expired(conn: sqlite3.Connection, rows: Sequence[tuple[str, str, str, str]], now: float, changes: Changes) -> None:
    """Give up on deliveries (id, notification id, tenant, status) whose ``expires_at`` passed, keeping them for replay."""
    if not rows:
        return
    found = {
        row[0]: row[1:]
        for row in select_in(
            conn,
            "SELECT d.id, n.strategy FROM deliveries d JOIN notifications n ON n.id = d.notification_id "
            "WHERE d.id IN ({})",
            (row[0] for row in rows),
        )
    }
    moves = []
    for delivery_id, notification_id, tenant, status in rows:
        transition = lifecycle.step(lifecycle.Delivery(status), lifecycle.Expired())
        if transition.entry is None:
            continue
        (strategy,) = found[delivery_id]
        moves.append((transition.status, transition.dead_reason, lifecycle.EXPIRED_MESSAGE, now, delivery_id))
        changes.apply(transition, tenant, notification_id, delivery_id, now, DISPATCHER, strategy=strategy)
    conn.executemany(
        "UPDATE deliveries SET status = ?, dead_reason = ?, last_error = ?, lease_owner = NULL, lease_until = NULL, updated_at = ? WHERE id = ?",
        moves,
    )


def activate_overdue_fallbacks(conn: sqlite3.Connection, channel: str, now: float, changes: Changes) -> None:
    """Start waiting fallback deliveries of ``channel`` whose channel before them ran out of time."""
    rows = conn.execute(
        "SELECT d.id, d.notification_id, d.tenant, n.fallback_after FROM deliveries d JOIN notifications n ON n.id = d.notification_id "
        "WHERE d.channel = ? AND d.status = 'waiting' AND d.next_attempt_at <= ?",
        (channel, now),
    ).fetchall()
    for delivery_id, notification_id, tenant, fallback_after in rows:
        activate(conn, delivery_id, notification_id, tenant, now, lifecycle.FallbackDue(lifecycle.overdue_reason(fallback_after)), changes)


def activate(
    conn: sqlite3.Connection, delivery_id: str, notification_id: str, tenant: str, now: float, due: lifecycle.FallbackDue, changes: Changes
) -> None:
    transition = lifecycle.step(lifecycle.Delivery(statuses.WAITING), due)
    conn.execute(
        "UPDATE deliveries SET status = ?, next_attempt_at = ?, updated_at = ? WHERE id = ? AND status = 'waiting'",
        (transition.status, now, now, delivery_id),
    )
    changes.apply(transition, tenant, notification_id, delivery_id, now, DISPATCHER, strategy=FALLBACK)
    # The channel after this one now gets its own deadline, counted from now.
    conn.execute(
        "UPDATE deliveries SET next_attempt_at = ? + COALESCE((SELECT fallback_after FROM notifications WHERE id = ?), ?) "
        "WHERE id = (SELECT id FROM deliveries WHERE notification_id = ? AND status = 'waiting' ORDER BY position LIMIT 1)",
        (now, notification_id, NEVER, notification_id),
    )


def settle_fallbacks(conn: sqlite3.Connection, changes: Changes, now: float) -> None:
    """Move fallback notifications on as :func:`gateway.lifecycle.fallback_moves` says: skip what is no longer needed, start the next channel."""
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
        moves = lifecycle.fallback_moves([row[3] for row in deliveries], waits_for_delivery=deliveries[0][4] is not None)
        for index, happening in moves:
            _nid, delivery_id, tenant, status, _after = deliveries[index]
            if isinstance(happening, lifecycle.FallbackDue):
                activate(conn, delivery_id, notification_id, tenant, now, happening, changes)
                continue
            transition = lifecycle.step(lifecycle.Delivery(status), happening)
            skips.append((transition.status, now, delivery_id))
            changes.apply(transition, tenant, notification_id, delivery_id, now, DISPATCHER, strategy=FALLBACK)
    conn.executemany("UPDATE deliveries SET status = ?, updated_at = ? WHERE id = ? AND status = 'waiting'", skips)
    changes.fallbacks.clear()  # activations above need no second pass: the activated channel is now in flight
