"""How far deliveries have got, read from a running server's SQLite file (read-only).

A delivery is *done* when nothing more will happen to it in these runs: the sandbox reports
``delivered`` on its own (``SANDBOX_DONE``); the webhook plugin has no receipts, so ``sent`` is
where it ends (``WEBHOOK_DONE``). Failures count as done too: the steps check elsewhere that
nothing failed.
"""

from __future__ import annotations

import math
import sqlite3
import time
from pathlib import Path

SANDBOX_DONE = ("delivered", "read", "failed", "bounced", "skipped")
WEBHOOK_DONE = ("sent", *SANDBOX_DONE)
IN_FLIGHT = ("queued", "sending")  # what the dispatcher still has to send (a cheap count: a partial index covers it)


def _connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)


def _marks(values: tuple[str, ...] | list[str]) -> str:
    return ", ".join("?" for _ in values)


def delivery_counts(path: Path, done: tuple[str, ...]) -> tuple[int, int]:
    """(deliveries in the store, deliveries in one of the ``done`` statuses), in one read snapshot."""
    conn = _connect(path)
    try:
        total, finished = conn.execute(f"SELECT count(*), coalesce(sum(status IN ({_marks(done)})), 0) FROM deliveries", done).fetchone()
        return int(total), int(finished)
    finally:
        conn.close()


def in_flight(path: Path) -> int:
    conn = _connect(path)
    try:
        return int(conn.execute(f"SELECT count(*) FROM deliveries WHERE status IN ({_marks(IN_FLIGHT)})", IN_FLIGHT).fetchone()[0])
    finally:
        conn.close()


def done_among(path: Path, delivery_ids: list[str], done: tuple[str, ...]) -> int:
    """How many of ``delivery_ids`` are in a ``done`` status."""
    conn = _connect(path)
    try:
        sql = f"SELECT count(*) FROM deliveries WHERE id IN ({_marks(delivery_ids)}) AND status IN ({_marks(done)})"
        return int(conn.execute(sql, (*delivery_ids, *done)).fetchone()[0])
    finally:
        conn.close()


def all_done(path: Path, done: tuple[str, ...]) -> bool:
    """Every delivery done; checks the cheap in-flight count first, the full count only when that is 0."""
    if in_flight(path):
        return False
    total, finished = delivery_counts(path, done)
    return total == finished


def wait_until_done(path: Path, done: tuple[str, ...], timeout: float, every: float = 0.05) -> float:
    """Seconds until every delivery is done, or NaN after ``timeout``."""
    started = time.perf_counter()
    while not all_done(path, done):
        if time.perf_counter() - started > timeout:
            return math.nan
        time.sleep(every)
    return time.perf_counter() - started
