"""Acknowledging a notification: who, when and the note, its waiting channels called off, and repeats of its fingerprint held."""

from __future__ import annotations

import sqlite3

from gateway import lifecycle, statuses
from gateway.store.records import AcknowledgeRequest
from gateway.store.sqlite.base import StoreBase
from gateway.store.sqlite.changes import Changes
from gateway.store.stored import Acknowledgement


class AcknowledgementStore(StoreBase):
    """Acknowledgements of notifications, once each."""

    async def acknowledge(self, request: AcknowledgeRequest) -> tuple[Acknowledgement, bool] | None:
        """Record the acknowledgement, skip waiting deliveries and hold repeats, at once; None if the tenant has no such notification in the mode.

        The second return value says whether this call recorded it: a notification acknowledged
        before keeps its first acknowledgement, and nothing is written again.
        """
        now = self.clock.now()

        def job(conn: sqlite3.Connection) -> tuple[Acknowledgement, bool] | None:
            row = conn.execute(
                "SELECT strategy, route, fingerprint, acknowledged_by, acknowledged_at, acknowledged_note FROM notifications "
                "WHERE id = ? AND tenant = ? AND mode = ?",
                (request.notification_id, request.tenant, request.mode),
            ).fetchone()
            if row is None:
                return None
            strategy, route, fingerprint, by, at, note = row
            if at is not None:
                return Acknowledgement(by, at, note), False
            conn.execute(
                "UPDATE notifications SET acknowledged_by = ?, acknowledged_at = ?, acknowledged_note = ?, updated_at = ? WHERE id = ?",
                (request.by, now, request.note, now, request.notification_id),
            )
            _call_off_waiting(conn, request, strategy, now)
            if route is not None and fingerprint is not None and request.repeat_after is not None:
                conn.execute(
                    "INSERT OR REPLACE INTO repeat_holds (tenant, mode, route, fingerprint, until, notification_id) VALUES (?, ?, ?, ?, ?, ?)",
                    (request.tenant, request.mode, route, fingerprint, now + request.repeat_after, request.notification_id),
                )
            return Acknowledgement(request.by, now, request.note), True

        found: tuple[Acknowledgement, bool] | None = await self._write(job)
        return found


def _call_off_waiting(conn: sqlite3.Connection, request: AcknowledgeRequest, strategy: str, now: float) -> None:
    """The acknowledgement's line of history, and each delivery still waiting its fallback turn skipped, as the lifecycle says."""
    changes = Changes()
    entry = lifecycle.acknowledgement_entry(request.by, request.note)
    changes.note(request.tenant, request.notification_id, None, now, request.actor, entry)
    waiting = conn.execute(
        "SELECT id, status FROM deliveries WHERE notification_id = ? AND status = ? ORDER BY position", (request.notification_id, statuses.WAITING)
    ).fetchall()
    for delivery_id, status in waiting:
        transition = lifecycle.step(lifecycle.Delivery(status), lifecycle.Acknowledged(request.by))
        conn.execute(
            "UPDATE deliveries SET status = ?, updated_at = ? WHERE id = ? AND status = ?", (transition.status, now, delivery_id, statuses.WAITING)
        )
        changes.apply(transition, request.tenant, request.notification_id, delivery_id, now, request.actor, strategy=strategy)
    changes.flush(conn, now)
