"""Retention: forgetting a tenant's finished notifications and history lines past its retention, and giving the pages back.

Every statement the purge runs is in this module, so a change of schema is adapted in one place.
A batch is one background write job (a transaction of its own, never shared with sends nor
held across batches; see :mod:`gateway.store.writer`): the caller runs batches until one says
there is nothing left, and sends are written between them.

A notification goes with its deliveries, its lines of history (attempts among them) and the
event webhook deliveries of those lines. It stays while

- a delivery is still on its way: queued (scheduled for later, retrying, held while its tenant is
  suspended), sending, or waiting for its fallback turn;
- one of its events has not been fanned out to the endpoints yet, or has a pending webhook
  delivery (a lane never meets an event it can no longer read);
- it was created or last changed after the cutoff (a message scheduled a month ahead is kept its
  full retention after it went, not purged the hour it is delivered).

History lines about no notification (opt-outs, replies to no message, circuit events) go by
their own time under the same rule for events. Replies and opt-outs themselves are kept.

The SQL is plain (``CASE``, ``NOT EXISTS``, ``IN`` lists) and every lookup rides an index: the
notifications by ``(tenant, id)`` within an id range that the cutoff bounds (ids sort in creation
order), everything hanging off them by notification id, webhook deliveries by their event's
``seq``, and lines about no notification by ``(tenant, at)``. Only :meth:`RetentionStore.reclaim_space` is SQLite's own.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, Final

from gateway import ids, statuses
from gateway.store.records import PurgedBatch
from gateway.store.sqlite.base import StoreBase, chunks

UNFINISHED: Final = ", ".join(f"'{status}'" for status in sorted(statuses.IN_FLIGHT | {statuses.WAITING}))

STILL_NEEDED: Final = (
    "(h.seq > ? OR EXISTS (SELECT 1 FROM webhook_deliveries w WHERE w.event_seq = h.seq AND w.status = 'pending'))"
)
"""A history line ``h`` whose event is still to be fanned out (its seq past the cursor, the parameter) or sent."""

NOTIFICATION_CANDIDATES: Final = (
    "SELECT n.id, CASE WHEN n.created_at < ? AND n.updated_at < ? "
    f"AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.notification_id = n.id AND d.status IN ({UNFINISHED})) "
    f"AND NOT EXISTS (SELECT 1 FROM history h WHERE h.notification_id = n.id AND h.event_type IS NOT NULL AND {STILL_NEEDED}) "
    "THEN 1 ELSE 0 END AS purgeable "
    "FROM notifications n WHERE n.tenant = ? AND n.id > ? AND n.id < ? ORDER BY n.id LIMIT ?"
)
"""The tenant's next notifications made before the cutoff (an id range), oldest first, each with whether it may go."""

PURGE_NOTIFICATIONS: Final = (
    "DELETE FROM webhook_deliveries WHERE event_seq IN "
    "(SELECT h.seq FROM history h WHERE h.notification_id IN ({}) AND h.event_type IS NOT NULL)",
    "DELETE FROM history WHERE notification_id IN ({})",
    "DELETE FROM deliveries WHERE notification_id IN ({})",
    "DELETE FROM notifications WHERE id IN ({})",
)
"""Everything of some notifications, children before parents (the foreign keys), each over an ``IN`` list of their ids."""

OLD_LINES: Final = (
    "SELECT h.seq FROM history h WHERE {tenant} AND h.notification_id IS NULL AND h.at < ? "
    f"AND NOT (h.event_type IS NOT NULL AND {STILL_NEEDED}) ORDER BY h.at LIMIT ?"
)
"""A tenant's oldest history lines about no notification made before the cutoff whose events are no longer needed."""

PURGE_LINES: Final = (
    "DELETE FROM webhook_deliveries WHERE event_seq IN ({})",
    "DELETE FROM history WHERE seq IN ({})",
)

FANNED_OUT: Final = "SELECT last_seq FROM webhook_fanout"


class RetentionStore(StoreBase):
    """Purging by age, a batch a write, and reclaiming the pages purges free."""

    async def purge_notifications(self, tenant: str, before: float, *, limit: int, after: str | None = None) -> PurgedBatch:
        """Purge the tenant's finished notifications made and last changed before ``before``, among its next ``limit``.

        Looks at up to ``limit`` of the tenant's notifications made before ``before``, oldest
        first, starting after the id ``after``; those that may go go, with all that hangs off
        them. The batch says how many went and, unless it reached the end, where to go on.
        """
        bound = ids.first_id_at(ids.NOTIFICATION, before)

        def job(conn: sqlite3.Connection) -> PurgedBatch:
            (fanned_out,) = conn.execute(FANNED_OUT).fetchone()
            rows = conn.execute(NOTIFICATION_CANDIDATES, (before, before, fanned_out, tenant, after or "", bound, limit)).fetchall()
            doomed = [row[0] for row in rows if row[1]]
            delete_all(conn, PURGE_NOTIFICATIONS, doomed)
            return PurgedBatch(len(doomed), rows[-1][0] if len(rows) == limit else None)

        purged: PurgedBatch = await self._write(job, background=True)
        return purged

    async def purge_history_lines(self, tenant: str | None, before: float, *, limit: int) -> int:
        """Purge up to ``limit`` of the tenant's history lines about no notification made before ``before``; how many went.

        ``tenant`` None: the lines of no tenant (written by older versions, shown to every tenant).
        Lines whose event is still to be fanned out or has a pending webhook delivery stay.
        """
        owner = "h.tenant IS NULL" if tenant is None else "h.tenant = ?"
        select = OLD_LINES.format(tenant=owner)

        def job(conn: sqlite3.Connection) -> int:
            (fanned_out,) = conn.execute(FANNED_OUT).fetchone()
            params: tuple[Any, ...] = (before, fanned_out, limit)
            seqs = [row[0] for row in conn.execute(select, params if tenant is None else (tenant, *params))]
            delete_all(conn, PURGE_LINES, seqs)
            return len(seqs)

        purged: int = await self._write(job, background=True)
        return purged

    async def reclaim_space(self, *, pages: int) -> int:
        """Give up to ``pages`` free pages back to the file system (incremental vacuum); how many went.

        Python's sqlite3 steps ``PRAGMA incremental_vacuum(N)`` once, which frees one page, so
        the pragma runs once per page; inside the job's transaction, as any write.
        """

        def job(conn: sqlite3.Connection) -> int:
            (free,) = conn.execute("PRAGMA freelist_count").fetchone()
            for _ in range(min(free, pages)):
                conn.execute("PRAGMA incremental_vacuum(1)")
            (left,) = conn.execute("PRAGMA freelist_count").fetchone()
            return int(free - left)

        freed: int = await self._write(job, background=True)
        return freed


def delete_all(conn: sqlite3.Connection, statements: Sequence[str], keys: Sequence[Any]) -> None:
    """Run each ``DELETE … IN ({})`` over ``keys``, in chunks, statement by statement."""
    for chunk in chunks(keys):
        marks = ", ".join("?" * len(chunk))
        for statement in statements:
            conn.execute(statement.format(marks), tuple(chunk))
