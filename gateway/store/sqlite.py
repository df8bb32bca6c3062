"""The embedded store: SQLite in WAL mode, one group-commit writer, snapshot readers beside it.

Writes (accepts, claims, attempt results, receipts) are functions run by
:class:`~gateway.store.writer.GroupCommitWriter` inside shared transactions; reads are
functions too, each run whole inside its own read transaction by
:class:`~gateway.store.reader.SnapshotReader`, so every read sees every commit made before it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import sqlite3
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Final, TypeVar

import orjson

from gateway import ids, statuses
from gateway.clock import Clock, isoformat
from gateway.errors import OPTED_OUT
from gateway.store.files import lock_exclusively, prepare_private
from gateway.store.migrations import migrate
from gateway.store.reader import SnapshotReader
from gateway.store.records import (
    PRIORITY_RANK,
    Acceptance,
    AttemptResult,
    ClaimedDelivery,
    ClaimedWebhook,
    DeadLetterFilter,
    IdempotencyClaim,
    InboundRecord,
    NewEvent,
    NewNotification,
    NewOptOut,
    NewReply,
    NotificationFilter,
    Page,
    ReceivedStatus,
    Replayed,
    StoredEvent,
    StoredResponse,
    WebhookEndpointState,
    WebhookResult,
    WebhookTarget,
)
from gateway.store.writer import GroupCommitWriter, connect

T = TypeVar("T")

DISPATCHER: Final = "dispatcher"
FALLBACK: Final = "fallback"
NEVER: Final = 1e15  # next_attempt_at of a waiting fallback with no deadline (year ~33,000)
_LIVE: Final = "status IN ('queued', 'sending')"
PERMANENT_OUTCOME: Final = "permanent"  # AttemptResult.outcome of a send the provider refused for good
OPTED_OUT_EVENT: Final = "recipient.opted_out"
OPTED_IN_EVENT: Final = "recipient.opted_in"
# The delivery statuses tenants hear about one by one; a failure is told once, for the whole message.
_DELIVERY_EVENTS: Final = {
    statuses.SENT: "message.sent",
    statuses.DELIVERED: "message.delivered",
    statuses.READ: "message.read",
    statuses.DEAD_LETTERED: "message.dead_lettered",
}


class InvalidCursorError(ValueError):
    """A pagination cursor this store did not hand out."""


def _dumps(value: Any) -> str:
    # Plugins fill ``detail`` maps; a value JSON has no type for is kept as its text.
    return orjson.dumps(value, default=str).decode()


def is_transient(error: BaseException) -> bool:
    """Whether a failed write may succeed if tried again (busy, locked, disk I/O), not a bad row."""
    return isinstance(error, sqlite3.OperationalError)


def _loads(value: str | bytes | None) -> Any:
    return orjson.loads(value) if value else None


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, prefix: str = ids.NOTIFICATION) -> str:
    """The last id of the page before; ``prefix`` is the kind of id the list is of."""
    try:
        decoded = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as err:
        raise InvalidCursorError(cursor) from err
    if not ids.has_prefix(decoded, prefix):
        raise InvalidCursorError(cursor)
    return decoded


def encode_seq_cursor(seq: int) -> str:
    return encode_text_cursor(f"seq:{seq}")


def decode_seq_cursor(cursor: str) -> int:
    """The ``seq`` a page of a seq-ordered list ended at."""
    text = decode_text_cursor(cursor)
    if not (text.startswith("seq:") and text[4:].isdigit()):
        raise InvalidCursorError(cursor)
    return int(text[4:])


def encode_text_cursor(text: str) -> str:
    return "t" + base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_text_cursor(cursor: str) -> str:
    if not cursor.startswith("t"):
        raise InvalidCursorError(cursor)
    try:
        return base64.urlsafe_b64decode(cursor[1:] + "=" * (-len(cursor[1:]) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as err:
        raise InvalidCursorError(cursor) from err


class SqliteStore:
    """The outbox, idempotency records, attempts and audit trail in one SQLite file."""

    def __init__(self, path: Path, clock: Clock, *, synchronous: str = "FULL") -> None:
        self.path = path
        self.clock = clock
        self._synchronous = synchronous
        self._writer: GroupCommitWriter | None = None
        self._reader: SnapshotReader | None = None
        self._commits = 0
        self._committed = asyncio.Event()
        self._lock: IO[bytes] | None = None

    # --- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the store, private to this user; raise ``StoreInUseError`` if another process has it open."""
        prepare_private(self.path)
        self._lock = lock_exclusively(self.path)
        try:
            conn = await asyncio.to_thread(self._connect_and_migrate)
        except BaseException:
            self._lock.close()
            raise
        self._writer = GroupCommitWriter(conn, on_commit=self._note_commit)
        self._writer.start()
        self._reader = SnapshotReader(self.path)
        self._reader.start()

    def _connect_and_migrate(self) -> sqlite3.Connection:
        conn = connect(self.path, self._synchronous)
        migrate(conn)
        return conn

    async def close(self) -> None:
        if self._writer is not None:
            await self._writer.stop()
            self._writer = None
        if self._reader is not None:
            await self._reader.stop()
            self._reader = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None

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

    async def _read(self, read: Callable[[sqlite3.Connection], T]) -> T:
        assert self._reader is not None, "store is not open"
        return await self._reader.run(read)

    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """The rows of one query, read in a snapshot of its own."""
        return await self._read(lambda conn: conn.execute(sql, params).fetchall())

    # --- accepting -------------------------------------------------------------------------

    async def find_response(self, tenant: str, key: str) -> StoredResponse | None:
        """What an earlier request with this idempotency key answered, if there was one."""
        rows = await self._fetch(
            "SELECT fingerprint, status_code, response FROM idempotency_keys WHERE tenant = ? AND key = ?", (tenant, key)
        )
        return StoredResponse(rows[0][0], rows[0][1], bytes(rows[0][2])) if rows else None

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

    async def claim_due(
        self, channel: str, *, limit: int, owner: str, lease_seconds: float, holding: Collection[str] = ()
    ) -> list[ClaimedDelivery]:
        """Reserve up to ``limit`` due deliveries of ``channel`` for ``owner``, highest priority first.

        A delivery whose lease expired (its worker died) is due again and is reclaimed, but never
        one of ``holding``: those the claimer is still working on, its send over but its outcome
        not recorded yet. Reclaiming one of those would send it a second time.
        """
        now = self.clock.now()
        held = orjson.dumps(sorted(holding)).decode()

        def job(conn: sqlite3.Connection) -> list[ClaimedDelivery]:
            changes = _Changes()
            _activate_overdue_fallbacks(conn, channel, now, changes)
            rows = conn.execute(
                "SELECT d.id, d.notification_id, d.tenant, d.channel, d.address, d.mode, d.attempts, d.content, "
                "d.status, d.lease_until, n.recipient, n.template_id, n.metadata, d.expires_at, d.position, d.provider "
                "FROM deliveries d JOIN notifications n ON n.id = d.notification_id "
                f"WHERE d.channel = ? AND d.{_LIVE} AND d.next_attempt_at <= ? "
                "AND (d.lease_until IS NULL OR d.lease_until <= ?) AND d.id NOT IN (SELECT value FROM json_each(?)) "
                "ORDER BY d.priority_rank, d.next_attempt_at LIMIT ?",
                (channel, now, now, held, limit),
            ).fetchall()
            expired = [row for row in rows if row[13] is not None and row[13] <= now]
            rows = [row for row in rows if row[13] is None or row[13] > now]
            _dead_letter(conn, [(row[0], row[1], row[2], row[8]) for row in expired], statuses.EXPIRED, "expired before it could be sent", now, changes)
            conn.executemany(
                "UPDATE deliveries SET status = 'sending', attempts = attempts + 1, lease_owner = ?, "
                "lease_until = ?, updated_at = ? WHERE id = ?",
                [(owner, now + lease_seconds, now, row[0]) for row in rows],
            )
            for row in rows:
                if row[8] == statuses.QUEUED:
                    changes.audits.append((row[2], row[1], row[0], now, DISPATCHER, "claimed", statuses.QUEUED, statuses.SENDING, None))
                    changes.touched.add(row[1])
                elif row[9] is not None:
                    changes.audits.append((row[2], row[1], row[0], now, DISPATCHER, "lease_expired", None, None, "worker lost its lease; reclaimed"))
            changes.flush(conn, now)
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
                    expires_at=row[13],
                    provider=row[15],
                )
                for row in rows
            ]

        claimed: list[ClaimedDelivery] = await self._write(job)
        return claimed

    async def record_attempts(self, results: Sequence[AttemptResult]) -> None:
        """Record attempts and move their deliveries on; apply receipts that were waiting for them."""
        await self.record_outcomes(results, ())

    async def apply_statuses(self, updates: Sequence[ReceivedStatus]) -> None:
        """Reconcile provider receipts: forward-only, duplicates ignored, early ones held."""
        await self.record_outcomes((), updates)

    async def record_outcomes(
        self, results: Sequence[AttemptResult], receipts: Sequence[ReceivedStatus], events: Sequence[NewEvent] = ()
    ) -> set[str]:
        """Record attempts, then reconcile receipts, then add events, in one transaction.

        A receipt for a message whose send is not recorded yet is held; recording the send (or
        a failed attempt of the delivery the receipt names) later applies it. Returns the
        tenants whose opt-outs changed: a send refused with code ``opted_out`` records one.
        """
        now = self.clock.now()

        def job(conn: sqlite3.Connection) -> set[str]:
            changed = _record_attempts(conn, results, now)
            _apply_statuses(conn, receipts, now)
            _apply_held(conn, results, now)
            _insert_events(conn, events)
            return changed

        changed: set[str] = await self._write(job)
        return changed

    async def list_events(self, *, tenant: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The newest events, for everyone (``tenant`` None: provider-wide ones included) or one tenant."""
        sql = "SELECT * FROM events" + (" WHERE tenant = ? OR tenant IS NULL" if tenant is not None else "") + " ORDER BY seq DESC LIMIT ?"
        params: tuple[Any, ...] = (tenant, limit) if tenant is not None else (limit,)
        return [dict(row) | {"data": _loads(row["data"])} for row in await self._fetch(sql, params)]

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

    # --- reading ---------------------------------------------------------------------------

    async def get_notification(self, tenant: str, notification_id: str) -> dict[str, Any] | None:
        """A notification with its deliveries, attempts and audit trail; None if not the tenant's.

        All of it from one snapshot: never its own status from before a commit and its
        deliveries' from after.
        """
        return await self._read(lambda conn: _read_notification(conn, tenant, notification_id))

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
            items = [_notification_dict(row) for row in rows[:limit]]
            _attach_deliveries(conn, items)
            return items, len(rows) > limit

        items, more = await self._read(read)
        return Page(items, encode_cursor(items[-1]["id"]) if more else None)

    # --- dead letters ----------------------------------------------------------------------

    async def list_dead_letters(self, tenant: str, where: DeadLetterFilter, *, limit: int, cursor: str | None) -> Page:
        """The tenant's dead-lettered deliveries, newest delivery first, ``limit`` at a time.

        The partial index ``deliveries_dead`` holds only dead letters, so a tenant with millions
        of delivered messages and a handful of dead ones pays for the handful.
        """
        clauses, params = _dead_letter_clauses(tenant, where)
        if cursor is not None:
            clauses.append("d.id < ?")
            params.append(decode_cursor(cursor, ids.DELIVERY))
        sql = f"{_DEAD_LETTER_SELECT} WHERE {' AND '.join(clauses)} ORDER BY d.id DESC LIMIT ?"
        rows = await self._fetch(sql, (*params, limit + 1))
        items = [dict(row) for row in rows[:limit]]
        next_cursor = encode_cursor(items[-1]["id"]) if len(rows) > limit else None
        return Page(items, next_cursor)

    async def replay(
        self,
        tenant: str,
        *,
        delivery_ids: Sequence[str] | None = None,
        where: DeadLetterFilter | None = None,
        actor: str,
        limit: int = 10_000,
    ) -> Replayed:
        """Queue the tenant's dead letters again, by id or all that match ``where`` (oldest first, up to ``limit``).

        A replay is an operator's explicit decision to try again now, so it is the one move a
        delivery makes backwards (``dead_lettered → queued``, audited with ``actor``): it is due
        at once, its retry schedule starts over (``attempts`` back to 0; the attempt rows stay as
        history) and its ``expires_at`` is cleared — the deadline it missed is the reason it is
        here. Deliveries that are not dead-lettered, or not the tenant's, are left alone.
        """
        now = self.clock.now()

        def job(conn: sqlite3.Connection) -> Replayed:
            if delivery_ids is not None:
                rows, more = _dead_letter_candidates(conn, tenant, delivery_ids), False
            else:
                rows, more = _matching_dead_letters(conn, tenant, where or DeadLetterFilter(), limit)
            dead = [row for row in rows if row[2] == statuses.DEAD_LETTERED]
            changes = _Changes()
            _requeue(conn, tenant, dead, actor, now, changes)
            changes.flush(conn, now)
            refused = [row[0] for row in rows if row[2] != statuses.DEAD_LETTERED]
            return Replayed([row[0] for row in dead], frozenset(row[3] for row in dead), more, refused)

        replayed: Replayed = await self._write(job)
        return replayed


    # --- inbound callbacks, replies, opt-outs ----------------------------------------------

    async def store_inbound(self, record: InboundRecord, *, rejected: str | None = None) -> None:
        """Keep a provider callback as it arrived, before anything parses it.

        A verified callback is stored ``received`` (to be processed, also after a restart); one
        that failed verification is stored ``rejected`` with the reason, in the same one write.
        """
        row = (
            record.id, record.provider, record.received_at, record.source, record.method, record.target,
            _dumps(dict(record.headers)), record.body, "rejected" if rejected is not None else "received", rejected,
        )

        def job(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO inbound_requests (id, provider, received_at, source, method, target, headers, body, outcome, reason) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )

        await self._write(job)

    async def pending_inbound(self) -> list[InboundRecord]:
        """Verified callbacks not processed yet (the process stopped in between), oldest first."""
        rows = await self._fetch(
            "SELECT id, provider, received_at, source, method, target, headers, body FROM inbound_requests "
            "WHERE outcome = 'received' ORDER BY received_at, id"
        )
        return [InboundRecord(r[0], r[1], r[2], r[3], r[4], r[5], _loads(r[6]) or {}, bytes(r[7])) for r in rows]

    async def reject_inbound(self, request_id: str, reason: str) -> None:
        """Mark a stored callback as failing verification; nothing else changes."""

        def job(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE inbound_requests SET outcome = 'rejected', reason = ? WHERE id = ?", (reason, request_id))

        await self._write(job)

    async def record_inbound(
        self, processed: Sequence[str], replies: Sequence[NewReply], opt_outs: Sequence[NewOptOut] = ()
    ) -> set[str]:
        """Store replies (with their ``message.replied`` events), record opt-outs, mark callbacks processed.

        One transaction; returns the tenants whose opt-outs changed.
        """
        now = self.clock.now()

        def job(conn: sqlite3.Connection) -> set[str]:
            changed: set[str] = set()
            for reply in replies:
                changed |= _store_reply(conn, reply, now)
            for opt_out in opt_outs:
                changed |= _store_opt_out(conn, opt_out)
            conn.executemany("UPDATE inbound_requests SET outcome = 'processed' WHERE id = ?", [(i,) for i in processed])
            return changed

        changed: set[str] = await self._write(job)
        return changed

    async def purge_inbound(self, before: float) -> int:
        """Delete raw callbacks received before ``before``, and receipts held as long for messages never seen; how many callbacks went."""

        def job(conn: sqlite3.Connection) -> int:
            conn.execute("DELETE FROM held_receipts WHERE received_at < ?", (before,))
            return conn.execute("DELETE FROM inbound_requests WHERE received_at < ?", (before,)).rowcount

        purged: int = await self._write(job)
        return purged

    async def get_inbound(self, request_id: str) -> dict[str, Any] | None:
        """One stored callback, headers decoded."""
        rows = await self._fetch("SELECT * FROM inbound_requests WHERE id = ?", (request_id,))
        return dict(rows[0]) | {"headers": _loads(rows[0]["headers"]), "body": bytes(rows[0]["body"])} if rows else None

    async def list_replies(
        self, tenant: str, *, channel: str | None = None, sender: str | None = None, limit: int = 100, cursor: str | None = None
    ) -> Page:
        """The tenant's replies, newest first, ``limit`` at a time."""
        clauses, params = ["tenant = ?"], list[Any]([tenant])
        for column, value in (("channel", channel), ("sender", sender)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if cursor is not None:
            clauses.append("seq < ?")
            params.append(decode_seq_cursor(cursor))
        sql = f"SELECT * FROM replies WHERE {' AND '.join(clauses)} ORDER BY seq DESC LIMIT ?"
        rows = [dict(row) | {"detail": _loads(row["detail"]) or {}} for row in await self._fetch(sql, (*params, limit + 1))]
        return Page(rows[:limit], encode_seq_cursor(rows[limit - 1]["seq"]) if len(rows) > limit else None)

    async def list_opt_outs(
        self, tenant: str, *, channel: str | None = None, address: str | None = None, limit: int = 100, cursor: str | None = None
    ) -> Page:
        """The tenant's opted-out recipients by address then channel, ``limit`` at a time."""
        clauses, params = ["tenant = ?"], list[Any]([tenant])
        if address is not None and channel is not None:
            address = opt_out_address(channel, address)
        for column, value in (("channel", channel), ("address", address)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if cursor is not None:
            after_address, _, after_channel = decode_text_cursor(cursor).partition("\n")
            clauses.append("(address, channel) > (?, ?)")
            params += [after_address, after_channel]
        sql = f"SELECT channel, address, since, source FROM opt_outs WHERE {' AND '.join(clauses)} ORDER BY address, channel LIMIT ?"
        rows = [dict(row) for row in await self._fetch(sql, (*params, limit + 1))]
        last = rows[limit - 1] if len(rows) > limit else None
        return Page(rows[:limit], encode_text_cursor(f"{last['address']}\n{last['channel']}") if last else None)

    async def add_opt_out(self, tenant: str, channel: str, address: str, source: str) -> bool:
        """Record that ``address`` opted out of the tenant's ``channel`` (with its event); False if it already had."""

        def job(conn: sqlite3.Connection) -> bool:
            return _set_opt_out(conn, tenant, channel, address, True, source, self.clock.now())

        added: bool = await self._write(job)
        return added

    async def tenants_with_opt_outs(self) -> set[str]:
        return {row[0] for row in await self._fetch("SELECT DISTINCT tenant FROM opt_outs")}

    async def opted_out(self, tenant: str, targets: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """Those (channel, address) pairs of ``targets`` the tenant's recipients opted out of: one indexed read."""
        wanted = {(channel, opt_out_address(channel, address)): (channel, address) for channel, address in targets}
        addresses = sorted({address for _channel, address in wanted})
        rows = await self._read(
            lambda conn: _select_in(conn, "SELECT channel, address FROM opt_outs WHERE tenant = ? AND address IN ({})", addresses, tenant)
        )
        found = {(row[0], row[1]) for row in rows}
        return {wanted[key] for key in found & wanted.keys()}


    # --- event webhooks --------------------------------------------------------------------

    async def events_to_fan_out(self, *, limit: int) -> list[StoredEvent]:
        """Events after the fan-out cursor, oldest first: read-only, so an idle worker writes nothing."""
        rows = await self._fetch(
            "SELECT seq, id, tenant, type, data, at FROM events WHERE seq > (SELECT last_seq FROM webhook_fanout) ORDER BY seq LIMIT ?",
            (limit,),
        )
        return [StoredEvent(r[0], r[1], r[2], r[3], _loads(r[4]) or {}, r[5]) for r in rows]

    async def disabled_webhook_endpoints(self) -> dict[tuple[str, str], str]:
        """(tenant, endpoint) → the url that answered 410."""
        return {(r[0], r[1]): r[2] for r in await self._fetch("SELECT tenant, endpoint, url FROM webhook_endpoints_disabled")}

    async def fan_out(self, targets: Sequence[WebhookTarget], through_seq: int) -> None:
        """Add one webhook delivery per target and move the cursor past ``through_seq``, atomically."""
        now = self.clock.now()
        rows = [
            (ids.new_id(ids.WEBHOOK), t.event.seq, t.event.id, t.tenant, t.endpoint, "disabled" if t.disabled else "pending", now, now, now)
            for t in targets
        ]

        def job(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT OR IGNORE INTO webhook_deliveries (id, event_seq, event_id, tenant, endpoint, status, next_attempt_at, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            conn.execute("UPDATE webhook_fanout SET last_seq = MAX(last_seq, ?)", (through_seq,))

        await self._write(job)

    async def next_webhook_due(self) -> float | None:
        """When the earliest pending webhook delivery is due (its lease's end if it is out), or None."""
        rows = await self._fetch(
            "SELECT MIN(MAX(next_attempt_at, COALESCE(lease_until, 0))) FROM webhook_deliveries WHERE status = 'pending'"
        )
        return rows[0][0] if rows else None

    async def claim_webhooks(self, *, limit: int, lease_seconds: float) -> list[ClaimedWebhook]:
        """Reserve up to ``limit`` due webhook deliveries, oldest event first, with their events."""
        now = self.clock.now()

        def job(conn: sqlite3.Connection) -> list[ClaimedWebhook]:
            rows = conn.execute(
                "SELECT w.id, w.tenant, w.endpoint, w.attempts, e.seq, e.id, e.tenant, e.type, e.data, e.at "
                "FROM webhook_deliveries w JOIN events e ON e.seq = w.event_seq "
                "WHERE w.status = 'pending' AND w.next_attempt_at <= ? AND (w.lease_until IS NULL OR w.lease_until <= ?) "
                "ORDER BY w.event_seq, w.id LIMIT ?",
                (now, now, limit),
            ).fetchall()
            conn.executemany(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, lease_until = ?, updated_at = ? WHERE id = ?",
                [(now + lease_seconds, now, row[0]) for row in rows],
            )
            return [
                ClaimedWebhook(r[0], r[1], r[2], r[3] + 1, StoredEvent(r[4], r[5], r[6], r[7], _loads(r[8]) or {}, r[9]))
                for r in rows
            ]

        claimed: list[ClaimedWebhook] = await self._write(job)
        return claimed

    async def record_webhooks(self, results: Sequence[WebhookResult]) -> None:
        """Record attempts' outcomes and each endpoint's health, atomically.

        An endpoint is disabled — its url noted, everything still pending for it held as
        ``disabled`` — when it answered 410, or when it has failed continuously (no success in
        between) for its ``disable_after``.
        """
        now = self.clock.now()

        def job(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE webhook_deliveries SET status = ?, last_status = ?, last_error = ?, "
                "next_attempt_at = COALESCE(?, next_attempt_at), lease_until = NULL, updated_at = ? WHERE id = ?",
                [(r.status, r.last_status, r.last_error, r.next_attempt_at, now, r.id) for r in results],
            )
            gone = {(r.tenant, r.endpoint): (r.url or "", r.last_error or "410 Gone") for r in results if r.status == "disabled"}
            for (tenant, endpoint), (url, reason) in _track_endpoint_health(conn, results, now).items():
                gone.setdefault((tenant, endpoint), (url, reason))
            conn.executemany(
                "INSERT OR REPLACE INTO webhook_endpoints_disabled (tenant, endpoint, url, disabled_at, reason) VALUES (?, ?, ?, ?, ?)",
                [(tenant, endpoint, url, now, reason) for (tenant, endpoint), (url, reason) in gone.items()],
            )
            conn.executemany(
                "UPDATE webhook_deliveries SET status = 'disabled', updated_at = ? WHERE tenant = ? AND endpoint = ? AND status = 'pending'",
                [(now, tenant, endpoint) for tenant, endpoint in gone],
            )

        await self._write(job)

    async def webhook_endpoint_states(self, tenant: str) -> dict[str, WebhookEndpointState]:
        """The tenant's endpoints the store knows anything about, by name: their health and any disabling."""

        def read(conn: sqlite3.Connection) -> tuple[dict[str, Any], dict[str, Any]]:
            health = conn.execute(
                "SELECT endpoint, failing_since, last_success_at, last_failure_at, last_error FROM webhook_endpoint_health WHERE tenant = ?",
                (tenant,),
            ).fetchall()
            disabled = conn.execute("SELECT endpoint, url, disabled_at, reason FROM webhook_endpoints_disabled WHERE tenant = ?", (tenant,)).fetchall()
            return {row[0]: tuple(row[1:]) for row in health}, {row[0]: tuple(row[1:]) for row in disabled}

        health, disabled = await self._read(read)
        return {
            name: WebhookEndpointState(tenant, name, *health.get(name, (None,) * 4), *disabled.get(name, (None,) * 3))
            for name in health.keys() | disabled.keys()
        }

    async def enable_webhook_endpoint(self, tenant: str, endpoint: str) -> int:
        """Lift an endpoint's disabling and send its held (``disabled``) deliveries again; how many were requeued."""
        now = self.clock.now()

        def job(conn: sqlite3.Connection) -> int:
            conn.execute("DELETE FROM webhook_endpoints_disabled WHERE tenant = ? AND endpoint = ?", (tenant, endpoint))
            conn.execute("UPDATE webhook_endpoint_health SET failing_since = NULL WHERE tenant = ? AND endpoint = ?", (tenant, endpoint))
            cursor = conn.execute(
                "UPDATE webhook_deliveries SET status = 'pending', attempts = 0, next_attempt_at = ?, lease_until = NULL, "
                "last_error = 'endpoint enabled', updated_at = ? WHERE tenant = ? AND endpoint = ? AND status = 'disabled'",
                (now, now, tenant, endpoint),
            )
            return cursor.rowcount

        requeued: int = await self._write(job)
        return requeued

    async def release_webhooks(self, delivery_ids: Iterable[str]) -> None:
        """Give back the leases of webhook sends cut short by a shutdown: due again at once, the try uncounted.

        Rows whose outcome was recorded meanwhile (their lease already cleared) are left alone.
        """
        now = self.clock.now()
        params = [(now, now, delivery_id) for delivery_id in delivery_ids]

        def job(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE webhook_deliveries SET lease_until = NULL, next_attempt_at = ?, attempts = attempts - 1, updated_at = ? "
                "WHERE id = ? AND status = 'pending' AND lease_until IS NOT NULL",
                params,
            )

        await self._write(job)

    async def list_webhook_deliveries(
        self, tenant: str, *, status: str | None = None, endpoint: str | None = None, limit: int = 100, cursor: str | None = None
    ) -> Page:
        """The tenant's webhook deliveries, newest first, with the type of their event, ``limit`` at a time."""
        clauses, params = ["w.tenant = ?"], list[Any]([tenant])
        for column, value in (("w.status", status), ("w.endpoint", endpoint)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if cursor is not None:
            clauses.append("w.id < ?")
            params.append(decode_cursor(cursor, ids.WEBHOOK))
        sql = (
            "SELECT w.*, e.type FROM webhook_deliveries w JOIN events e ON e.seq = w.event_seq "
            f"WHERE {' AND '.join(clauses)} ORDER BY w.id DESC LIMIT ?"
        )
        rows = [dict(row) for row in await self._fetch(sql, (*params, limit + 1))]
        return Page(rows[:limit], encode_cursor(rows[limit - 1]["id"]) if len(rows) > limit else None)

    async def webhook_delivery_status(self, tenant: str, delivery_id: str) -> str | None:
        """The status of one of the tenant's webhook deliveries; None if it has no such delivery."""
        rows = await self._fetch("SELECT status FROM webhook_deliveries WHERE id = ? AND tenant = ?", (delivery_id, tenant))
        return str(rows[0][0]) if rows else None

    async def replay_webhooks(
        self, tenant: str, *, delivery_ids: Sequence[str] | None = None, endpoint: str | None = None, since: float | None = None
    ) -> list[str]:
        """Send dead or disabled webhook deliveries again now, with a fresh schedule; their ids.

        By ids, or every one of ``endpoint`` created at or after ``since``. Replaying an
        endpoint's deliveries also lifts its disabling (a 410, or a url fixed since).
        """
        now = self.clock.now()

        def job(conn: sqlite3.Connection) -> list[str]:
            where, params = ["tenant = ?", "status IN ('dead', 'disabled')"], list[Any]([tenant])
            if delivery_ids is not None:
                where.append(f"id IN ({', '.join('?' * len(delivery_ids))})")
                params += list(delivery_ids)
            if endpoint is not None:
                where += ["endpoint = ?", "created_at >= ?"]
                params += [endpoint, since if since is not None else 0.0]
            rows = conn.execute(f"SELECT id, endpoint FROM webhook_deliveries WHERE {' AND '.join(where)} ORDER BY event_seq", params).fetchall()
            conn.executemany(
                "UPDATE webhook_deliveries SET status = 'pending', attempts = 0, next_attempt_at = ?, lease_until = NULL, "
                "last_error = 'replayed', updated_at = ? WHERE id = ?",
                [(now, now, row[0]) for row in rows],
            )
            conn.executemany(
                "DELETE FROM webhook_endpoints_disabled WHERE tenant = ? AND endpoint = ?", [(tenant, e) for e in {row[1] for row in rows}]
            )
            return [row[0] for row in rows]

        replayed: list[str] = await self._write(job)
        return replayed


# --- statements run inside the writer thread -----------------------------------------------


def _track_endpoint_health(conn: sqlite3.Connection, results: Sequence[WebhookResult], now: float) -> dict[tuple[str, str], tuple[str, str]]:
    """Note each endpoint's successes and failures; the ones failing for longer than their ``disable_after``.

    Results come in creation order per endpoint, so an endpoint's last result decides whether
    it is failing now.
    """
    last: dict[tuple[str, str], WebhookResult] = {}
    for result in results:
        last[(result.tenant, result.endpoint)] = result
    healthy = [(t, e, now) for (t, e), r in last.items() if r.status == "succeeded"]
    failing = [(t, e, now, now, r.last_error) for (t, e), r in last.items() if r.status != "succeeded"]
    conn.executemany(
        "INSERT INTO webhook_endpoint_health (tenant, endpoint, last_success_at) VALUES (?, ?, ?) "
        "ON CONFLICT (tenant, endpoint) DO UPDATE SET failing_since = NULL, last_success_at = excluded.last_success_at",
        healthy,
    )
    conn.executemany(
        "INSERT INTO webhook_endpoint_health (tenant, endpoint, failing_since, last_failure_at, last_error) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (tenant, endpoint) DO UPDATE SET failing_since = COALESCE(failing_since, excluded.failing_since), "
        "last_failure_at = excluded.last_failure_at, last_error = excluded.last_error",
        failing,
    )
    worn_out: dict[tuple[str, str], tuple[str, str]] = {}
    for (tenant, endpoint), result in last.items():
        if result.status == "succeeded" or result.disable_after is None:
            continue
        (since,) = conn.execute(
            "SELECT failing_since FROM webhook_endpoint_health WHERE tenant = ? AND endpoint = ?", (tenant, endpoint)
        ).fetchone()
        if since is not None and now - since >= result.disable_after:
            reason = f"failing continuously since {isoformat(since)}: {result.last_error or 'no answer'}"
            worn_out[(tenant, endpoint)] = (result.url or "", reason)
    return worn_out


def _insert_notifications(conn: sqlite3.Connection, notifications: Sequence[NewNotification], now: float) -> None:
    conn.executemany(
        "INSERT INTO notifications (id, tenant, status, mode, priority, strategy, template_id, recipient, channels, "
        "metadata, idempotency_key, created_by, created_at, updated_at, fallback_after, expires_at) "
        "VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                n.id, n.tenant, n.mode, n.priority, n.strategy, n.template_id, _dumps(n.recipient), _dumps(list(n.channels)),
                _dumps(n.metadata) if n.metadata else None, n.idempotency_key, n.created_by, now, now, n.fallback_after, n.expires_at,
            )
            for n in notifications
        ],
    )
    conn.executemany(
        "INSERT INTO deliveries (id, notification_id, tenant, channel, position, address, mode, priority_rank, content, "
        "status, next_attempt_at, created_at, updated_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                d.id, n.id, n.tenant, d.channel, d.position, d.address, n.mode, PRIORITY_RANK[n.priority],
                _dumps(d.content), *_initial_state(n, d.position, now), now, now, n.expires_at,
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
    queued = _Changes()
    for n in notifications:
        data = {"delivery_id": None, "channels": list(n.channels), "status": statuses.QUEUED, "reason": None, "template_id": n.template_id}
        queued.event("message.queued", n.tenant, n.id, now, data)
    _insert_event_rows(conn, queued.events)


def _initial_state(n: NewNotification, position: int, now: float) -> tuple[str, float]:
    """Status and next_attempt_at of a new delivery.

    Every channel starts at once with strategy ``all``; with ``fallback`` only the first does,
    and the second waits until ``fallback_after`` past the start (or for good, when unset).
    """
    start = n.send_at or now
    if n.strategy != FALLBACK or position == 0:
        return statuses.QUEUED, start
    if position == 1 and n.fallback_after is not None:
        return statuses.WAITING, start + n.fallback_after
    return statuses.WAITING, NEVER


def _insert_events(conn: sqlite3.Connection, events: Sequence[NewEvent]) -> None:
    _insert_event_rows(conn, [(ids.new_id(ids.EVENT), e.tenant, e.type, e.subject, _dumps(dict(e.data)), e.at) for e in events])


def _insert_event_rows(conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """(id, tenant, type, subject, data JSON, at) rows; ``seq`` orders them, per tenant as overall."""
    if rows:
        conn.executemany("INSERT INTO events (id, tenant, type, subject, data, at) VALUES (?, ?, ?, ?, ?, ?)", rows)


def _store_reply(conn: sqlite3.Connection, reply: NewReply, now: float) -> set[str]:
    """Insert a reply once per tenant it belongs to, with its event and opt-out change; the tenants opted in or out."""
    link = _delivery_of(conn, reply.provider, reply.in_reply_to)
    tenants = [link[2]] if link is not None and link[2] in reply.tenants else _sent_to(conn, reply.tenants, reply.sender, reply.provider)
    delivery_id, notification_id = (link[0], link[1]) if link is not None else (None, None)
    changed: set[str] = set()
    owners: list[str | None] = list(tenants) or [None]  # no tenant found: kept, but nobody's
    for tenant in owners:
        inserted = conn.execute(
            "INSERT OR IGNORE INTO replies (tenant, provider, channel, sender, body, provider_message_id, in_reply_to, notification_id, "
            "delivery_id, request_id, received_at, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                tenant, reply.provider, reply.channel, reply.sender, reply.body, reply.provider_message_id, reply.in_reply_to,
                notification_id, delivery_id, reply.request_id, reply.received_at, _dumps(dict(reply.detail)) if reply.detail else None,
            ),
        ).rowcount
        if tenant is None or not inserted:
            continue  # nobody's, or a vendor's retry of a reply already stored
        data = {
            "channel": reply.channel, "from": reply.sender, "body": reply.body, "provider": reply.provider,
            "provider_message_id": reply.provider_message_id, "notification_id": notification_id, "delivery_id": delivery_id,
        }
        _insert_events(conn, [NewEvent("message.replied", notification_id or reply.sender, reply.received_at, data, tenant)])
        source = f"reply via {reply.provider}: {reply.body.strip()[:40]}"
        if reply.opt is not None and _set_opt_out(conn, tenant, reply.channel, reply.sender, reply.opt == "out", source, now):
            changed.add(tenant)
    return changed


def _store_opt_out(conn: sqlite3.Connection, opt_out: NewOptOut) -> set[str]:
    """Record a vendor's opt-out (or opt-in) for each tenant it belongs to; the tenants whose opt-outs changed."""
    link = _delivery_of(conn, opt_out.provider, opt_out.about)
    if link is not None and link[2] in opt_out.tenants:
        tenants = [link[2]]
    else:
        tenants = _sent_to(conn, opt_out.tenants, opt_out.address, opt_out.provider)
    source = f"{opt_out.provider}: {opt_out.reason or ('opted out' if opt_out.opted_out else 'opted in')}"[:200]
    return {
        tenant for tenant in tenants
        if _set_opt_out(conn, tenant, opt_out.channel, opt_out.address, opt_out.opted_out, source, opt_out.at)
    }


def _delivery_of(conn: sqlite3.Connection, provider: str, message_id: str | None) -> tuple[str, str, str] | None:
    """(delivery id, notification id, tenant) of the provider's message ``message_id``, when there is one."""
    if message_id is None:
        return None
    row = conn.execute(
        "SELECT id, notification_id, tenant FROM deliveries WHERE provider = ? AND provider_message_id = ?", (provider, message_id)
    ).fetchone()
    return (row[0], row[1], row[2]) if row is not None else None


def _sent_to(conn: sqlite3.Connection, tenants: Sequence[str], address: str, provider: str) -> list[str]:
    """The tenant owning the instance (the only one of ``tenants``), else those that have sent to ``address`` through it."""
    if len(tenants) == 1:
        return list(tenants)
    rows = _select_in(
        conn, "SELECT DISTINCT tenant FROM deliveries WHERE address = ? AND provider = ? AND tenant IN ({})", tenants, address, provider
    )
    return sorted(row[0] for row in rows)


def opt_out_address(channel: str, address: str) -> str:
    """An address as opt-outs keep it: an email address in lower case (vendors report them in any case)."""
    address = address.strip()
    return address.lower() if channel == "email" else address


def _set_opt_out(conn: sqlite3.Connection, tenant: str, channel: str, address: str, out: bool, source: str, at: float) -> bool:
    """Record (``out``) or lift an opt-out, with its ``recipient.opted_out`` / ``opted_in`` event; whether anything changed."""
    address = opt_out_address(channel, address)
    if out:
        changed = conn.execute(
            "INSERT OR IGNORE INTO opt_outs (tenant, channel, address, since, source) VALUES (?, ?, ?, ?, ?)",
            (tenant, channel, address, at, source),
        ).rowcount > 0
    else:
        changed = conn.execute(
            "DELETE FROM opt_outs WHERE tenant = ? AND channel = ? AND address = ?", (tenant, channel, address)
        ).rowcount > 0
    if changed:
        data = {"tenant": tenant, "channel": channel, "address": address, "source": source}
        _insert_events(conn, [NewEvent(OPTED_OUT_EVENT if out else OPTED_IN_EVENT, address, at, data, tenant)])
    return changed


def _insert_audits(conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    if rows:
        conn.executemany(
            "INSERT INTO audit_events (tenant, notification_id, delivery_id, at, actor, action, from_status, to_status, reason) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )


_CHUNK: Final = 500  # bound parameters per IN (...) list, well under SQLite's limit


def _chunks(values: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


def _select_in(conn: sqlite3.Connection, sql: str, values: Iterable[Any], *params: Any) -> list[Any]:
    """Run ``sql`` whose last placeholder is ``IN ({})`` over ``values``, in chunks."""
    rows: list[Any] = []
    distinct = list(dict.fromkeys(values))
    for chunk in _chunks(distinct):
        rows += conn.execute(sql.format(", ".join("?" * len(chunk))), (*params, *chunk)).fetchall()
    return rows


def _refresh_notifications(conn: sqlite3.Connection, notification_ids: Iterable[str], now: float, changes: _Changes) -> None:
    """Recompute each notification's status from its deliveries'; note ``message.failed`` when it fails as a whole.

    The notification's failure is final only here, after fallbacks: one channel failing while
    another may still get through is not a failed message.
    """
    found: dict[str, list[Any]] = {}
    for row in _select_in(
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
            data = {"status": status, "reason": _failure_reason(rows), "template_id": template_id}
            changes.event("message.failed", tenant, notification_id, now, data)
    conn.executemany("UPDATE notifications SET status = ?, updated_at = ? WHERE id = ? AND status != ?", updates)


def _failure_reason(rows: Sequence[Any]) -> str | None:
    """Why the last channel to fail failed (its dead-letter reason and error), for ``message.failed``."""
    for *_ignored, dead_reason, last_error in reversed(rows):
        if dead_reason or last_error:
            return f"{dead_reason}: {last_error}" if dead_reason and last_error else dead_reason or last_error
    return None


class _Changes:
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
        self.events.append((ids.new_id(ids.EVENT), tenant, type_, notification_id, _dumps(body), at))

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
        _settle_fallbacks(conn, self, now)
        _insert_audits(conn, self.audits)
        _refresh_notifications(conn, self.touched, now, self)
        _insert_event_rows(conn, self.events)


def _record_attempts(conn: sqlite3.Connection, results: Sequence[AttemptResult], now: float) -> set[str]:
    """Record attempts and move their deliveries on; the tenants whose opt-outs a refusal (``opted_out``) changed."""
    current = {
        row[0]: list(row[1:])
        for row in _select_in(
            conn,
            "SELECT d.id, d.notification_id, d.tenant, d.status, d.position, n.strategy, d.channel, n.template_id, d.address, d.provider "
            "FROM deliveries d JOIN notifications n ON n.id = d.notification_id WHERE d.id IN ({})",
            (r.delivery_id for r in results),
        )
    }
    attempts: list[tuple[Any, ...]] = []
    retries: list[tuple[Any, ...]] = []
    finals: list[tuple[Any, ...]] = []
    changes = _Changes()
    opted_out: set[str] = set()
    for result in results:
        found = current.get(result.delivery_id)
        if found is None:
            continue
        notification_id, tenant, status, position, strategy, channel, template_id, address, tried_before = found
        provider = result.provider or tried_before or ""  # "": no instance was ever tried
        if result.outcome == PERMANENT_OUTCOME and result.detail.get("code") == OPTED_OUT:
            source = f"{provider} refused a send: {result.error}"[:200]
            if _set_opt_out(conn, tenant, channel, address, True, source, now):
                opted_out.add(tenant)
        attempts.append(
            (
                ids.new_id(ids.ATTEMPT), result.delivery_id, notification_id, result.attempt, provider,
                result.started_at, result.finished_at, result.outcome, result.provider_message_id, result.error,
                _dumps(result.detail) if result.detail else None,
            )
        )
        actor = f"provider:{provider}" if provider else DISPATCHER
        if not result.final:
            changes.audits.append((tenant, notification_id, result.delivery_id, now, actor, "failover", None, None, result.error))
            continue
        if result.retry_at is not None:
            retries.append((result.retry_at, provider or None, result.error, now, result.delivery_id))
            changes.audits.append((tenant, notification_id, result.delivery_id, now, actor, "retry_scheduled", None, None, result.error))
            continue
        new, dead_reason = result.status, result.dead_reason
        if new == statuses.FAILED and not _has_fallback(conn, notification_id, position, strategy):
            new, dead_reason = statuses.DEAD_LETTERED, statuses.PERMANENT
        if not statuses.can_transition(status, new):
            continue
        finals.append((new, provider or None, result.provider_message_id, result.error, dead_reason, now, result.delivery_id))
        action = {statuses.SENT: "sent", statuses.DEAD_LETTERED: "dead_lettered"}.get(new, "failed")
        reason = f"{dead_reason}: {result.error}" if dead_reason else result.error
        changes.audits.append((tenant, notification_id, result.delivery_id, now, actor, action, status, new, reason))
        if new in _DELIVERY_EVENTS:
            changes.delivery_event(
                _DELIVERY_EVENTS[new], tenant, notification_id, result.delivery_id, now,
                channel=channel, status=new, reason=reason, template_id=template_id,
            )
        changes.moved(notification_id, strategy)
        found[2] = new
    conn.executemany(
        "INSERT INTO attempts (id, delivery_id, notification_id, number, provider, started_at, finished_at, outcome, "
        "provider_message_id, error, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        attempts,
    )
    conn.executemany(
        "UPDATE deliveries SET next_attempt_at = ?, lease_owner = NULL, lease_until = NULL, provider = ?, "
        "last_error = ?, updated_at = ? WHERE id = ?",
        retries,
    )
    conn.executemany(
        "UPDATE deliveries SET status = ?, provider = ?, provider_message_id = ?, lease_owner = NULL, lease_until = NULL, "
        "last_error = ?, dead_reason = ?, updated_at = ? WHERE id = ?",
        finals,
    )
    changes.flush(conn, now)
    return opted_out


def _has_fallback(conn: sqlite3.Connection, notification_id: str, position: int, strategy: str) -> bool:
    """Whether a channel after ``position`` is still waiting to be tried."""
    if strategy != FALLBACK:
        return False
    found = conn.execute(
        "SELECT 1 FROM deliveries WHERE notification_id = ? AND position > ? AND status = 'waiting' LIMIT 1",
        (notification_id, position),
    ).fetchone()
    return found is not None


def _dead_letter(
    conn: sqlite3.Connection, rows: Sequence[tuple[str, str, str, str]], reason: str, message: str, now: float, changes: _Changes
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
        for row in _select_in(
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


def _activate_overdue_fallbacks(conn: sqlite3.Connection, channel: str, now: float, changes: _Changes) -> None:
    """Start waiting fallback deliveries of ``channel`` whose channel before them ran out of time."""
    rows = conn.execute(
        "SELECT d.id, d.notification_id, d.tenant, n.fallback_after FROM deliveries d JOIN notifications n ON n.id = d.notification_id "
        "WHERE d.channel = ? AND d.status = 'waiting' AND d.next_attempt_at <= ?",
        (channel, now),
    ).fetchall()
    for delivery_id, notification_id, tenant, fallback_after in rows:
        reason = f"the channel before it was not delivered within {fallback_after:g}s"
        _activate(conn, delivery_id, notification_id, tenant, now, reason, changes)


def _activate(conn: sqlite3.Connection, delivery_id: str, notification_id: str, tenant: str, now: float, reason: str, changes: _Changes) -> None:
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


def _settle_fallbacks(conn: sqlite3.Connection, changes: _Changes, now: float) -> None:
    """Move fallback notifications on: skip what is no longer needed, start the next channel after a failure.

    An earlier channel that was delivered (or sent, when no ``fallback_after`` asks to wait for
    delivery) makes the waiting ones unnecessary. When nothing is in flight or sent any more,
    the first waiting channel starts.
    """
    if not changes.fallbacks:
        return
    pending, changes.fallbacks = changes.fallbacks, set()
    rows = _select_in(
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
            _activate(conn, delivery_id, notification_id, tenant, now, "the channel before it failed", changes)
    conn.executemany("UPDATE deliveries SET status = 'skipped', updated_at = ? WHERE id = ? AND status = 'waiting'", skips)
    changes.fallbacks.clear()  # activations above need no second pass: the activated channel is now in flight


_RECEIPT_COLUMNS: Final = "d.id, d.notification_id, d.tenant, d.status, n.strategy, d.channel, n.template_id"


def _apply_statuses(conn: sqlite3.Connection, updates: Sequence[ReceivedStatus], now: float) -> None:
    """Apply receipts in order; hold the ones whose message this store does not know yet.

    A receipt is matched by the provider's message id, else by the delivery id the vendor
    echoed (:func:`_found_by_delivery`), which also gives the delivery its message id.
    """
    found: dict[tuple[str, str], list[Any]] = {}
    for provider in {update.provider for update in updates}:
        for row in _select_in(
            conn,
            f"SELECT d.provider_message_id, {_RECEIPT_COLUMNS} FROM deliveries d "
            "JOIN notifications n ON n.id = d.notification_id WHERE d.provider = ? AND d.provider_message_id IN ({})",
            (update.provider_message_id for update in updates if update.provider == provider),
            provider,
        ):
            found[(provider, row[0])] = list(row[1:])
    found |= _found_by_delivery(conn, [u for u in updates if (u.provider, u.provider_message_id) not in found])
    held: list[tuple[Any, ...]] = []
    changes = _Changes()
    moves: list[tuple[Any, ...]] = []
    for update in updates:
        row = found.get((update.provider, update.provider_message_id))
        if row is None:
            held.append(
                (update.provider, update.provider_message_id, update.status, update.occurred_at, update.error,
                 _dumps(update.detail) if update.detail else None, now, update.delivery_id)
            )
        elif (move := _transition(row, update, now, changes)) is not None:
            moves.append(move)
            row[3] = update.status
    conn.executemany(
        "INSERT INTO held_receipts (provider, provider_message_id, status, occurred_at, error, detail, received_at, delivery_id) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        held,
    )
    _move_deliveries(conn, moves)
    changes.flush(conn, now)


def _found_by_delivery(conn: sqlite3.Connection, updates: Sequence[ReceivedStatus]) -> dict[tuple[str, str], list[Any]]:
    """Deliveries of receipts that name our delivery id, keyed like the message-id matches.

    Taken only when an attempt through the same provider instance made the delivery (so an
    instance never reaches another's deliveries) and the delivery has no other message id
    yet: the send timed out after the vendor accepted it, or its answer is still on the way.
    The delivery takes the receipt's message id, so later receipts match it directly.
    """
    found: dict[tuple[str, str], list[Any]] = {}
    hinted = {(u.provider, u.delivery_id): u for u in reversed(updates) if u.delivery_id}  # the first receipt per delivery
    for provider in {provider for provider, _delivery_id in hinted}:
        for row in _select_in(
            conn,
            f"SELECT {_RECEIPT_COLUMNS}, d.provider_message_id FROM deliveries d JOIN notifications n ON n.id = d.notification_id "
            "WHERE EXISTS (SELECT 1 FROM attempts a WHERE a.notification_id = d.notification_id AND a.delivery_id = d.id "
            "AND a.provider = ?) AND d.id IN ({})",
            (delivery_id for named, delivery_id in hinted if named == provider),
            provider,
        ):
            update, known = hinted[(provider, row[0])], row[7]
            if known not in (None, update.provider_message_id):
                continue  # it already has another message id: this receipt is about a second send
            found[(provider, update.provider_message_id)] = list(row[:7])
            if known is None:
                conn.execute("UPDATE deliveries SET provider = ?, provider_message_id = ? WHERE id = ?", (provider, update.provider_message_id, row[0]))
    return found


def _transition(row: Sequence[Any], update: ReceivedStatus, now: float, changes: _Changes) -> tuple[Any, ...] | None:
    """The delivery update a receipt makes (None when it would move the status back), noting its audit."""
    delivery_id, notification_id, tenant, current, strategy, channel, template_id = row
    if not statuses.can_transition(current, update.status):
        return None
    reason = update.error or _describe(update.detail)
    changes.audits.append(
        (tenant, notification_id, delivery_id, update.occurred_at or now, f"provider:{update.provider}", "receipt", current, update.status, reason)
    )
    if update.status in _DELIVERY_EVENTS:
        changes.delivery_event(
            _DELIVERY_EVENTS[update.status], tenant, notification_id, delivery_id, now,
            channel=channel, status=update.status, reason=reason, template_id=template_id,
        )
    changes.moved(notification_id, strategy)
    return (update.status, update.error, now, delivery_id)


def _move_deliveries(conn: sqlite3.Connection, moves: Sequence[tuple[Any, ...]]) -> None:
    conn.executemany("UPDATE deliveries SET status = ?, last_error = COALESCE(?, last_error), updated_at = ? WHERE id = ?", moves)


def _describe(detail: Mapping[str, Any]) -> str | None:
    return ", ".join(f"{key}={value}" for key, value in detail.items()) or None


def _apply_held(conn: sqlite3.Connection, results: Sequence[AttemptResult], now: float) -> None:
    """Apply the held receipts of messages whose attempts were just recorded, in arrival order.

    Those of a message now known by its id, and those naming a delivery that was just tried
    (its send timed out, but the vendor had taken it and says so).
    """
    if not results or conn.execute("SELECT 1 FROM held_receipts LIMIT 1").fetchone() is None:
        return  # the usual case: nothing is waiting
    columns = "seq, provider, provider_message_id, status, occurred_at, error, detail, delivery_id"
    held: dict[int, Any] = {}
    for provider in {result.provider for result in results if result.provider is not None}:
        mine = [result for result in results if result.provider == provider]
        for row in _select_in(
            conn, f"SELECT {columns} FROM held_receipts WHERE provider = ? AND provider_message_id IN ({{}})",
            (r.provider_message_id for r in mine if r.provider_message_id is not None and r.status == statuses.SENT), provider,
        ) + _select_in(
            conn, f"SELECT {columns} FROM held_receipts WHERE provider = ? AND delivery_id IN ({{}})", (r.delivery_id for r in mine), provider
        ):
            held[row[0]] = row
    if not held:
        return
    rows = [held[seq] for seq in sorted(held)]
    conn.executemany("DELETE FROM held_receipts WHERE seq = ?", [(row[0],) for row in rows])
    _apply_statuses(
        conn,
        [ReceivedStatus(provider, message_id, status, occurred_at, error, _loads(detail) or {}, delivery_id)
         for _seq, provider, message_id, status, occurred_at, error, detail, delivery_id in rows],
        now,
    )


# --- reads, each run whole inside one snapshot ------------------------------------------------


def _read_notification(conn: sqlite3.Connection, tenant: str, notification_id: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT * FROM notifications WHERE id = ? AND tenant = ?", (notification_id, tenant)).fetchone()
    if row is None:
        return None
    notification = _notification_dict(row)
    deliveries = conn.execute("SELECT * FROM deliveries WHERE notification_id = ? ORDER BY position", (notification_id,)).fetchall()
    notification["deliveries"] = [_delivery_dict(r) for r in deliveries]
    attempts = [
        dict(r) | {"detail": _loads(r["detail"]) or {}}
        for r in conn.execute("SELECT * FROM attempts WHERE notification_id = ? ORDER BY started_at, number", (notification_id,))
    ]
    for delivery in notification["deliveries"]:
        delivery["attempt_log"] = [a for a in attempts if a["delivery_id"] == delivery["id"]]
    audit = conn.execute("SELECT * FROM audit_events WHERE notification_id = ? ORDER BY seq", (notification_id,)).fetchall()
    notification["audit"] = [dict(r) for r in audit]
    return notification


def _attach_deliveries(conn: sqlite3.Connection, items: list[dict[str, Any]]) -> None:
    """Give each notification of a page its deliveries, in one query."""
    by_id = {item["id"]: item for item in items}
    for item in items:
        item["deliveries"] = []
    for row in _select_in(conn, "SELECT * FROM deliveries WHERE notification_id IN ({}) ORDER BY notification_id, position", by_id):
        by_id[row["notification_id"]]["deliveries"].append(_delivery_dict(row))


def _notification_dict(row: sqlite3.Row) -> dict[str, Any]:
    item = dict(row)
    item["recipient"] = _loads(item["recipient"])
    item["channels"] = _loads(item["channels"])
    item["metadata"] = _loads(item["metadata"]) or {}
    return item


def _delivery_dict(row: sqlite3.Row) -> dict[str, Any]:
    item = dict(row)
    item["content"] = _loads(item["content"])
    return item


# --- dead letters ----------------------------------------------------------------------------

_DEAD_LETTER_SELECT: Final = (
    "SELECT d.id, d.notification_id, d.channel, d.address, d.provider, d.dead_reason, d.last_error, d.attempts, "
    "d.updated_at, n.template_id FROM deliveries d JOIN notifications n ON n.id = d.notification_id"
)


def _dead_letter_clauses(tenant: str, where: DeadLetterFilter) -> tuple[list[str], list[Any]]:
    """WHERE clauses (and their parameters) for the tenant's dead letters that match ``where``."""
    clauses = ["d.tenant = ?", "d.status = 'dead_lettered'"]
    params: list[Any] = [tenant]
    for column, value in (("channel", where.channel), ("provider", where.provider), ("dead_reason", where.reason)):
        if value is not None:
            clauses.append(f"d.{column} = ?")
            params.append(value)
    return clauses, params


def _dead_letter_candidates(conn: sqlite3.Connection, tenant: str, delivery_ids: Iterable[str]) -> list[Any]:
    """(id, notification id, status, channel) of those of ``delivery_ids`` that are the tenant's."""
    return _select_in(
        conn, "SELECT id, notification_id, status, channel FROM deliveries WHERE tenant = ? AND id IN ({}) ORDER BY id", delivery_ids, tenant
    )


def _matching_dead_letters(conn: sqlite3.Connection, tenant: str, where: DeadLetterFilter, limit: int) -> tuple[list[Any], bool]:
    """The oldest ``limit`` matching dead letters as (id, notification id, status, channel), and whether more match."""
    clauses, params = _dead_letter_clauses(tenant, where)
    rows = conn.execute(
        f"SELECT d.id, d.notification_id, d.status, d.channel FROM deliveries d WHERE {' AND '.join(clauses)} ORDER BY d.id LIMIT ?",
        (*params, limit + 1),
    ).fetchall()
    return rows[:limit], len(rows) > limit


def _requeue(conn: sqlite3.Connection, tenant: str, rows: Sequence[Any], actor: str, now: float, changes: _Changes) -> None:
    """Put dead letters (id, notification id, …) back in the queue as if new, noting an audit each."""
    conn.executemany(
        "UPDATE deliveries SET status = 'queued', next_attempt_at = ?, attempts = 0, expires_at = NULL, dead_reason = NULL, "
        "lease_owner = NULL, lease_until = NULL, updated_at = ? WHERE id = ? AND status = 'dead_lettered'",
        [(now, now, row[0]) for row in rows],
    )
    for delivery_id, notification_id, *_rest in rows:
        changes.audits.append(
            (tenant, notification_id, delivery_id, now, actor, "replayed", statuses.DEAD_LETTERED, statuses.QUEUED, f"replayed by {actor}")
        )
        changes.touched.add(notification_id)
