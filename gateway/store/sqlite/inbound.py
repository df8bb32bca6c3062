"""Callbacks, replies and opt-outs."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any, Final

from gateway.store.records import InboundRecord, NewEvent, NewOptOut, NewReply, Page, ReceivedStatus, RefusedCallback
from gateway.store.sqlite.base import OPTED_IN_EVENT, OPTED_OUT_EVENT, StoreBase, dumps, loads, select_in
from gateway.store.sqlite.changes import Changes, event_row, insert_events, insert_history
from gateway.store.sqlite.cursors import decode_seq_cursor, decode_text_cursor, encode_seq_cursor, encode_text_cursor
from gateway.store.sqlite.receipts import reconcile
from gateway.store.stored import OptOutEntry, Reply, StoredInbound


class InboundStore(StoreBase):
    """Provider callbacks kept as they arrived, the replies and opt-outs read from them, and opt-out lookups."""

    async def store_inbound(self, callbacks: Sequence[InboundRecord]) -> None:
        """Keep verified provider callbacks as they arrived, ``received``: to be processed, also after a restart. One write."""
        rows = [
            (
                record.id, record.provider, record.received_at, record.source, record.method, record.target,
                dumps(dict(record.headers)), record.body, "received",
            )
            for record in callbacks
        ]

        def job(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO inbound_requests (id, provider, received_at, source, method, target, headers, body, outcome) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

        await self._write(job)

    async def store_refused(self, refused: RefusedCallback, *, keep: int) -> None:
        """Keep a refused callback's summary, and drop the oldest beyond the newest ``keep``, in one write."""
        row = (refused.id, refused.provider, refused.received_at, refused.source, refused.method, refused.size, refused.sha256, refused.reason)

        def job(conn: sqlite3.Connection) -> None:
            seq = conn.execute(
                "INSERT INTO refused_callbacks (id, provider, received_at, source, method, size, sha256, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            ).lastrowid
            assert seq is not None
            conn.execute("DELETE FROM refused_callbacks WHERE seq <= ?", (seq - keep,))  # seq only grows: a range of the primary key

        await self._write(job)

    async def get_refused(self, request_id: str) -> RefusedCallback | None:
        rows = await self._fetch(f"SELECT {REFUSED_COLUMNS} FROM refused_callbacks WHERE id = ?", (request_id,))
        return RefusedCallback(*rows[0]) if rows else None

    async def pending_inbound(self) -> list[InboundRecord]:
        """Verified callbacks not processed yet (the process stopped in between), oldest first."""
        rows = await self._fetch(f"SELECT {INBOUND_COLUMNS} FROM inbound_requests WHERE outcome = 'received' ORDER BY received_at, id")
        return [inbound_record(row) for row in rows]

    async def reject_inbound(self, request_id: str, reason: str) -> None:
        """Mark a stored callback as failing verification; nothing else changes."""

        def job(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE inbound_requests SET outcome = 'rejected', reason = ? WHERE id = ?", (reason, request_id))

        await self._write(job)

    async def record_inbound(
        self, processed: Sequence[str], replies: Sequence[NewReply], opt_outs: Sequence[NewOptOut] = (), *,
        receipts: Sequence[ReceivedStatus] = (), rejected: Sequence[tuple[str, str]] = (),
    ) -> set[str]:
        """What callbacks said, and that they were read, in one transaction: never marked processed without it.

        Reconcile their ``receipts`` (forward only; held while their message's send is not
        recorded), store ``replies`` (with their ``message.replied`` events), record
        ``opt_outs``, mark ``processed`` ones processed and ``rejected`` ones (id, reason)
        rejected. Returns the tenants whose opt-outs changed.
        """
        now = self.clock.now()

        def job(conn: sqlite3.Connection) -> set[str]:
            changes = Changes()
            reconcile(conn, receipts, now, changes)
            changes.flush(conn, now)
            changed: set[str] = set()
            for reply in replies:
                changed |= store_reply(conn, reply, now)
            for opt_out in opt_outs:
                changed |= store_opt_out(conn, opt_out)
            conn.executemany("UPDATE inbound_requests SET outcome = 'processed' WHERE id = ?", [(i,) for i in processed])
            conn.executemany("UPDATE inbound_requests SET outcome = 'rejected', reason = ? WHERE id = ?", [(why, i) for i, why in rejected])
            return changed

        changed: set[str] = await self._write(job)
        return changed

    async def purge_inbound(self, before: float) -> int:
        """Delete raw callbacks received before ``before``, and receipts held as long for messages never seen; how many callbacks went."""

        def job(conn: sqlite3.Connection) -> int:
            conn.execute("DELETE FROM held_receipts WHERE received_at < ?", (before,))
            refused = conn.execute("DELETE FROM refused_callbacks WHERE received_at < ?", (before,)).rowcount
            return refused + conn.execute("DELETE FROM inbound_requests WHERE received_at < ?", (before,)).rowcount

        purged: int = await self._write(job)
        return purged

    async def get_inbound(self, request_id: str) -> StoredInbound | None:
        """One stored callback and what became of it; None if it is not (or no longer) kept."""
        rows = await self._fetch(f"SELECT {INBOUND_COLUMNS}, outcome, reason FROM inbound_requests WHERE id = ?", (request_id,))
        return StoredInbound(inbound_record(rows[0]), rows[0]["outcome"], rows[0]["reason"]) if rows else None

    async def list_replies(
        self, tenant: str, *, channel: str | None = None, sender: str | None = None, limit: int = 100, cursor: str | None = None,
        mode: str | None = None,
    ) -> Page[Reply]:
        """The tenant's replies, newest first, ``limit`` at a time; a reply has the mode of the message it answers (``live`` if none)."""
        clauses, params = ["tenant = ?"], list[Any]([tenant])
        reply_mode = "COALESCE((SELECT n.mode FROM notifications n WHERE n.id = replies.notification_id), 'live')"
        for column, value in (("channel", channel), ("sender", sender), (reply_mode, mode)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if cursor is not None:
            clauses.append("seq < ?")
            params.append(decode_seq_cursor(cursor))
        sql = f"SELECT * FROM replies WHERE {' AND '.join(clauses)} ORDER BY seq DESC LIMIT ?"
        rows = await self._fetch(sql, (*params, limit + 1))
        return Page([reply_record(row) for row in rows[:limit]], encode_seq_cursor(rows[limit - 1]["seq"]) if len(rows) > limit else None)

    async def list_opt_outs(
        self, tenant: str, *, channel: str | None = None, address: str | None = None, limit: int = 100, cursor: str | None = None
    ) -> Page[OptOutEntry]:
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
        rows = await self._fetch(sql, (*params, limit + 1))
        items = [OptOutEntry(row["channel"], row["address"], row["since"], row["source"]) for row in rows[:limit]]
        last = items[-1] if len(rows) > limit else None
        return Page(items, encode_text_cursor(f"{last.address}\n{last.channel}") if last else None)

    async def add_opt_out(self, tenant: str, channel: str, address: str, source: str) -> bool:
        """Record that ``address`` opted out of the tenant's ``channel`` (with its event); False if it already had."""

        def job(conn: sqlite3.Connection) -> bool:
            return set_opt_out(conn, tenant, channel, address, True, source, self.clock.now())

        added: bool = await self._write(job)
        return added

    async def tenants_with_opt_outs(self) -> set[str]:
        return {row[0] for row in await self._fetch("SELECT DISTINCT tenant FROM opt_outs")}

    async def opted_out(self, tenant: str, targets: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """Those (channel, address) pairs of ``targets`` the tenant's recipients opted out of: one indexed read."""
        wanted = {(channel, opt_out_address(channel, address)): (channel, address) for channel, address in targets}
        addresses = sorted({address for _channel, address in wanted})
        rows = await self._read(
            lambda conn: select_in(conn, "SELECT channel, address FROM opt_outs WHERE tenant = ? AND address IN ({})", addresses, tenant)
        )
        found = {(row[0], row[1]) for row in rows}
        return {wanted[key] for key in found & wanted.keys()}


INBOUND_COLUMNS: Final = "id, provider, received_at, source, method, target, headers, body"  # what inbound_record reads
REFUSED_COLUMNS: Final = "id, provider, received_at, source, method, size, sha256, reason"  # RefusedCallback's fields, in order


def inbound_record(row: sqlite3.Row) -> InboundRecord:
    """A callback from the columns :data:`INBOUND_COLUMNS` names."""
    return InboundRecord(
        id=row["id"], provider=row["provider"], received_at=row["received_at"], source=row["source"], method=row["method"],
        target=row["target"], headers=loads(row["headers"]) or {}, body=bytes(row["body"]),
    )


def reply_record(row: sqlite3.Row) -> Reply:
    return Reply(
        channel=row["channel"], sender=row["sender"], body=row["body"], provider=row["provider"],
        provider_message_id=row["provider_message_id"], in_reply_to=row["in_reply_to"], notification_id=row["notification_id"],
        delivery_id=row["delivery_id"], received_at=row["received_at"], detail=loads(row["detail"]) or {},
    )


def store_reply(conn: sqlite3.Connection, reply: NewReply, now: float) -> set[str]:
    """Insert a reply once per tenant it belongs to, with its event and opt-out change; the tenants opted in or out."""
    link = delivery_of(conn, reply.provider, reply.in_reply_to)
    tenants = [link[2]] if link is not None and link[2] in reply.tenants else sent_to(conn, reply.tenants, reply.sender, reply.provider)
    delivery_id, notification_id = (link[0], link[1]) if link is not None else (None, None)
    changed: set[str] = set()
    owners: list[str | None] = list(tenants) or [None]  # no tenant found: kept, but nobody's
    for tenant in owners:
        inserted = conn.execute(
            "INSERT OR IGNORE INTO replies (tenant, provider, channel, sender, body, provider_message_id, in_reply_to, notification_id, "
            "delivery_id, request_id, received_at, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                tenant, reply.provider, reply.channel, reply.sender, reply.body, reply.provider_message_id, reply.in_reply_to,
                notification_id, delivery_id, reply.request_id, reply.received_at, dumps(dict(reply.detail)) if reply.detail else None,
            ),
        ).rowcount
        if tenant is None or not inserted:
            continue  # nobody's, or a vendor's retry of a reply already stored
        data = {
            "channel": reply.channel, "from": reply.sender, "body": reply.body, "provider": reply.provider,
            "provider_message_id": reply.provider_message_id, "notification_id": notification_id, "delivery_id": delivery_id,
        }
        event = NewEvent("message.replied", notification_id or reply.sender, reply.received_at, data, tenant)
        insert_history(conn, [event_row(event, notification_id=notification_id, delivery_id=delivery_id, actor=f"provider:{reply.provider}")])
        source = f"reply via {reply.provider}: {reply.body.strip()[:40]}"
        if reply.opt is not None and set_opt_out(conn, tenant, reply.channel, reply.sender, reply.opt == "out", source, now):
            changed.add(tenant)
    return changed


def store_opt_out(conn: sqlite3.Connection, opt_out: NewOptOut) -> set[str]:
    """Record a vendor's opt-out (or opt-in) for each tenant it belongs to; the tenants whose opt-outs changed."""
    link = delivery_of(conn, opt_out.provider, opt_out.about)
    if link is not None and link[2] in opt_out.tenants:
        tenants = [link[2]]
    else:
        tenants = sent_to(conn, opt_out.tenants, opt_out.address, opt_out.provider)
    source = f"{opt_out.provider}: {opt_out.reason or ('opted out' if opt_out.opted_out else 'opted in')}"[:200]
    return {
        tenant for tenant in tenants
        if set_opt_out(conn, tenant, opt_out.channel, opt_out.address, opt_out.opted_out, source, opt_out.at)
    }


def delivery_of(conn: sqlite3.Connection, provider: str, message_id: str | None) -> tuple[str, str, str] | None:
    """(delivery id, notification id, tenant) of the provider's message ``message_id``, when there is one."""
    if message_id is None:
        return None
    row = conn.execute(
        "SELECT id, notification_id, tenant FROM deliveries WHERE provider = ? AND provider_message_id = ?", (provider, message_id)
    ).fetchone()
    return (row[0], row[1], row[2]) if row is not None else None


def sent_to(conn: sqlite3.Connection, tenants: Sequence[str], address: str, provider: str) -> list[str]:
    """The tenant owning the instance (the only one of ``tenants``), else those that have sent to ``address`` through it."""
    if len(tenants) == 1:
        return list(tenants)
    rows = select_in(
        conn, "SELECT DISTINCT tenant FROM deliveries WHERE address = ? AND provider = ? AND tenant IN ({})", tenants, address, provider
    )
    return sorted(row[0] for row in rows)


def opt_out_address(channel: str, address: str) -> str:
    """An address as opt-outs keep it: an email address in lower case (vendors report them in any case)."""
    address = address.strip()
    return address.lower() if channel == "email" else address


def set_opt_out(conn: sqlite3.Connection, tenant: str, channel: str, address: str, out: bool, source: str, at: float) -> bool:
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
        insert_events(conn, [NewEvent(OPTED_OUT_EVENT if out else OPTED_IN_EVENT, address, at, data, tenant)])
    return changed
