"""The embedded store: SQLite in WAL mode, one group-commit writer, a separate reader.

Writes (accepts, claims, attempt results, receipts) are functions run by
:class:`~gateway.store.writer.GroupCommitWriter` inside shared transactions; reads go through
an ``aiosqlite`` connection that WAL lets run beside the writer.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import aiosqlite
import orjson

from gateway import ids, statuses
from gateway.clock import Clock
from gateway.store.migrations import migrate
from gateway.store.records import (
    PRIORITY_RANK,
    Acceptance,
    AttemptResult,
    ClaimedDelivery,
    IdempotencyClaim,
    NewNotification,
    NotificationFilter,
    Page,
    ReceivedStatus,
    StoredResponse,
)
from gateway.store.writer import GroupCommitWriter, connect

DISPATCHER: Final = "dispatcher"
_LIVE: Final = "status IN ('queued', 'sending')"


class InvalidCursorError(ValueError):
    """A pagination cursor this store did not hand out."""


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _loads(value: str | bytes | None) -> Any:
    return orjson.loads(value) if value else None


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        decoded = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as err:
        raise InvalidCursorError(cursor) from err
    if not ids.has_prefix(decoded, ids.NOTIFICATION):
        raise InvalidCursorError(cursor)
    return decoded


class SqliteStore:
    """The outbox, idempotency records, attempts and audit trail in one SQLite file."""

    def __init__(self, path: Path, clock: Clock, *, synchronous: str = "FULL") -> None:
        self.path = path
        self.clock = clock
        self._synchronous = synchronous
        self._writer: GroupCommitWriter | None = None
        self._reader: aiosqlite.Connection | None = None
        self._commits = 0
        self._committed = asyncio.Event()

    # --- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = await asyncio.to_thread(self._connect_and_migrate)
        self._writer = GroupCommitWriter(conn, on_commit=self._note_commit)
        self._writer.start()
        self._reader = await aiosqlite.connect(self.path)
        self._reader.row_factory = aiosqlite.Row
        await self._reader.execute("PRAGMA query_only=ON")

    def _connect_and_migrate(self) -> sqlite3.Connection:
        conn = connect(self.path, self._synchronous)
        migrate(conn)
        return conn

    async def close(self) -> None:
        if self._writer is not None:
            await self._writer.stop()
            self._writer = None
        if self._reader is not None:
            await self._reader.close()
            self._reader = None

    @property
    def is_open(self) -> bool:
        return self._writer is not None

    def _note_commit(self) -> None:
        self._commits += 1
        self._committed.set()
        self._committed = asyncio.Event()

    @property
    def commits(self) -> int:
        """How many write transactions have committed since open; see :meth:`wait_for_commit`."""
        return self._commits

    async def wait_for_commit(self, after: int) -> None:
        """Return once more than ``after`` transactions have committed."""
        while self._commits <= after:
            await self._committed.wait()

    async def _write(self, job: Any) -> Any:
        assert self._writer is not None, "store is not open"
        return await self._writer.run(job)

    @property
    def _db(self) -> aiosqlite.Connection:
        assert self._reader is not None, "store is not open"
        return self._reader

    # --- accepting -------------------------------------------------------------------------

    async def find_response(self, tenant: str, key: str) -> StoredResponse | None:
        """What an earlier request with this idempotency key answered, if there was one."""
        async with self._db.execute(
            "SELECT fingerprint, status_code, response FROM idempotency_keys WHERE tenant = ? AND key = ?",
            (tenant, key),
        ) as cursor:
            row = await cursor.fetchone()
        return StoredResponse(row[0], row[1], bytes(row[2])) if row else None

    async def accept(
        self,
        notifications: Sequence[NewNotification],
        *,
        tenant: str,
        idempotency: IdempotencyClaim | None,
        status: int,
        body: bytes,
    ) -> Acceptance:
        """Persist notifications, deliveries, audit events and the idempotency record atomically.

        When the idempotency key was already used, nothing is written and the original
        response comes back (``replayed``), with whether the bodies' fingerprints match.
        """
        now = self.clock.now()

        def job(conn: sqlite3.Connection) -> Acceptance:
            if idempotency is not None:
                row = conn.execute(
                    "SELECT fingerprint, status_code, response FROM idempotency_keys WHERE tenant = ? AND key = ?",
                    (tenant, idempotency.key),
                ).fetchone()
                if row is not None:
                    return Acceptance(row[1], bytes(row[2]), replayed=True, fingerprint_matches=row[0] == idempotency.fingerprint)
            _insert_notifications(conn, notifications, now)
            if idempotency is not None:
                conn.execute(
                    "INSERT INTO idempotency_keys (tenant, key, fingerprint, status_code, response, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (tenant, idempotency.key, idempotency.fingerprint, status, body, now),
                )
            return Acceptance(status, body, replayed=False)

        result: Acceptance = await self._write(job)
        return result

    # --- dispatching -----------------------------------------------------------------------

    async def claim_due(self, channel: str, *, limit: int, owner: str, lease_seconds: float) -> list[ClaimedDelivery]:
        """Reserve up to ``limit`` due deliveries of ``channel`` for ``owner``, highest priority first.

        A delivery whose lease expired (its worker died) is due again and is reclaimed.
        """
        now = self.clock.now()

        def job(conn: sqlite3.Connection) -> list[ClaimedDelivery]:
            rows = conn.execute(
                "SELECT d.id, d.notification_id, d.tenant, d.channel, d.address, d.mode, d.attempts, d.content, "
                "d.status, d.lease_until, n.recipient, n.template_id, n.metadata "
                "FROM deliveries d JOIN notifications n ON n.id = d.notification_id "
                f"WHERE d.channel = ? AND d.{_LIVE} AND d.next_attempt_at <= ? "
                "AND (d.lease_until IS NULL OR d.lease_until <= ?) "
                "ORDER BY d.priority_rank, d.next_attempt_at LIMIT ?",
                (channel, now, now, limit),
            ).fetchall()
            if not rows:
                return []
            conn.executemany(
                "UPDATE deliveries SET status = 'sending', attempts = attempts + 1, lease_owner = ?, "
                "lease_until = ?, updated_at = ? WHERE id = ?",
                [(owner, now + lease_seconds, now, row[0]) for row in rows],
            )
            audits = []
            for row in rows:
                if row[8] == statuses.QUEUED:
                    audits.append((row[2], row[1], row[0], now, DISPATCHER, "claimed", statuses.QUEUED, statuses.SENDING, None))
                elif row[9] is not None:
                    audits.append((row[2], row[1], row[0], now, DISPATCHER, "lease_expired", None, None, "worker lost its lease; reclaimed"))
            _insert_audits(conn, audits)
            _refresh_notifications(conn, {row[1] for row in rows if row[8] == statuses.QUEUED}, now)
            return [
                ClaimedDelivery(
                    id=row[0],
                    notification_id=row[1],
                    tenant=row[2],
                    channel=row[3],
                    address=row[4],
                    mode=row[5],
                    attempt=row[6] + 1,
                    content=orjson.loads(row[7]),
                    recipient=orjson.loads(row[10]),
                    template_id=row[11],
                    metadata=_loads(row[12]) or {},
                    reclaimed=row[8] == statuses.SENDING and row[9] is not None,
                )
                for row in rows
            ]

        claimed: list[ClaimedDelivery] = await self._write(job)
        return claimed

    async def record_attempts(self, results: Sequence[AttemptResult]) -> None:
        """Record attempts and move their deliveries on; apply receipts that were waiting for them."""
        now = self.clock.now()

        def job(conn: sqlite3.Connection) -> None:
            touched: set[str] = set()
            for result in results:
                notification_id = _record_attempt(conn, result, now)
                if notification_id is not None:
                    touched.add(notification_id)
            _refresh_notifications(conn, touched, now)
            if conn.execute("SELECT 1 FROM held_receipts LIMIT 1").fetchone() is None:
                return  # the usual case: no early receipt is waiting, so skip a lookup per result
            for result in results:
                if result.provider_message_id is not None and result.status == statuses.SENT:
                    _apply_held(conn, result.provider, result.provider_message_id, now)

        await self._write(job)

    async def release(self, delivery_ids: Iterable[str], owner: str) -> None:
        """Give back leases without an attempt (shutdown): the deliveries are due again at once."""
        now = self.clock.now()
        params = [(now, now, delivery_id, owner) for delivery_id in delivery_ids]

        def job(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE deliveries SET lease_owner = NULL, lease_until = NULL, next_attempt_at = ?, "
                f"attempts = attempts - 1, updated_at = ? WHERE id = ? AND lease_owner = ? AND {_LIVE}",
                params,
            )

        await self._write(job)

    async def apply_statuses(self, updates: Sequence[ReceivedStatus]) -> None:
        """Reconcile provider receipts: forward-only, duplicates ignored, early ones held."""
        now = self.clock.now()

        def job(conn: sqlite3.Connection) -> None:
            touched: set[str] = set()
            for update in updates:
                notification_id = _apply_status(conn, update, now)
                if notification_id is not None:
                    touched.add(notification_id)
            _refresh_notifications(conn, touched, now)

        await self._write(job)

    # --- reading ---------------------------------------------------------------------------

    async def get_notification(self, tenant: str, notification_id: str) -> dict[str, Any] | None:
        """A notification with its deliveries, attempts and audit trail; None if not the tenant's."""
        db = self._db
        async with db.execute("SELECT * FROM notifications WHERE id = ? AND tenant = ?", (notification_id, tenant)) as cur:
            row = await cur.fetchone()
        if row is None:
            return None
        notification = _notification_dict(row)
        async with db.execute("SELECT * FROM deliveries WHERE notification_id = ? ORDER BY position", (notification_id,)) as cur:
            notification["deliveries"] = [_delivery_dict(r) for r in await cur.fetchall()]
        async with db.execute(
            "SELECT * FROM attempts WHERE notification_id = ? ORDER BY started_at, number", (notification_id,)
        ) as cur:
            attempts = [dict(r) | {"detail": _loads(r["detail"]) or {}} for r in await cur.fetchall()]
        for delivery in notification["deliveries"]:
            delivery["attempt_log"] = [a for a in attempts if a["delivery_id"] == delivery["id"]]
        async with db.execute("SELECT * FROM audit_events WHERE notification_id = ? ORDER BY seq", (notification_id,)) as cur:
            notification["audit"] = [dict(r) for r in await cur.fetchall()]
        return notification

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
        async with self._db.execute(sql, (*params, limit + 1)) as cur:
            rows = await cur.fetchall()
        items = [_notification_dict(row) for row in rows[:limit]]
        await self._attach_delivery_summaries(items)
        next_cursor = encode_cursor(items[-1]["id"]) if len(rows) > limit else None
        return Page(items, next_cursor)

    async def _attach_delivery_summaries(self, items: list[dict[str, Any]]) -> None:
        if not items:
            return
        by_id = {item["id"]: item for item in items}
        for item in items:
            item["deliveries"] = []
        marks = ", ".join("?" * len(by_id))
        async with self._db.execute(
            f"SELECT * FROM deliveries WHERE notification_id IN ({marks}) ORDER BY notification_id, position",
            tuple(by_id),
        ) as cur:
            for row in await cur.fetchall():
                by_id[row["notification_id"]]["deliveries"].append(_delivery_dict(row))


# --- statements run inside the writer thread -----------------------------------------------


def _insert_notifications(conn: sqlite3.Connection, notifications: Sequence[NewNotification], now: float) -> None:
    conn.executemany(
        "INSERT INTO notifications (id, tenant, status, mode, priority, strategy, template_id, recipient, channels, "
        "metadata, idempotency_key, created_by, created_at, updated_at) VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                n.id, n.tenant, n.mode, n.priority, n.strategy, n.template_id, _dumps(n.recipient), _dumps(list(n.channels)),
                _dumps(n.metadata) if n.metadata else None, n.idempotency_key, n.created_by, now, now,
            )
            for n in notifications
        ],
    )
    conn.executemany(
        "INSERT INTO deliveries (id, notification_id, tenant, channel, position, address, mode, priority_rank, status, "
        "content, next_attempt_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?)",
        [
            (
                d.id, n.id, n.tenant, d.channel, d.position, d.address, n.mode, PRIORITY_RANK[n.priority],
                _dumps(d.content), n.send_at or now, now, now,
            )
            for n in notifications
            for d in n.deliveries
        ],
    )
    _insert_audits(
        conn,
        [
            (n.tenant, n.id, None, now, n.created_by, "accepted", None, statuses.QUEUED, f"channels: {', '.join(n.channels)}")
            for n in notifications
        ],
    )


def _insert_audits(conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    if rows:
        conn.executemany(
            "INSERT INTO audit_events (tenant, notification_id, delivery_id, at, actor, action, from_status, to_status, reason) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )


def _refresh_notifications(conn: sqlite3.Connection, notification_ids: Iterable[str], now: float) -> None:
    """Recompute each notification's status from its deliveries'."""
    for notification_id in notification_ids:
        found = conn.execute("SELECT status FROM deliveries WHERE notification_id = ?", (notification_id,)).fetchall()
        status = statuses.aggregate(row[0] for row in found)
        conn.execute(
            "UPDATE notifications SET status = ?, updated_at = ? WHERE id = ? AND status != ?",
            (status, now, notification_id, status),
        )


def _record_attempt(conn: sqlite3.Connection, result: AttemptResult, now: float) -> str | None:
    row = conn.execute("SELECT notification_id, tenant, status FROM deliveries WHERE id = ?", (result.delivery_id,)).fetchone()
    if row is None:
        return None
    notification_id, tenant, current = row
    conn.execute(
        "INSERT INTO attempts (id, delivery_id, notification_id, number, provider, started_at, finished_at, outcome, "
        "provider_message_id, error, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            ids.new_id(ids.ATTEMPT), result.delivery_id, notification_id, result.attempt, result.provider,
            result.started_at, result.finished_at, result.outcome, result.provider_message_id, result.error,
            _dumps(result.detail) if result.detail else None,
        ),
    )
    actor = f"provider:{result.provider}"
    if result.retry_at is not None:
        conn.execute(
            "UPDATE deliveries SET next_attempt_at = ?, lease_owner = NULL, lease_until = NULL, provider = ?, "
            "last_error = ?, updated_at = ? WHERE id = ?",
            (result.retry_at, result.provider, result.error, now, result.delivery_id),
        )
        _insert_audits(conn, [(tenant, notification_id, result.delivery_id, now, actor, "retry_scheduled", None, None, result.error)])
        return None
    if not statuses.can_transition(current, result.status):
        return None
    conn.execute(
        "UPDATE deliveries SET status = ?, provider = ?, provider_message_id = ?, lease_owner = NULL, lease_until = NULL, "
        "last_error = ?, updated_at = ? WHERE id = ?",
        (result.status, result.provider, result.provider_message_id, result.error, now, result.delivery_id),
    )
    action = "sent" if result.status == statuses.SENT else "failed"
    _insert_audits(conn, [(tenant, notification_id, result.delivery_id, now, actor, action, current, result.status, result.error)])
    return str(notification_id)


def _apply_status(conn: sqlite3.Connection, update: ReceivedStatus, now: float) -> str | None:
    row = conn.execute(
        "SELECT id, notification_id, tenant, status FROM deliveries WHERE provider = ? AND provider_message_id = ?",
        (update.provider, update.provider_message_id),
    ).fetchone()
    if row is None:
        conn.execute(
            "INSERT INTO held_receipts (provider, provider_message_id, status, occurred_at, error, detail, received_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (update.provider, update.provider_message_id, update.status, update.occurred_at, update.error,
             _dumps(update.detail) if update.detail else None, now),
        )
        return None
    return _transition(conn, row, update, now)


def _transition(conn: sqlite3.Connection, row: Sequence[Any], update: ReceivedStatus, now: float) -> str | None:
    delivery_id, notification_id, tenant, current = row
    if not statuses.can_transition(current, update.status):
        return None
    conn.execute(
        "UPDATE deliveries SET status = ?, last_error = COALESCE(?, last_error), updated_at = ? WHERE id = ?",
        (update.status, update.error, now, delivery_id),
    )
    reason = update.error or _describe(update.detail)
    _insert_audits(
        conn,
        [(tenant, notification_id, delivery_id, update.occurred_at or now, f"provider:{update.provider}", "receipt", current, update.status, reason)],
    )
    return str(notification_id)


def _describe(detail: Mapping[str, Any]) -> str | None:
    return ", ".join(f"{key}={value}" for key, value in detail.items()) or None


def _apply_held(conn: sqlite3.Connection, provider: str, provider_message_id: str, now: float) -> None:
    held = conn.execute(
        "SELECT seq, status, occurred_at, error, detail FROM held_receipts WHERE provider = ? AND provider_message_id = ? ORDER BY seq",
        (provider, provider_message_id),
    ).fetchall()
    if not held:
        return
    row = conn.execute(
        "SELECT id, notification_id, tenant, status FROM deliveries WHERE provider = ? AND provider_message_id = ?",
        (provider, provider_message_id),
    ).fetchone()
    touched = None
    for seq, status, occurred_at, error, detail in held:
        update = ReceivedStatus(provider, provider_message_id, status, occurred_at, error, _loads(detail) or {})
        touched = _transition(conn, row, update, now) or touched
        row = conn.execute("SELECT id, notification_id, tenant, status FROM deliveries WHERE id = ?", (row[0],)).fetchone()
        conn.execute("DELETE FROM held_receipts WHERE seq = ?", (seq,))
    if touched:
        _refresh_notifications(conn, {touched}, now)


def _notification_dict(row: Mapping[str, Any]) -> dict[str, Any]:
    item = dict(row)
    item["recipient"] = _loads(item["recipient"])
    item["channels"] = _loads(item["channels"])
    item["metadata"] = _loads(item["metadata"]) or {}
    return item


def _delivery_dict(row: Mapping[str, Any]) -> dict[str, Any]:
    item = dict(row)
    item["content"] = _loads(item["content"])
    return item
