"""Provider receipts reconciled: forward only, matched by message id or by the delivery id a vendor echoes, held until their send is recorded."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any, Final

from gateway import lifecycle, statuses
from gateway.store.records import AttemptResult, ReceivedStatus
from gateway.store.sqlite.base import dumps, loads, select_in
from gateway.store.sqlite.changes import Changes

RECEIPT_COLUMNS: Final = "d.id, d.notification_id, d.tenant, d.status, n.strategy"


def reconcile(conn: sqlite3.Connection, updates: Sequence[ReceivedStatus], now: float, changes: Changes) -> None:
    """Apply receipts in order; hold the ones whose message this store does not know yet.

    A receipt is matched by the provider's message id, else by the delivery id the vendor
    echoed (:func:`found_by_delivery`), which also gives the delivery its message id.
    """
    found: dict[tuple[str, str], list[Any]] = {}
    for provider in {update.provider for update in updates}:
        for row in select_in(
            conn,
            f"SELECT d.provider_message_id, {RECEIPT_COLUMNS} FROM deliveries d "
            "JOIN notifications n ON n.id = d.notification_id WHERE d.provider = ? AND d.provider_message_id IN ({})",
            (update.provider_message_id for update in updates if update.provider == provider),
            provider,
        ):
            found[(provider, row[0])] = list(row[1:])
    found |= found_by_delivery(conn, [u for u in updates if (u.provider, u.provider_message_id) not in found])
    held: list[tuple[Any, ...]] = []
    moves: list[tuple[Any, ...]] = []
    for update in updates:
        row = found.get((update.provider, update.provider_message_id))
        if row is None:
            held.append(
                (update.provider, update.provider_message_id, update.status, update.occurred_at, update.error,
                 dumps(update.detail) if update.detail else None, now, update.delivery_id)
            )
        elif (move := transition(row, update, now, changes)) is not None:
            moves.append(move)
            row[3] = update.status
    conn.executemany(
        "INSERT INTO held_receipts (provider, provider_message_id, status, occurred_at, error, detail, received_at, delivery_id) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        held,
    )
    move_deliveries(conn, moves)


def found_by_delivery(conn: sqlite3.Connection, updates: Sequence[ReceivedStatus]) -> dict[tuple[str, str], list[Any]]:
    """Deliveries of receipts that name our delivery id, keyed like the message-id matches.

    Taken only when an attempt through the same provider instance made the delivery (so an
    instance never reaches another's deliveries) and the delivery has no other message id
    yet: the send timed out after the vendor accepted it, or its answer is still on the way.
    The delivery takes the receipt's message id, so later receipts match it directly.
    """
    found: dict[tuple[str, str], list[Any]] = {}
    hinted = {(u.provider, u.delivery_id): u for u in reversed(updates) if u.delivery_id}  # the first receipt per delivery
    for provider in {provider for provider, _delivery_id in hinted}:
        for row in select_in(
            conn,
            f"SELECT {RECEIPT_COLUMNS}, d.provider_message_id FROM deliveries d JOIN notifications n ON n.id = d.notification_id "
            "WHERE EXISTS (SELECT 1 FROM history a WHERE a.notification_id = d.notification_id AND a.delivery_id = d.id "
            "AND a.attempt IS NOT NULL AND a.provider = ?) AND d.id IN ({})",
            (delivery_id for named, delivery_id in hinted if named == provider),
            provider,
        ):
            update, known = hinted[(provider, row[0])], row[5]
            if known not in (None, update.provider_message_id):
                continue  # it already has another message id: this receipt is about a second send
            found[(provider, update.provider_message_id)] = list(row[:5])
            if known is None:
                conn.execute("UPDATE deliveries SET provider = ?, provider_message_id = ? WHERE id = ?", (provider, update.provider_message_id, row[0]))
    return found


def transition(row: Sequence[Any], update: ReceivedStatus, now: float, changes: Changes) -> tuple[Any, ...] | None:
    """The delivery update a receipt makes (None when it would move the status back), noting its line of history."""
    delivery_id, notification_id, tenant, current, strategy = row
    moved = lifecycle.step(lifecycle.Delivery(current), lifecycle.Receipt(update.status, update.error or describe(update.detail)))
    if moved.entry is None:
        return None
    at = update.occurred_at or now
    changes.apply(moved, tenant, notification_id, delivery_id, at, f"provider:{update.provider}", strategy=strategy)
    return (moved.status, update.error, now, delivery_id)


def move_deliveries(conn: sqlite3.Connection, moves: Sequence[tuple[Any, ...]]) -> None:
    conn.executemany("UPDATE deliveries SET status = ?, last_error = COALESCE(?, last_error), updated_at = ? WHERE id = ?", moves)


def describe(detail: Mapping[str, Any]) -> str | None:
    return ", ".join(f"{key}={value}" for key, value in detail.items()) or None


def apply_held_receipts(conn: sqlite3.Connection, results: Sequence[AttemptResult], now: float, changes: Changes) -> None:
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
        for row in select_in(
            conn, f"SELECT {columns} FROM held_receipts WHERE provider = ? AND provider_message_id IN ({{}})",
            (r.provider_message_id for r in mine if r.provider_message_id is not None and r.status == statuses.SENT), provider,
        ) + select_in(
            conn, f"SELECT {columns} FROM held_receipts WHERE provider = ? AND delivery_id IN ({{}})", (r.delivery_id for r in mine), provider
        ):
            held[row[0]] = row
    if not held:
        return
    rows = [held[seq] for seq in sorted(held)]
    conn.executemany("DELETE FROM held_receipts WHERE seq = ?", [(row[0],) for row in rows])
    reconcile(
        conn,
        [ReceivedStatus(provider, message_id, status, occurred_at, error, loads(detail) or {}, delivery_id)
         for _seq, provider, message_id, status, occurred_at, error, detail, delivery_id in rows],
        now,
        changes,
    )
