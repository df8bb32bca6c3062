"""Reading notifications and events, each read whole inside one snapshot."""

from __future__ import annotations

import sqlite3
from typing import Any

from gateway.store.records import NotificationFilter, Page
from gateway.store.sqlite.base import StoreBase, loads, select_in
from gateway.store.sqlite.cursors import decode_cursor, encode_cursor


class Reads(StoreBase):
    """Reading notifications and events, each read whole inside one snapshot."""

    async def list_events(self, *, tenant: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The newest events, for everyone (``tenant`` None: provider-wide ones included) or one tenant."""
        columns = "seq, event_id AS id, tenant, event_type AS type, subject, data, at"
        where = "event_type IS NOT NULL" + (" AND (tenant = ? OR tenant IS NULL)" if tenant is not None else "")
        params: tuple[Any, ...] = (tenant, limit) if tenant is not None else (limit,)
        rows = await self._fetch(f"SELECT {columns} FROM history WHERE {where} ORDER BY seq DESC LIMIT ?", params)
        return [dict(row) | {"data": loads(row["data"])} for row in rows]

    async def get_notification(self, tenant: str, notification_id: str) -> dict[str, Any] | None:
        """A notification with its deliveries, attempts and history; None if not the tenant's.

        All of it from one snapshot: never its own status from before a commit and its
        deliveries' from after.
        """
        return await self._read(lambda conn: read_notification(conn, tenant, notification_id))

    async def list_notifications(
        self, tenant: str, where: NotificationFilter, *, limit: int, cursor: str | None
    ) -> Page:
        """The tenant's notifications, newest first, ``limit`` at a time."""
        clauses = ["n.tenant = ?"]
        params: list[Any] = [tenant]
        if cursor is not None:
            clauses.append("n.id < ?")
            params.append(decode_cursor(cursor))
        if where.status is not None:
            clauses.append("n.status = ?")
            params.append(where.status)
        if where.channel is not None:
            clauses.append("EXISTS (SELECT 1 FROM deliveries d WHERE d.notification_id = n.id AND d.channel = ?)")
            params.append(where.channel)
        if where.recipient is not None:
            clauses.append("n.id IN (SELECT notification_id FROM deliveries WHERE tenant = ? AND address = ?)")
            params += [tenant, where.recipient]
        sql = f"SELECT n.* FROM notifications n WHERE {' AND '.join(clauses)} ORDER BY n.id DESC LIMIT ?"

        def read(conn: sqlite3.Connection) -> tuple[list[dict[str, Any]], bool]:
            rows = conn.execute(sql, (*params, limit + 1)).fetchall()
            items = [notification_dict(row) for row in rows[:limit]]
            attach_deliveries(conn, items)
            return items, len(rows) > limit

        items, more = await self._read(read)
        return Page(items, encode_cursor(items[-1]["id"]) if more else None)


def read_notification(conn: sqlite3.Connection, tenant: str, notification_id: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT * FROM notifications WHERE id = ? AND tenant = ?", (notification_id, tenant)).fetchone()
    if row is None:
        return None
    notification = notification_dict(row)
    deliveries = conn.execute("SELECT * FROM deliveries WHERE notification_id = ? ORDER BY position", (notification_id,)).fetchall()
    notification["deliveries"] = [delivery_dict(r) for r in deliveries]
    attempts = [
        dict(r) | {"detail": loads(r["detail"]) or {}}
        for r in conn.execute("SELECT * FROM attempts WHERE notification_id = ? ORDER BY started_at, number", (notification_id,))
    ]
    for delivery in notification["deliveries"]:
        delivery["attempt_log"] = [a for a in attempts if a["delivery_id"] == delivery["id"]]
    audit = conn.execute(
        "SELECT at, actor, action, delivery_id, from_status, to_status, reason FROM history WHERE notification_id = ? ORDER BY seq",
        (notification_id,),
    ).fetchall()
    notification["audit"] = [dict(r) for r in audit]
    return notification


def attach_deliveries(conn: sqlite3.Connection, items: list[dict[str, Any]]) -> None:
    """Give each notification of a page its deliveries, in one query."""
    by_id = {item["id"]: item for item in items}
    for item in items:
        item["deliveries"] = []
    for row in select_in(conn, "SELECT * FROM deliveries WHERE notification_id IN ({}) ORDER BY notification_id, position", by_id):
        by_id[row["notification_id"]]["deliveries"].append(delivery_dict(row))


def notification_dict(row: sqlite3.Row) -> dict[str, Any]:
    item = dict(row)
    item["recipient"] = loads(item["recipient"])
    item["channels"] = loads(item["channels"])
    item["metadata"] = loads(item["metadata"]) or {}
    return item


def delivery_dict(row: sqlite3.Row) -> dict[str, Any]:
    item = dict(row)
    item["content"] = loads(item["content"])
    return item
