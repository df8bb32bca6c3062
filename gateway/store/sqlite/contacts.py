"""Contacts, and erasing a deleted contact's addresses from its tenant's notifications, a batch a write.

A contact belongs to a tenant and a mode (a test key's contacts are not a live key's); its
external id is unique among them. Deleting one forgets its row and notes its addresses in
``contact_erasures`` in the same write; :meth:`ContactStore.erase_contact_batch` then replaces
them by :data:`~gateway.store.records.ERASED` in a bounded number of notifications at a time, as a
background job (a transaction of its own: sends are written between batches), until none holds
them. Statuses, times and lines of history keep their shape; a delivery not sent yet is
skipped. Opt-outs are not touched: a deleted contact must not make a STOP forgotten.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Collection, Iterable, Sequence
from typing import Any, Final

from gateway import ids, lifecycle, statuses
from gateway.store.protocol import ContactLimitError, ExternalIdTakenError, StaleContactError
from gateway.store.records import ERASED, ContactFields, Erasure, Page
from gateway.store.sqlite.base import DISPATCHER, StoreBase, dumps, loads, select_in
from gateway.store.sqlite.changes import Changes
from gateway.store.sqlite.cursors import decode_cursor, encode_cursor
from gateway.store.sqlite.inbound import opt_out_address
from gateway.store.stored import Contact, ContactSaved, OptOutEntry

FIELDS: Final = "external_id, addresses, locale, timezone, channels, categories, metadata"
COLUMNS: Final = f"id, mode, {FIELDS}, created_at, updated_at, version"
"""What :func:`contact_record` reads, in order (the writer's connection gives rows as tuples)."""
CONTACT_DELETED: Final = "contact_deleted"
SKIPPABLE: Final = ", ".join(f"'{status}'" for status in sorted(statuses.SKIPPABLE))
HOLDING: Final = (
    "SELECT DISTINCT notification_id FROM deliveries WHERE tenant = ? AND mode = ? AND address IN ({}) LIMIT ?"
)
"""Notifications of a tenant and mode that sent, or skipped, a delivery to one of the addresses (the index by address)."""


class ContactStore(StoreBase):
    """Contacts of each tenant and mode; erasing deleted ones' addresses."""

    async def save_contact(self, tenant: str, mode: str, fields: ContactFields, *, new_id: str, limit: int) -> ContactSaved:
        """Create the contact, or replace the fields of the one with its external id (id and creation time kept);
        :class:`ContactLimitError` when the tenant's contacts in ``mode`` would pass ``limit``."""
        now = self.clock.now()

        def job(conn: sqlite3.Connection) -> ContactSaved:
            row = None
            if fields.external_id is not None:
                row = conn.execute(
                    "SELECT id, version FROM contacts WHERE tenant = ? AND mode = ? AND external_id = ?", (tenant, mode, fields.external_id)
                ).fetchone()
            if row is None:
                count_contact(conn, tenant, mode, +1, limit)
                conn.execute(
                    f"INSERT INTO contacts (id, tenant, mode, {FIELDS}, version, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?)",
                    (new_id, tenant, mode, *columns(fields), now, now),
                )
                return ContactSaved(read_contact(conn, tenant, mode, new_id), created=True)  # type: ignore[arg-type]
            replace(conn, row[0], fields, now)
            return ContactSaved(read_contact(conn, tenant, mode, row[0]), created=False)  # type: ignore[arg-type]

        saved: ContactSaved = await self._write(job)
        return saved

    async def update_contact(self, tenant: str, mode: str, contact_id: str, fields: ContactFields, *, version: int) -> Contact | None:
        """Replace the contact's fields if it is still at ``version``; None if the tenant has no such contact in ``mode``."""
        now = self.clock.now()

        def job(conn: sqlite3.Connection) -> Contact | None:
            row = conn.execute("SELECT version FROM contacts WHERE id = ? AND tenant = ? AND mode = ?", (contact_id, tenant, mode)).fetchone()
            if row is None:
                return None
            if row[0] != version:
                raise StaleContactError(contact_id)
            if fields.external_id is not None:
                taken = conn.execute(
                    "SELECT 1 FROM contacts WHERE tenant = ? AND mode = ? AND external_id = ? AND id != ?",
                    (tenant, mode, fields.external_id, contact_id),
                ).fetchone()
                if taken is not None:
                    raise ExternalIdTakenError(fields.external_id)
            replace(conn, contact_id, fields, now)
            return read_contact(conn, tenant, mode, contact_id)

        updated: Contact | None = await self._write(job)
        return updated

    async def get_contact(self, tenant: str, mode: str, contact_id: str) -> Contact | None:
        return await self._read(lambda conn: read_contact(conn, tenant, mode, contact_id))

    async def find_contacts(
        self, tenant: str, mode: str, *, contact_ids: Collection[str] = (), external_ids: Collection[str] = ()
    ) -> list[Contact]:
        """The tenant's contacts in ``mode`` among those ids and external ids: one read, by the primary key and the external-id index."""

        def read(conn: sqlite3.Connection) -> list[Contact]:
            rows = select_in(conn, f"SELECT {COLUMNS} FROM contacts WHERE tenant = ? AND mode = ? AND id IN ({{}})", contact_ids, tenant, mode)
            rows += select_in(conn, f"SELECT {COLUMNS} FROM contacts WHERE tenant = ? AND mode = ? AND external_id IN ({{}})", external_ids, tenant, mode)
            return [contact_record(row) for row in rows]

        return await self._read(read)

    async def list_contacts(
        self, tenant: str, mode: str, *, external_id: str | None = None, limit: int, cursor: str | None
    ) -> Page[Contact]:
        """The tenant's contacts in ``mode``, newest first, ``limit`` at a time."""
        clauses, params = ["tenant = ?", "mode = ?"], list[Any]([tenant, mode])
        if cursor is not None:
            clauses.append("id < ?")
            params.append(decode_cursor(cursor, ids.CONTACT))
        if external_id is not None:
            clauses.append("external_id = ?")
            params.append(external_id)
        rows = await self._fetch(f"SELECT {COLUMNS} FROM contacts WHERE {' AND '.join(clauses)} ORDER BY id DESC LIMIT ?", (*params, limit + 1))
        items = [contact_record(row) for row in rows[:limit]]
        return Page(items, encode_cursor(items[-1].id) if len(rows) > limit else None)

    async def delete_contact(self, tenant: str, mode: str, contact_id: str) -> Erasure | None:
        """Forget the contact and note its addresses for erasure, in one write; None if there is no such contact."""
        now = self.clock.now()

        def job(conn: sqlite3.Connection) -> Erasure | None:
            row = conn.execute("SELECT addresses FROM contacts WHERE id = ? AND tenant = ? AND mode = ?", (contact_id, tenant, mode)).fetchone()
            if row is None:
                return None
            addresses = sorted({address for address in loads(row[0]).values() if address != ERASED})
            conn.execute("DELETE FROM contacts WHERE id = ?", (contact_id,))
            count_contact(conn, tenant, mode, -1)
            conn.execute(
                "INSERT OR REPLACE INTO contact_erasures (contact_id, tenant, mode, addresses, created_at) VALUES (?, ?, ?, ?, ?)",
                (contact_id, tenant, mode, dumps(addresses), now),
            )
            return Erasure(contact_id, tenant, mode, addresses)

        erasure: Erasure | None = await self._write(job)
        return erasure

    async def erase_contact_batch(self, erasure: Erasure, *, limit: int) -> int:
        """Erase the addresses from up to ``limit`` notifications that hold them; 0 when none is left (the erasure is then done)."""
        now = self.clock.now()

        def job(conn: sqlite3.Connection) -> int:
            marks = ", ".join("?" * len(erasure.addresses))  # one per recipient field at most: no chunks needed
            holding = conn.execute(HOLDING.format(marks), (erasure.tenant, erasure.mode, *erasure.addresses, limit)) if marks else ()
            found = [row[0] for row in holding]
            if not found:
                finish(conn, erasure)
                return 0
            erase_notifications(conn, found, Scrubber(erasure.addresses), now)
            return len(found)

        erased: int = await self._write(job, background=True)
        return erased

    async def pending_erasures(self) -> list[Erasure]:
        rows = await self._fetch("SELECT contact_id, tenant, mode, addresses FROM contact_erasures ORDER BY created_at, contact_id")
        return [Erasure(row[0], row[1], row[2], loads(row[3])) for row in rows]

    async def opt_outs_of(self, tenant: str, targets: Iterable[tuple[str, str]]) -> list[OptOutEntry]:
        """The tenant's opt-outs among these (channel, address) pairs, by address then channel: one indexed read."""
        wanted = {(channel, opt_out_address(channel, address)) for channel, address in targets}
        addresses = sorted({address for _channel, address in wanted})
        rows = await self._read(
            lambda conn: select_in(
                conn, "SELECT channel, address, since, source FROM opt_outs WHERE tenant = ? AND address IN ({})", addresses, tenant
            )
        )
        found = [OptOutEntry(row[0], row[1], row[2], row[3]) for row in rows if (row[0], row[1]) in wanted]
        return sorted(found, key=lambda entry: (entry.address, entry.channel))


def count_contact(conn: sqlite3.Connection, tenant: str, mode: str, change: int, limit: int | None = None) -> None:
    """Add ``change`` to the tenant's count of contacts in ``mode``; ContactLimitError (nothing changed) if it would pass ``limit``."""
    row = conn.execute("SELECT count FROM contact_counts WHERE tenant = ? AND mode = ?", (tenant, mode)).fetchone()
    count = (row[0] if row is not None else 0) + change
    if limit is not None and count > limit:
        raise ContactLimitError(limit)
    conn.execute(
        "INSERT INTO contact_counts (tenant, mode, count) VALUES (?, ?, ?) ON CONFLICT (tenant, mode) DO UPDATE SET count = excluded.count",
        (tenant, mode, max(count, 0)),
    )


def columns(fields: ContactFields) -> tuple[Any, ...]:
    """The values of :data:`FIELDS`, in order."""
    return (
        fields.external_id, dumps(dict(fields.addresses)), fields.locale, fields.timezone, dumps(dict(fields.channels)),
        dumps(dict(fields.categories)), dumps(dict(fields.metadata)),
    )


def replace(conn: sqlite3.Connection, contact_id: str, fields: ContactFields, now: float) -> None:
    assignments = ", ".join(f"{name} = ?" for name in FIELDS.split(", "))
    conn.execute(
        f"UPDATE contacts SET {assignments}, version = version + 1, updated_at = ? WHERE id = ?", (*columns(fields), now, contact_id)
    )


def read_contact(conn: sqlite3.Connection, tenant: str, mode: str, contact_id: str) -> Contact | None:
    row = conn.execute(f"SELECT {COLUMNS} FROM contacts WHERE id = ? AND tenant = ? AND mode = ?", (contact_id, tenant, mode)).fetchone()
    return contact_record(row) if row is not None else None


def contact_record(row: Sequence[Any]) -> Contact:
    """A contact from the columns :data:`COLUMNS` names."""
    contact_id, mode, external_id, addresses, locale, timezone, channels, categories, metadata, created_at, updated_at, version = row
    fields = ContactFields(
        external_id=external_id, addresses=loads(addresses), locale=locale, timezone=timezone,
        channels=loads(channels), categories=loads(categories), metadata=loads(metadata),
    )
    return Contact(contact_id, mode, fields, created_at, updated_at, version)


class Scrubber:
    """Replaces the addresses wherever they appear in a text (an email address in any case), also inside JSON."""

    def __init__(self, addresses: Sequence[str]) -> None:
        forms = {form for address in addresses for form in (address, dumps(address)[1:-1])}
        self._pattern = re.compile("|".join(re.escape(form) for form in sorted(forms, key=len, reverse=True)), re.IGNORECASE)

    def text(self, value: Any) -> Any:
        """``value`` with the addresses replaced, when it is a text (or JSON text) holding them; else as it was."""
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        return self._pattern.sub(ERASED, value) if isinstance(value, str) else value

    def row(self, values: Sequence[Any]) -> tuple[Any, ...] | None:
        """The values scrubbed, or None when none of them held an address."""
        scrubbed = tuple(self.text(value) for value in values)
        return scrubbed if scrubbed != tuple(values) else None


def erase_notifications(conn: sqlite3.Connection, notification_ids: Sequence[str], scrub: Scrubber, now: float) -> None:
    """Replace the addresses in these notifications, their deliveries and their lines of history; skip what was not sent yet."""
    rewrite(conn, "notifications", "id", ("recipient", "metadata"), "id IN ({})", notification_ids, scrub)
    rewrite(conn, "deliveries", "id", ("address", "content", "last_error"), "notification_id IN ({})", notification_ids, scrub)
    rewrite(conn, "history", "seq", ("reason", "error", "detail", "data"), "notification_id IN ({})", notification_ids, scrub)
    skip_unsent(conn, notification_ids, now)


def rewrite(
    conn: sqlite3.Connection, table: str, key: str, names: Sequence[str], where: str, keys: Sequence[str], scrub: Scrubber, *params: Any
) -> None:
    """Scrub the ``names`` columns of the rows of ``table`` matching ``where`` (``params``, then an ``IN ({})`` over ``keys``),
    writing only the rows that change."""
    rows = select_in(conn, f"SELECT {key}, {', '.join(names)} FROM {table} WHERE {where}", keys, *params)
    updates = [(*scrubbed, row[0]) for row in rows if (scrubbed := scrub.row(tuple(row)[1:])) is not None]
    conn.executemany(f"UPDATE {table} SET {', '.join(f'{name} = ?' for name in names)} WHERE {key} = ?", updates)


def skip_unsent(conn: sqlite3.Connection, notification_ids: Sequence[str], now: float) -> None:
    """Skip (``contact_deleted``) the deliveries of these notifications not sent yet and not held by a sender at this moment.

    One a sender holds finishes its attempt; if it needs another, the claim skips it then (its address reads as erased).
    """
    rows = select_in(
        conn,
        "SELECT d.id, d.notification_id, d.tenant, d.status, n.strategy FROM deliveries d JOIN notifications n ON n.id = d.notification_id "
        f"WHERE d.status IN ({SKIPPABLE}) AND (d.lease_until IS NULL OR d.lease_until <= ?) AND d.notification_id IN ({{}})",
        notification_ids, now,
    )
    skip_deliveries(conn, [(row[0], row[1], row[2], row[3], row[4]) for row in rows], CONTACT_DELETED, now)


def skip_deliveries(conn: sqlite3.Connection, rows: Sequence[tuple[str, str, str, str, str]], reason: str, now: float) -> None:
    """Skip deliveries (id, notification id, tenant, status, strategy) for ``reason``, with their lines, rolling their notifications up."""
    if not rows:
        return
    changes = Changes()
    updates = []
    for delivery_id, notification_id, tenant, status, strategy in rows:
        transition = lifecycle.step(lifecycle.Delivery(status), lifecycle.Skipped(reason))
        if transition.entry is None:
            continue
        updates.append((transition.status, reason, now, delivery_id))
        changes.apply(transition, tenant, notification_id, delivery_id, now, DISPATCHER, strategy=strategy)
    conn.executemany(
        "UPDATE deliveries SET status = ?, skip_reason = ?, lease_owner = NULL, lease_until = NULL, updated_at = ? WHERE id = ?", updates
    )
    changes.flush(conn, now)


def finish(conn: sqlite3.Connection, erasure: Erasure) -> None:
    """The last step of an erasure: the senders of replies in its mode scrubbed, and the erasure forgotten.

    A reply's mode is that of the message it answers; one that answers none is live's.
    """
    rewrite(
        conn, "replies", "seq", ("sender",),
        "tenant = ? AND COALESCE((SELECT mode FROM notifications WHERE id = replies.notification_id), 'live') = ? AND sender IN ({})",
        erasure.addresses, Scrubber(erasure.addresses), erasure.tenant, erasure.mode,
    )
    conn.execute("DELETE FROM contact_erasures WHERE contact_id = ?", (erasure.contact_id,))
