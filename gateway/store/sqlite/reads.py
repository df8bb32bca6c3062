"""Reading notifications and events, each read whole inside one snapshot, as typed records."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any, Final

from gateway import ids, statuses
from gateway.store.records import NotificationFilter, Page, StoredEvent
from gateway.store.sqlite.base import StoreBase, loads, select_in
from gateway.store.sqlite.changes import ATTEMPT_ONLY, notification_event
from gateway.store.sqlite.cursors import decode_cursor, encode_cursor
from gateway.store.stored import Acknowledgement, Attempt, Delivery, HistoryEntry, Notification

EVENT_COLUMNS: Final = (  # what event_record reads, from ``history e``: a notification's own event is built from its line and its notification
    "e.seq, e.event_id, e.tenant, e.event_type, e.data, e.at, e.subject, e.notification_id, e.delivery_id, e.action, e.to_status, e.reason, "
    "CASE WHEN e.data IS NULL THEN (SELECT channel FROM deliveries WHERE id = e.delivery_id) END, "
    "CASE WHEN e.data IS NULL THEN (SELECT template_id FROM notifications WHERE id = e.notification_id) END, "
    "CASE WHEN e.data IS NULL AND e.action = 'accepted' THEN (SELECT channels FROM notifications WHERE id = e.notification_id) END, "
    "CASE WHEN e.data IS NULL THEN CASE WHEN e.delivery_id IS NOT NULL THEN (SELECT simulated FROM deliveries WHERE id = e.delivery_id) "
    "ELSE (SELECT MAX(simulated) FROM deliveries WHERE notification_id = e.notification_id) END END"
)


class Reads(StoreBase):
    """Reading notifications and events, each read whole inside one snapshot."""

    async def list_events(self, *, tenant: str | None = None, limit: int = 100) -> list[StoredEvent]:
        """The newest events, for everyone (``tenant`` None: provider-wide ones included) or one tenant."""
        where = " WHERE e.event_type IS NOT NULL" + (" AND (e.tenant = ? OR e.tenant IS NULL)" if tenant is not None else "")
        params: tuple[Any, ...] = (tenant, limit) if tenant is not None else (limit,)
        rows = await self._fetch(f"SELECT {EVENT_COLUMNS} FROM history e{where} ORDER BY e.seq DESC LIMIT ?", params)
        return [event_record(row, self._salt) for row in rows]

    async def get_notification(self, tenant: str, notification_id: str, *, mode: str | None = None) -> Notification | None:
        """A notification with its deliveries, attempts and history; None if not the tenant's.

        All of it from one snapshot: never its own status from before a commit and its
        deliveries' from after.
        """
        return await self._read(lambda conn: read_notification(conn, tenant, notification_id, mode, self._salt))

    async def list_notifications(
        self, tenant: str, where: NotificationFilter, *, limit: int, cursor: str | None
    ) -> Page[Notification]:
        """The tenant's notifications, newest first, ``limit`` at a time."""
        clauses = ["n.tenant = ?"]
        params: list[Any] = [tenant]
        if cursor is not None:
            clauses.append("n.id < ?")
            params.append(decode_cursor(cursor))
        for column, value in (("n.status", where.status), ("n.mode", where.mode)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        delivery = [
            (test, value)
            for test, value in (("d.channel = ?", where.channel), ("d.status = ?", where.delivery_status), ("d.attempts >= ?", where.min_attempts))
            if value is not None
        ]
        if delivery:
            matches = " AND ".join(test for test, _value in delivery)
            clauses.append(f"EXISTS (SELECT 1 FROM deliveries d WHERE d.notification_id = n.id AND {matches})")
            params += [value for _test, value in delivery]
        if where.recipient is not None:
            clauses.append("n.id IN (SELECT notification_id FROM deliveries WHERE tenant = ? AND address = ?)")
            params += [tenant, where.recipient]
        sql = f"SELECT n.* FROM notifications n WHERE {' AND '.join(clauses)} ORDER BY n.id DESC LIMIT ?"

        def read(conn: sqlite3.Connection) -> tuple[list[Notification], bool]:
            rows = conn.execute(sql, (*params, limit + 1)).fetchall()
            deliveries = deliveries_of(conn, [row["id"] for row in rows[:limit]])
            return [notification_record(row, deliveries.get(row["id"], [])) for row in rows[:limit]], len(rows) > limit

        items, more = await self._read(read)
        return Page(items, encode_cursor(items[-1].id) if more else None)


def read_notification(
    conn: sqlite3.Connection, tenant: str, notification_id: str, mode: str | None, salt: bytes
) -> Notification | None:
    row = conn.execute("SELECT * FROM notifications WHERE id = ? AND tenant = ?", (notification_id, tenant)).fetchone()
    if row is None or (mode is not None and row["mode"] != mode):
        return None
    deliveries = conn.execute("SELECT * FROM deliveries WHERE notification_id = ? ORDER BY position", (notification_id,)).fetchall()
    lines = conn.execute("SELECT * FROM history WHERE notification_id = ? ORDER BY seq", (notification_id,)).fetchall()
    attempts: dict[str, list[Attempt]] = {}
    for line in sorted((line for line in lines if line["attempt"] is not None), key=lambda line: (line["started_at"], line["attempt"])):
        attempts.setdefault(line["delivery_id"], []).append(attempt_record(line, salt))
    timeline = [history_entry(line) for line in lines if line["action"] != ATTEMPT_ONLY]
    return notification_record(row, [delivery_record(d, attempts.get(d["id"], [])) for d in deliveries], timeline)


def deliveries_of(conn: sqlite3.Connection, notification_ids: Iterable[str]) -> dict[str, list[Delivery]]:
    """The deliveries of a page's notifications, in channel order, by notification id, in one query."""
    found: dict[str, list[Delivery]] = {}
    for row in select_in(conn, "SELECT * FROM deliveries WHERE notification_id IN ({}) ORDER BY notification_id, position", notification_ids):
        found.setdefault(row["notification_id"], []).append(delivery_record(row))
    return found


def notification_record(row: sqlite3.Row, deliveries: Sequence[Delivery], history: Sequence[HistoryEntry] | None = None) -> Notification:
    return Notification(
        id=row["id"], status=row["status"], mode=row["mode"], priority=row["priority"], strategy=row["strategy"],
        fallback_after=row["fallback_after"], expires_at=row["expires_at"], template_id=row["template_id"],
        recipient=loads(row["recipient"]), channels=loads(row["channels"]), metadata=loads(row["metadata"]) or {},
        idempotency_key=row["idempotency_key"], created_at=row["created_at"], updated_at=row["updated_at"],
        deliveries=deliveries, history=history, contact_id=row["contact_id"], category=row["category"], severity=row["severity"],
        locale=row["locale"], template_version=row["template_version"],
        template_language=row["template_language"], event_id=row["event_id"], route=row["route"],
        acknowledged=Acknowledgement(row["acknowledged_by"], row["acknowledged_at"], row["acknowledged_note"])
        if row["acknowledged_at"] is not None else None,
    )


def delivery_record(row: sqlite3.Row, attempts: Sequence[Attempt] | None = None) -> Delivery:
    # A delivery out of the queue keeps its last next_attempt_at (a waiting one a far-future mark): not a time to show.
    next_attempt_at = row["next_attempt_at"] if row["status"] in statuses.IN_FLIGHT else None
    return Delivery(
        id=row["id"], channel=row["channel"], address=row["address"], status=row["status"], provider=row["provider"],
        provider_message_id=row["provider_message_id"], attempt_count=row["attempts"], next_attempt_at=next_attempt_at,
        last_error=row["last_error"], dead_reason=row["dead_reason"], updated_at=row["updated_at"], content=loads(row["content"]),
        attempts=attempts, skip_reason=row["skip_reason"], simulated=bool(row["simulated"]),
    )


def attempt_record(row: sqlite3.Row, salt: bytes) -> Attempt:
    """The attempt a line of history records (its ``attempt`` set)."""
    return Attempt(
        id=ids.derived_id(ids.ATTEMPT, row["started_at"], row["seq"], salt), number=row["attempt"],
        provider=row["provider"] or None,  # "": no instance could be tried
        started_at=row["started_at"], finished_at=row["finished_at"], outcome=row["outcome"], error=row["error"],
        provider_message_id=row["provider_message_id"], detail=loads(row["detail"]) or {}, simulated=bool(row["simulated"]),
    )


def history_entry(row: sqlite3.Row) -> HistoryEntry:
    return HistoryEntry(
        at=row["at"], actor=row["actor"], action=row["action"], delivery_id=row["delivery_id"],
        from_status=row["from_status"], to_status=row["to_status"], reason=row["reason"],
    )


def event_record(row: Sequence[Any], salt: bytes) -> StoredEvent:
    """An event from the columns :data:`EVENT_COLUMNS` names, in that order."""
    seq, event_id, tenant, type_, data, at, subject, notification_id, delivery_id, action, status, reason, channel, template_id, channels, simulated = row
    if data is None and notification_id is not None:
        payload = notification_event(
            tenant, notification_id, delivery_id, action, status, reason, channel=channel, template_id=template_id, channels=loads(channels),
            simulated=bool(simulated),
        )
    else:
        payload = loads(data) or {}
    return StoredEvent(
        seq=seq, id=event_id or ids.derived_id(ids.EVENT, at, seq, salt), tenant=tenant, type=type_, data=payload, at=at,
        subject=subject or notification_id,
    )
