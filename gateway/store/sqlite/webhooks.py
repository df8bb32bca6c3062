"""Event webhooks: fanning events out to endpoints, claiming and recording deliveries, endpoint health, replays."""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Iterable, Sequence
from typing import Any, Final

from gateway import ids
from gateway.clock import isoformat
from gateway.store.records import ClaimedWebhook, EventHead, Page, WebhookEndpointState, WebhookResult, WebhookTarget
from gateway.store.sqlite.base import StoreBase, select_in
from gateway.store.sqlite.cursors import decode_cursor, encode_cursor
from gateway.store.sqlite.reads import EVENT_COLUMNS, event_record
from gateway.store.stored import WebhookDelivery

LANE_HEADS: Final = (
    "SELECT w.tenant, w.endpoint, w.event_seq, w.next_attempt_at, w.lease_until FROM webhook_deliveries w "
    "JOIN (SELECT tenant, endpoint, MIN(event_seq) AS seq FROM webhook_deliveries WHERE status = 'pending' GROUP BY tenant, endpoint) h "
    "ON w.tenant = h.tenant AND w.endpoint = h.endpoint AND w.event_seq = h.seq AND w.status = 'pending'"
)
"""The oldest pending delivery of each endpoint: the head of its lane, which the rest wait behind."""


class WebhookStore(StoreBase):
    """Event webhooks: fan-out, deliveries, endpoint health."""

    async def events_to_fan_out(self, *, after: int | None = None, limit: int) -> list[EventHead]:
        """Events after ``after`` (None: the stored cursor), oldest first: read-only, so an idle worker writes nothing.

        Only what choosing endpoints needs: a notification's own event has its payload built
        when it is sent, not here.
        """
        since = "(SELECT last_seq FROM webhook_fanout)" if after is None else "?"
        rows = await self._fetch(
            f"SELECT e.seq, e.event_id, e.tenant, e.event_type, e.at FROM history e WHERE e.seq > {since} AND e.event_type IS NOT NULL "
            "ORDER BY e.seq LIMIT ?",
            (limit,) if after is None else (after, limit),
        )
        return [EventHead(seq, event_id or ids.derived_id(ids.EVENT, at, seq, self._salt), tenant, type_) for seq, event_id, tenant, type_, at in rows]

    async def fan_out_cursor(self) -> int:
        rows = await self._fetch("SELECT last_seq FROM webhook_fanout")
        return int(rows[0][0])

    async def keep_fan_out_cursor(self, through_seq: int) -> int:
        """Move the cursor forward to ``through_seq``, adding nothing; the cursor as stored."""

        def job(conn: sqlite3.Connection) -> int:
            conn.execute("UPDATE webhook_fanout SET last_seq = ? WHERE last_seq < ?", (through_seq, through_seq))  # no change, no commit noted
            (cursor,) = conn.execute("SELECT last_seq FROM webhook_fanout").fetchone()
            return int(cursor)

        kept: int = await self._write(job)
        return kept

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
        """When the earliest endpoint's next pending delivery is due (its lease's end if it is out), or None.

        Only the head of each endpoint's queue counts: the ones behind it wait for it.
        """
        rows = await self._fetch(f"SELECT MIN(MAX(next_attempt_at, COALESCE(lease_until, 0))) FROM ({LANE_HEADS})")
        return rows[0][0] if rows else None

    async def claim_webhooks(
        self, *, limit: int, lease_seconds: float, per_endpoint: int = 20, busy: Collection[tuple[str, str]] = ()
    ) -> list[ClaimedWebhook]:
        """Reserve due webhook deliveries, each endpoint's in creation order, with their events.

        An endpoint gives the deliveries at the front of its queue that are due and not out on
        a lease, up to ``per_endpoint``: none while its oldest pending one waits for a retry or
        is being sent. ``busy`` endpoints (being sent to) give none. Endpoints whose oldest
        event is oldest go first, up to ``limit`` deliveries in all.
        """
        now = self.clock.now()

        def job(conn: sqlite3.Connection) -> list[ClaimedWebhook]:
            heads = conn.execute(
                f"SELECT tenant, endpoint FROM ({LANE_HEADS}) WHERE next_attempt_at <= ? AND (lease_until IS NULL OR lease_until <= ?) "
                "ORDER BY event_seq",
                (now, now),
            ).fetchall()
            rows: list[Any] = []
            for tenant, endpoint in heads:
                if (tenant, endpoint) in busy:
                    continue
                if len(rows) >= limit:
                    break
                rows += due_prefix(conn, tenant, endpoint, min(per_endpoint, limit - len(rows)), now)
            conn.executemany(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, lease_until = ?, updated_at = ? WHERE id = ?",
                [(now + lease_seconds, now, row[0]) for row in rows],
            )
            return [ClaimedWebhook(r[0], r[1], r[2], r[3] + 1, event_record(r[6:], self._salt)) for r in rows]

        claimed: list[ClaimedWebhook] = await self._write(job)
        return claimed

    async def claim_lane_webhooks(
        self, tenant: str, endpoint: str, *, held: Collection[str], limit: int, lease_seconds: float
    ) -> list[ClaimedWebhook]:
        """Lease the endpoint's next due deliveries for the lane that holds ``held`` (leased, not recorded yet).

        In creation order, passing over ``held``, up to ``limit`` and up to the first that is
        not due or is leased by anyone else, as :meth:`claim_webhooks` takes them from an
        endpoint whose lane is not running.
        """
        now = self.clock.now()

        def job(conn: sqlite3.Connection) -> list[ClaimedWebhook]:
            rows = conn.execute(
                "SELECT id, next_attempt_at, lease_until FROM webhook_deliveries "
                "WHERE tenant = ? AND endpoint = ? AND status = 'pending' ORDER BY event_seq LIMIT ?",
                (tenant, endpoint, limit + len(held)),
            ).fetchall()
            taken: list[str] = []
            for delivery_id, next_attempt_at, lease_until in rows:
                if delivery_id in held:
                    continue
                if len(taken) >= limit or next_attempt_at > now or (lease_until is not None and lease_until > now):
                    break
                taken.append(delivery_id)
            return lease(conn, taken, now, lease_seconds, self._salt)

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
            for (tenant, endpoint), (url, reason) in track_endpoint_health(conn, results, now).items():
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
        self, tenant: str, *, status: str | None = None, endpoint: str | None = None, limit: int = 100, cursor: str | None = None,
        mode: str | None = None,
    ) -> Page[WebhookDelivery]:
        """The tenant's webhook deliveries, newest first, with the type of their event, ``limit`` at a time."""
        clauses, params = ["w.tenant = ?"], list[Any]([tenant])
        for column, value in (("w.status", status), ("w.endpoint", endpoint), (WEBHOOK_MODE, mode)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if cursor is not None:
            clauses.append("w.id < ?")
            params.append(decode_cursor(cursor, ids.WEBHOOK))
        sql = (
            "SELECT w.*, e.event_type AS type FROM webhook_deliveries w JOIN history e ON e.seq = w.event_seq "
            f"WHERE {' AND '.join(clauses)} ORDER BY w.id DESC LIMIT ?"
        )
        rows = await self._fetch(sql, (*params, limit + 1))
        items = [webhook_delivery_record(row) for row in rows[:limit]]
        return Page(items, encode_cursor(items[-1].id) if len(rows) > limit else None)

    async def webhook_delivery_status(self, tenant: str, delivery_id: str, *, mode: str | None = None) -> str | None:
        """The status of one of the tenant's webhook deliveries (of ``mode``, when given); None if it has no such delivery."""
        rows = await self._fetch(f"SELECT status, {WEBHOOK_MODE} FROM webhook_deliveries w WHERE id = ? AND tenant = ?", (delivery_id, tenant))
        return str(rows[0][0]) if rows and mode in (None, rows[0][1]) else None

    async def replay_webhooks(
        self, tenant: str, *, delivery_ids: Sequence[str] | None = None, endpoint: str | None = None, since: float | None = None,
        mode: str | None = None,
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
            if mode is not None:
                where.append(f"{WEBHOOK_MODE} = ?")
                params.append(mode)
            rows = conn.execute(f"SELECT id, endpoint FROM webhook_deliveries w WHERE {' AND '.join(where)} ORDER BY event_seq", params).fetchall()
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


WEBHOOK_MODE: Final = (
    "COALESCE((SELECT n.mode FROM history h JOIN notifications n ON n.id = h.notification_id WHERE h.seq = w.event_seq), 'live')"
)
"""The mode of webhook delivery ``w``: its event's message's, or ``live`` for events about no message."""


def due_prefix(conn: sqlite3.Connection, tenant: str, endpoint: str, limit: int, now: float) -> list[Any]:
    """The endpoint's oldest pending deliveries, up to the first that is not due or is out on a lease."""
    rows = conn.execute(
        f"SELECT w.id, w.tenant, w.endpoint, w.attempts, w.next_attempt_at, w.lease_until, {EVENT_COLUMNS} "
        "FROM webhook_deliveries w JOIN history e ON e.seq = w.event_seq "
        "WHERE w.tenant = ? AND w.endpoint = ? AND w.status = 'pending' ORDER BY w.event_seq LIMIT ?",
        (tenant, endpoint, limit),
    ).fetchall()
    prefix: list[Any] = []
    for row in rows:
        if row[4] > now or (row[5] is not None and row[5] > now):
            break
        prefix.append(row)
    return prefix


def webhook_delivery_record(row: sqlite3.Row) -> WebhookDelivery:
    """A ``webhook_deliveries`` row joined with its event's ``type``."""
    return WebhookDelivery(
        id=row["id"], event_id=row["event_id"], event_type=row["type"], endpoint=row["endpoint"], status=row["status"],
        attempt_count=row["attempts"], last_status=row["last_status"], last_error=row["last_error"],
        next_attempt_at=row["next_attempt_at"] if row["status"] == "pending" else None,
        created_at=row["created_at"], updated_at=row["updated_at"],
    )


def track_endpoint_health(conn: sqlite3.Connection, results: Sequence[WebhookResult], now: float) -> dict[tuple[str, str], tuple[str, str]]:
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


def lease(conn: sqlite3.Connection, delivery_ids: Sequence[str], now: float, lease_seconds: float, salt: bytes) -> list[ClaimedWebhook]:
    """Lease webhook deliveries (counting an attempt each) and read them with their events, in the order given."""
    conn.executemany(
        "UPDATE webhook_deliveries SET attempts = attempts + 1, lease_until = ?, updated_at = ? WHERE id = ?",
        [(now + lease_seconds, now, delivery_id) for delivery_id in delivery_ids],
    )
    rows = select_in(
        conn, f"SELECT w.id, w.tenant, w.endpoint, w.attempts, {EVENT_COLUMNS} FROM webhook_deliveries w JOIN history e ON e.seq = w.event_seq "
        "WHERE w.id IN ({})", delivery_ids,
    )
    found = {row[0]: ClaimedWebhook(row[0], row[1], row[2], row[3], event_record(row[4:], salt)) for row in rows}
    return [found[delivery_id] for delivery_id in delivery_ids]
