"""Recording attempts: each delivery moved on (sent, retried, failed, dead-lettered), refusals that mean an opt-out recorded."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, Final

from gateway import lifecycle
from gateway.store.records import AttemptResult, NewEvent, ReceivedStatus
from gateway.store.sqlite.base import DISPATCHER, StoreBase, select_in
from gateway.store.sqlite.changes import Changes, attempt_columns, has_fallback, insert_events
from gateway.store.sqlite.inbound import set_opt_out
from gateway.store.sqlite.receipts import apply_held_receipts, reconcile


class OutcomeWrites(StoreBase):
    """Attempt results and provider receipts, written together in one transaction."""

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
            changes = Changes()  # one roll-up for the lot: a message sent and delivered in one batch is refreshed once
            changed = write_attempts(conn, results, now, changes)
            changes.write_lines(conn)  # a held receipt that names its delivery is taken once an attempt's line shows the instance tried it
            reconcile(conn, receipts, now, changes)
            apply_held_receipts(conn, results, now, changes)
            changes.flush(conn, now)
            insert_events(conn, events)
            return changed

        changed: set[str] = await self._write(job)
        return changed


SIMULATED: Final = "CASE WHEN mode = 'test' THEN 1 ELSE ? END"
"""A delivery is simulated when the instance its last attempt went to reaches no one; a test key's always is."""


def write_attempts(conn: sqlite3.Connection, results: Sequence[AttemptResult], now: float, changes: Changes) -> set[str]:
    """Record attempts and move their deliveries on; the tenants whose opt-outs a refusal (``opted_out``) changed."""
    current = {
        row[0]: list(row[1:])
        for row in select_in(
            conn,
            "SELECT d.id, d.notification_id, d.tenant, d.status, d.position, n.strategy, d.channel, d.address, d.provider "
            "FROM deliveries d JOIN notifications n ON n.id = d.notification_id WHERE d.id IN ({})",
            (r.delivery_id for r in results),
        )
    }
    retries: list[tuple[Any, ...]] = []
    finals: list[tuple[Any, ...]] = []
    opted_out: set[str] = set()
    for result in results:
        found = current.get(result.delivery_id)
        if found is None:
            continue
        notification_id, tenant, status, position, strategy, channel, address, tried_before = found
        provider = result.provider or tried_before or ""  # "": no instance was ever tried
        happening = result.happening()
        waiting = isinstance(happening, lifecycle.Failed) and has_fallback(conn, notification_id, position, strategy)
        transition = lifecycle.step(lifecycle.Delivery(status, fallback_waiting=waiting), happening)
        if transition.records_opt_out:
            source = f"{provider} refused a send: {result.error}"[:200]
            if set_opt_out(conn, tenant, channel, address, True, source, now):
                opted_out.add(tenant)
        actor = f"provider:{provider}" if provider else DISPATCHER
        changes.apply(transition, tenant, notification_id, result.delivery_id, now, actor, strategy=strategy, attempt=attempt_columns(result, provider))
        if transition.retry_at is not None:
            retries.append((transition.retry_at, provider or None, result.simulated, transition.error, now, result.delivery_id))
        elif transition.status != status:
            finals.append((
                transition.status, provider or None, result.simulated, result.provider_message_id, transition.error, transition.dead_reason, now,
                result.delivery_id,
            ))
            found[2] = transition.status
    conn.executemany(
        f"UPDATE deliveries SET next_attempt_at = ?, lease_owner = NULL, lease_until = NULL, provider = ?, simulated = {SIMULATED}, "
        "last_error = ?, updated_at = ? WHERE id = ?",
        retries,
    )
    conn.executemany(
        f"UPDATE deliveries SET status = ?, provider = ?, simulated = {SIMULATED}, provider_message_id = ?, lease_owner = NULL, "
        "lease_until = NULL, last_error = ?, dead_reason = ?, updated_at = ? WHERE id = ?",
        finals,
    )
    return opted_out
