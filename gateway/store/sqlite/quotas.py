"""Quota usage: each tenant's daily count, fired thresholds and rate level per mode, kept with the acceptances that spend them."""

from __future__ import annotations

import sqlite3
from typing import Final

import orjson

from gateway.store.records import NewEvent, QuotaCharge, QuotaUsage
from gateway.store.sqlite.base import StoreBase
from gateway.store.sqlite.changes import insert_events

THRESHOLD_EVENT: Final = "quota.threshold"


class QuotaStore(StoreBase):
    """Reading the quota state back at start; it is written by :func:`charge_quota`, inside an acceptance."""

    async def quota_usage(self) -> list[QuotaUsage]:
        """Every tenant's quota state, per mode, as last written."""
        rows = await self._fetch("SELECT tenant, mode, day, used, fired, tokens, tokens_at FROM quota_usage ORDER BY tenant, mode")
        return [
            QuotaUsage(tenant, mode, day, used, tuple(float(f) for f in orjson.loads(fired)), tokens, tokens_at)
            for tenant, mode, day, used, fired, tokens, tokens_at in rows
        ]


def charge_quota(conn: sqlite3.Connection, charge: QuotaCharge) -> None:
    """Add ``charge`` to its tenant's day and write a ``quota.threshold`` event for each threshold it reaches first.

    Decided here, on the stored count, inside the acceptance's transaction: a threshold fires
    exactly once per tenant, mode and day, whatever restarts or concurrent acceptances happen.
    """
    row = conn.execute("SELECT day, used, fired FROM quota_usage WHERE tenant = ? AND mode = ?", (charge.tenant, charge.mode)).fetchone()
    same_day = row is not None and row[0] == charge.day
    used = (row[1] if same_day else 0) + charge.count
    fired: list[float] = [float(f) for f in orjson.loads(row[2])] if same_day else []
    reached = [t for t in charge.thresholds if used >= t.count and t.fraction not in fired]
    if reached:
        insert_events(conn, [_threshold_event(charge, t.fraction, used) for t in reached])
        fired += [t.fraction for t in reached]
    state = (charge.day, used, orjson.dumps(sorted(fired)).decode(), charge.tokens, charge.at)
    if row is not None:  # the usual case: the tenant's row exists, and is updated in place
        conn.execute(
            "UPDATE quota_usage SET day = ?, used = ?, fired = ?, tokens = ?, tokens_at = ? WHERE tenant = ? AND mode = ?",
            (*state, charge.tenant, charge.mode),
        )
    else:
        conn.execute(
            "INSERT INTO quota_usage (day, used, fired, tokens, tokens_at, tenant, mode) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (*state, charge.tenant, charge.mode),
        )


def _threshold_event(charge: QuotaCharge, fraction: float, used: int) -> NewEvent:
    data = {"tenant": charge.tenant, "mode": charge.mode, "threshold": fraction, "daily_limit": charge.daily, "used": used, "day": charge.day}
    return NewEvent(THRESHOLD_EVENT, f"quota:{charge.mode}:{charge.day}", charge.at, data, charge.tenant)
