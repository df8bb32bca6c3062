"""The outbox: accepting notifications with their idempotency record, claiming due deliveries under a lease, releasing them."""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Iterable, Sequence
from typing import Any, Final

import orjson

from gateway import lifecycle, statuses
from gateway.store.records import ERASED, PRIORITY_RANK, Acceptance, ClaimedDelivery, IdempotencyClaim, NewNotification, QuotaCharge, StoredResponse
from gateway.store.sqlite.base import DISPATCHER, FALLBACK, LIVE, NEVER, StoreBase, dumps, loads, select_in
from gateway.store.sqlite.changes import ACCEPTED, Changes, activate_overdue_fallbacks, dead_letter_expired, has_fallback, insert_history
from gateway.store.sqlite.contacts import CONTACT_DELETED, skip_deliveries
from gateway.store.sqlite.inbound import opt_out_address
from gateway.store.sqlite.quotas import charge_quota


class Outbox(StoreBase):
    """Accepting notifications and claiming their deliveries."""

    async def find_response(self, tenant: str, mode: str, key: str) -> StoredResponse | None:
        """What an earlier request in this mode with this idempotency key answered, if there was one."""
        rows = await self._fetch(
            "SELECT fingerprint, status_code, response FROM idempotency_keys WHERE tenant = ? AND mode = ? AND key = ?", (tenant, mode, key)
        )
        return StoredResponse(rows[0][0], rows[0][1], bytes(rows[0][2])) if rows else None

    async def purge_idempotency_keys(self, before: float) -> int:
        """Delete idempotency records made before ``before``; how many went."""

        def job(conn: sqlite3.Connection) -> int:
            return conn.execute("DELETE FROM idempotency_keys WHERE created_at < ?", (before,)).rowcount

        purged: int = await self._write(job)
        return purged

    async def accept(
        self,
        notifications: Sequence[NewNotification],
        *,
        tenant: str,
        idempotency: IdempotencyClaim | None,
        status: int,
        body: bytes,
        quota: QuotaCharge | None = None,
    ) -> Acceptance:
        """Persist notifications, deliveries, their first lines of history, the idempotency record and the quota spent atomically.

        When the idempotency key was already used, nothing is written and the original
        response comes back (``replayed``), with whether the bodies' fingerprints match.
        """
        now = self.clock.now()

        def job(conn: sqlite3.Connection) -> Acceptance:
            if idempotency is not None:
                row = conn.execute(
                    "SELECT fingerprint, status_code, response FROM idempotency_keys WHERE tenant = ? AND mode = ? AND key = ?",
                    (tenant, idempotency.mode, idempotency.key),
                ).fetchone()
                if row is not None:
                    return Acceptance(row[1], bytes(row[2]), replayed=True, fingerprint_matches=row[0] == idempotency.fingerprint)
            insert_notifications(conn, notifications, now)
            if quota is not None:
                charge_quota(conn, quota)
            if idempotency is not None:
                conn.execute(
                    "INSERT INTO idempotency_keys (tenant, mode, key, fingerprint, status_code, response, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (tenant, idempotency.mode, idempotency.key, idempotency.fingerprint, status, body, now),
                )
            return Acceptance(status, body, replayed=False)

        result: Acceptance = await self._write(job)
        return result

    async def claim_due(
        self, channel: str, *, limit: int, owner: str, lease_seconds: float, holding: Collection[str] = (),
        mode: str | None = None, after_tenant: str | None = None, paused: Collection[str] = (),
    ) -> list[ClaimedDelivery]:
        """Reserve up to ``limit`` due deliveries of ``channel`` for ``owner``: tenants in turn, each's highest priority first.

        A delivery whose lease expired (its worker died) is due again and is reclaimed, but never
        one of ``holding``: those the claimer is still working on, its send over but its outcome
        not recorded yet. Reclaiming one of those would send it a second time. Only ``mode``'s
        deliveries (both modes when None); none of the ``paused`` tenants'. See :func:`due_rows`
        for the turns.
        """
        now = self.clock.now()
        held = orjson.dumps(sorted(holding)).decode()
        modes = (mode,) if mode is not None else MODES

        def job(conn: sqlite3.Connection) -> list[ClaimedDelivery]:
            changes = Changes()
            activate_overdue_fallbacks(conn, channel, now, changes)
            rows = due_rows(conn, channel, modes, now, held, limit, after_tenant, paused)
            expired = [row for row in rows if row[13] is not None and row[13] <= now]
            rows = [row for row in rows if row[13] is None or row[13] > now]
            dead_letter_expired(conn, [(row[0], row[1], row[2], row[8]) for row in expired], now, changes)
            refused = refuse_opted_out(conn, rows, now, changes) | skip_erased(conn, rows, now)
            rows = [row for row in rows if row[0] not in refused]
            conn.executemany(
                "UPDATE deliveries SET status = 'sending', attempts = attempts + 1, lease_owner = ?, "
                "lease_until = ?, updated_at = ? WHERE id = ?",
                [(owner, now + lease_seconds, now, row[0]) for row in rows],
            )
            # A message with a delivery on its way is sending, whatever its others are (statuses.aggregate): no need to read them.
            conn.executemany(
                "UPDATE notifications SET status = 'sending', updated_at = ? WHERE id = ? AND status != 'sending'",
                [(now, notification_id) for notification_id in dict.fromkeys(row[1] for row in rows if row[8] == statuses.QUEUED)],
            )
            for row in rows:  # the claim itself is no line of history: its attempt records it
                if row[9] is not None and row[8] != statuses.QUEUED:
                    lost = lifecycle.step(lifecycle.Delivery(row[8]), lifecycle.LeaseLost())
                    changes.apply(lost, row[2], row[1], row[0], now, DISPATCHER, strategy="")
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
                    metadata=loads(row[12]) or {},
                    reclaimed=row[8] == statuses.SENDING and row[9] is not None,
                    expires_at=row[13],
                    provider=row[15],
                )
                for row in rows
            ]

        claimed: list[ClaimedDelivery] = await self._write(job)
        return claimed

    async def release(self, delivery_ids: Iterable[str], owner: str) -> None:
        """Give back leases without an attempt (shutdown): the deliveries are due again at once."""
        now = self.clock.now()
        params = [(now, now, delivery_id, owner) for delivery_id in delivery_ids]
        await self._write(lambda conn: conn.executemany(RELEASE, params))

    async def hold(self, delivery_ids: Sequence[str], owner: str, reason: str) -> None:
        """Give back leases of deliveries held unsent (their tenant was suspended), each with its line of history; the claims uncounted."""
        now = self.clock.now()

        def job(conn: sqlite3.Connection) -> None:
            changes = Changes()
            found = select_in(
                conn, "SELECT id, notification_id, tenant, status, channel FROM deliveries WHERE lease_owner = ? AND id IN ({})", delivery_ids, owner
            )
            updates = []
            for delivery_id, notification_id, tenant, status, channel in found:
                held = lifecycle.step(lifecycle.Delivery(status), lifecycle.Held(reason))
                changes.apply(held, tenant, notification_id, delivery_id, now, DISPATCHER, strategy="")
                updates.append((held.status, now, now, delivery_id, owner))
            conn.executemany(f"UPDATE deliveries SET status = ?, {RELEASED}", updates)
            changes.flush(conn, now)

        await self._write(job)


TEST: Final = "test"
MODES: Final = ("live", TEST)
RELEASED: Final = f"lease_owner = NULL, lease_until = NULL, next_attempt_at = ?, attempts = attempts - 1, updated_at = ? WHERE id = ? AND lease_owner = ? AND {LIVE}"
"""Given back unattempted: due again at ``next_attempt_at``, the claim's attempt uncounted."""
RELEASE: Final = f"UPDATE deliveries SET {RELEASED}"
CLAIM_COLUMNS: Final = (
    "d.id, d.notification_id, d.tenant, d.channel, d.address, d.mode, d.attempts, d.content, "
    "d.status, d.lease_until, n.recipient, n.template_id, n.metadata, d.expires_at, d.position, d.provider, n.strategy"
)


def due_rows(
    conn: sqlite3.Connection, channel: str, modes: Sequence[str], now: float, held: str, limit: int,
    after_tenant: str | None, paused: Collection[str],
) -> list[Any]:
    """Up to ``limit`` due rows (:data:`CLAIM_COLUMNS`) of ``channel``, one tenant's at a time in turn.

    A channel's rate is shared fairly: each tenant with due work gives one delivery per turn
    (its highest priority, then its longest due), tenants in name order starting after
    ``after_tenant`` (the last one served, which the claimer carries from claim to claim), so a
    tenant's backlog never holds up another tenant's first message by more than one turn. Each
    tenant's rows are read lazily from an index, so a backlog of millions costs what is taken.
    """
    cursors = []
    for mode in modes:
        tenants = [tenant for (tenant,) in conn.execute(TENANTS_WITH_WORK, (channel, mode)) if tenant not in paused]
        for tenant in tenants:
            cursors.append((tenant, mode, conn.execute(TENANT_DUE, (channel, mode, tenant, now, now, held, limit))))
    cursors.sort(key=lambda unit: (after_tenant is not None and unit[0] <= after_tenant, unit[0], unit[1]))
    picked: list[Any] = []
    turn = cursors
    while turn and len(picked) < limit:
        still = []
        for unit in turn:
            if len(picked) == limit:
                break
            row = unit[2].fetchone()
            if row is not None:
                picked.append(row)
                still.append(unit)
        turn = still
    for unit in cursors:
        unit[2].close()
    return picked


# The distinct tenants with queued work on a channel in a mode: one index seek each, however long their queues.
TENANTS_WITH_WORK: Final = (
    "WITH RECURSIVE t(tenant) AS ("
    f"SELECT (SELECT MIN(tenant) FROM deliveries WHERE channel = ?1 AND mode = ?2 AND {LIVE}) "
    f"UNION ALL SELECT (SELECT MIN(tenant) FROM deliveries WHERE channel = ?1 AND mode = ?2 AND {LIVE} AND tenant > t.tenant) "
    "FROM t WHERE t.tenant IS NOT NULL) SELECT tenant FROM t WHERE tenant IS NOT NULL"
)
TENANT_DUE: Final = (
    f"SELECT {CLAIM_COLUMNS} FROM deliveries d JOIN notifications n ON n.id = d.notification_id "
    f"WHERE d.channel = ? AND d.mode = ? AND d.tenant = ? AND d.{LIVE} AND d.next_attempt_at <= ? "
    "AND (d.lease_until IS NULL OR d.lease_until <= ?) AND d.id NOT IN (SELECT value FROM json_each(?)) "
    "ORDER BY d.priority_rank, d.next_attempt_at LIMIT ?"
)


def skip_erased(conn: sqlite3.Connection, rows: Sequence[Any], now: float) -> set[str]:
    """Skip the claimed rows whose address was erased (their contact was deleted while they waited for a retry); their ids."""
    erased = [(row[0], row[1], row[2], row[8], row[16]) for row in rows if row[4] == ERASED]
    skip_deliveries(conn, erased, CONTACT_DELETED, now)
    return {row[0] for row in erased}


def refuse_opted_out(conn: sqlite3.Connection, rows: Sequence[Any], now: float, changes: Changes) -> set[str]:
    """Fail the claimed rows whose recipient opted out of their channel since they were accepted; their ids.

    Accepting already refuses an address that opted out; this catches the opt-out that came
    while the message waited (a scheduled ``send_at``, a long queue, a retry).
    """
    if not rows or conn.execute("SELECT 1 FROM opt_outs LIMIT 1").fetchone() is None:
        return set()  # the usual case: nobody ever opted out
    by_tenant: dict[str, list[Any]] = {}
    for row in rows:
        by_tenant.setdefault(row[2], []).append(row)
    updates: list[tuple[Any, ...]] = []
    for tenant, mine in by_tenant.items():
        addresses = (opt_out_address(row[3], row[4]) for row in mine)
        found = {(r[0], r[1]) for r in select_in(conn, "SELECT channel, address FROM opt_outs WHERE tenant = ? AND address IN ({})", addresses, tenant)}
        for row in mine:
            delivery_id, notification_id, _tenant, channel, address = row[:5]
            if (channel, opt_out_address(channel, address)) not in found:
                continue
            delivery = lifecycle.Delivery(row[8], fallback_waiting=has_fallback(conn, notification_id, row[14], row[16]))
            refused = lifecycle.step(delivery, lifecycle.OptedOut(channel))
            updates.append((refused.status, refused.dead_reason, refused.error, now, delivery_id))
            changes.apply(refused, tenant, notification_id, delivery_id, now, DISPATCHER, strategy=row[16])
    conn.executemany(
        "UPDATE deliveries SET status = ?, dead_reason = ?, last_error = ?, lease_owner = NULL, lease_until = NULL, updated_at = ? WHERE id = ?",
        updates,
    )
    return {update[-1] for update in updates}


def insert_notifications(conn: sqlite3.Connection, notifications: Sequence[NewNotification], now: float) -> None:
    conn.executemany(
        "INSERT INTO notifications (id, tenant, status, mode, priority, strategy, template_id, recipient, channels, "
        "metadata, idempotency_key, created_by, created_at, updated_at, fallback_after, expires_at, contact_id, category, severity, locale, template_version, template_language) "
        "VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                n.id, n.tenant, n.mode, n.priority, n.strategy, n.template_id, dumps(n.recipient), dumps(list(n.channels)),
                dumps(n.metadata) if n.metadata else None, n.idempotency_key, n.created_by, now, now, n.fallback_after, n.expires_at,
                n.contact_id, n.category, n.severity, n.locale, n.template_version, n.template_language,
            )
            for n in notifications
        ],
    )
    conn.executemany(
        "INSERT INTO deliveries (id, notification_id, tenant, channel, position, address, mode, priority_rank, content, "
        "status, next_attempt_at, created_at, updated_at, expires_at, simulated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                d.id, n.id, n.tenant, d.channel, d.position, d.address, n.mode, PRIORITY_RANK[n.priority],
                dumps(d.content), *initial_state(n, d.position, now), now, now, n.expires_at,
                int(n.mode == TEST),  # a test key's deliveries only ever go to the sandbox: simulated from the start
            )
            for n in notifications
            for d in n.deliveries
        ],
    )
    changes = Changes()
    for n in notifications:
        entry = lifecycle.Entry(ACCEPTED, None, statuses.QUEUED, f"channels: {', '.join(n.channels)}", "message.queued")
        changes.note(n.tenant, n.id, None, now, n.created_by, entry)
    insert_history(conn, changes.history)
    skip_at_once(conn, notifications, now)


def skip_at_once(conn: sqlite3.Connection, notifications: Sequence[NewNotification], now: float) -> None:
    """Skip the deliveries accepted with a ``skip_reason`` (a contact's choice, or no address), each with its line of history.

    Their notifications roll up (all skipped: ``skipped``), and with fallback the next channel
    starts at once instead of waiting for one that will never be sent.
    """
    skipped: dict[str, list[tuple[str, str, str, str, str]]] = {}
    for n in notifications:
        for position, d in enumerate(n.deliveries):
            if d.skip_reason is not None:
                status = initial_state(n, position, now)[0]
                skipped.setdefault(d.skip_reason, []).append((d.id, n.id, n.tenant, status, n.strategy))
    for reason, rows in skipped.items():
        skip_deliveries(conn, rows, reason, now)


def initial_state(n: NewNotification, position: int, now: float) -> tuple[str, float]:
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
