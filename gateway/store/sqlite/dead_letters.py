"""Dead letters: listing them, and replaying them by id or by filter."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any, Final

from gateway import ids, lifecycle, statuses
from gateway.store.records import DeadLetterFilter, Page, Replayed
from gateway.store.sqlite.base import StoreBase, select_in
from gateway.store.sqlite.changes import Changes
from gateway.store.sqlite.cursors import decode_cursor, encode_cursor
from gateway.store.stored import DeadLetter


class DeadLetters(StoreBase):
    """Listing and replaying dead letters."""

    async def list_dead_letters(self, tenant: str, where: DeadLetterFilter, *, limit: int, cursor: str | None) -> Page[DeadLetter]:
        """The tenant's dead-lettered deliveries, newest delivery first, ``limit`` at a time.

        The partial index ``deliveries_dead`` holds only dead letters, so a tenant with millions
        of delivered messages and a handful of dead ones pays for the handful.
        """
        clauses, params = dead_letter_clauses(tenant, where)
        if cursor is not None:
            clauses.append("d.id < ?")
            params.append(decode_cursor(cursor, ids.DELIVERY))
        sql = f"{DEAD_LETTER_SELECT} WHERE {' AND '.join(clauses)} ORDER BY d.id DESC LIMIT ?"
        rows = await self._fetch(sql, (*params, limit + 1))
        items = [dead_letter_record(row) for row in rows[:limit]]
        return Page(items, encode_cursor(items[-1].delivery_id) if len(rows) > limit else None)

    async def replay(
        self,
        tenant: str,
        *,
        delivery_ids: Sequence[str] | None = None,
        where: DeadLetterFilter | None = None,
        actor: str,
        limit: int = 10_000,
        mode: str | None = None,
    ) -> Replayed:
        """Queue the tenant's dead letters again, by id or all that match ``where`` (oldest first, up to ``limit``).

        A replay is an operator's explicit decision to try again now, so it is the one move a
        delivery makes backwards (``failed → queued``, audited with ``actor``): it is due
        at once, its retry schedule starts over (``attempts`` back to 0; the attempt rows stay as
        history) and its ``expires_at`` is cleared — the deadline it missed is the reason it is
        here, and its dead reason too. Deliveries that are not dead letters, or not the tenant's, are left alone.
        """
        now = self.clock.now()

        def job(conn: sqlite3.Connection) -> Replayed:
            if delivery_ids is not None:
                rows, more = dead_letter_candidates(conn, tenant, delivery_ids, mode), False
            else:
                matching = where or DeadLetterFilter()
                rows, more = matching_dead_letters(conn, tenant, matching if mode is None else replace(matching, mode=mode), limit)
            dead = [row for row in rows if is_dead_letter(row[2], row[4])]
            changes = Changes()
            requeue(conn, tenant, dead, actor, now, changes)
            changes.flush(conn, now)
            refused = [row[0] for row in rows if not is_dead_letter(row[2], row[4])]
            return Replayed([row[0] for row in dead], frozenset(row[3] for row in dead), more, refused)

        replayed: Replayed = await self._write(job)
        return replayed


DEAD_LETTER_SELECT: Final = (
    "SELECT d.id, d.notification_id, d.channel, d.address, d.provider, d.dead_reason, d.last_error, d.attempts, "
    "d.updated_at, n.template_id FROM deliveries d JOIN notifications n ON n.id = d.notification_id"
)


def dead_letter_record(row: sqlite3.Row) -> DeadLetter:
    """A dead letter from the columns :data:`DEAD_LETTER_SELECT` reads; its last update is when it was given up on."""
    return DeadLetter(
        delivery_id=row["id"], notification_id=row["notification_id"], channel=row["channel"], address=row["address"],
        provider=row["provider"], reason=row["dead_reason"], error=row["last_error"], attempt_count=row["attempts"],
        dead_lettered_at=row["updated_at"], template_id=row["template_id"],
    )


DEAD: Final = "d.status = 'failed' AND d.dead_reason IS NOT NULL"
"""A dead letter: a delivery failed for good with a reason it was given up on (the partial index ``deliveries_dead``)."""


def is_dead_letter(status: str, dead_reason: str | None) -> bool:
    """Whether a delivery with this status and dead reason is in the dead-letter queue (see :data:`DEAD`)."""
    return status == statuses.FAILED and dead_reason is not None


def dead_letter_clauses(tenant: str, where: DeadLetterFilter) -> tuple[list[str], list[Any]]:
    """WHERE clauses (and their parameters) for the tenant's dead letters that match ``where``."""
    clauses = ["d.tenant = ?", DEAD]
    params: list[Any] = [tenant]
    for column, value in (("channel", where.channel), ("provider", where.provider), ("dead_reason", where.reason), ("mode", where.mode)):
        if value is not None:
            clauses.append(f"d.{column} = ?")
            params.append(value)
    return clauses, params


def dead_letter_candidates(conn: sqlite3.Connection, tenant: str, delivery_ids: Iterable[str], mode: str | None = None) -> list[Any]:
    """(id, notification id, status, channel, dead reason) of those of ``delivery_ids`` that are the tenant's (and of ``mode``, when given)."""
    rows = select_in(
        conn, "SELECT id, notification_id, status, channel, dead_reason, mode FROM deliveries WHERE tenant = ? AND id IN ({}) ORDER BY id",
        delivery_ids, tenant,
    )
    return [row[:5] for row in rows if mode is None or row[5] == mode]


def matching_dead_letters(conn: sqlite3.Connection, tenant: str, where: DeadLetterFilter, limit: int) -> tuple[list[Any], bool]:
    """The oldest ``limit`` matching dead letters as (id, notification id, status, channel, dead reason), and whether more match."""
    clauses, params = dead_letter_clauses(tenant, where)
    rows = conn.execute(
        f"SELECT d.id, d.notification_id, d.status, d.channel, d.dead_reason FROM deliveries d WHERE {' AND '.join(clauses)} ORDER BY d.id LIMIT ?",
        (*params, limit + 1),
    ).fetchall()
    return rows[:limit], len(rows) > limit


def requeue(conn: sqlite3.Connection, tenant: str, rows: Sequence[Any], actor: str, now: float, changes: Changes) -> None:
    """Put dead letters (id, notification id, status, channel, dead reason) back in the queue as if new, each with its line of history."""
    replayed = [(row, lifecycle.step(lifecycle.Delivery(row[2], dead_letter=row[4] is not None), lifecycle.Replayed(actor))) for row in rows]
    replayed = [(row, transition) for row, transition in replayed if transition.entry is not None]
    conn.executemany(
        "UPDATE deliveries SET status = ?, next_attempt_at = ?, attempts = 0, expires_at = NULL, dead_reason = NULL, "
        "lease_owner = NULL, lease_until = NULL, updated_at = ? WHERE id = ? AND status = 'failed' AND dead_reason IS NOT NULL",
        [(transition.status, now, now, row[0]) for row, transition in replayed],
    )
    for (delivery_id, notification_id, _status, channel, _reason), transition in replayed:
        changes.apply(transition, tenant, notification_id, delivery_id, now, actor, strategy="")
