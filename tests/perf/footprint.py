"""What the store keeps per notification: rows by table and bytes on disk, read beside a running server.

Generic over the schema (it is being reshaped): every table in ``sqlite_master`` is counted, so a
table that appears or disappears needs no change here. Bytes come from SQLite's ``dbstat``
virtual table (pages of each table and of its indexes, WAL included, free pages not), or, where
the bundled SQLite lacks it, from ``(page_count - freelist_count) * page_size`` as one total.

A :class:`Snapshot` is taken before the load and another once every delivery is finished; the
difference divided by the notifications gained is what one notification costs, accept → delivered.
Counting rows gives rows *kept*: a row inserted and deleted in between does not show. The exact
inserts, updates and deletes come from tests.perf.rowcount.
"""

from __future__ import annotations

import math
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.perf.load import README_SEND, run_wrk
from tests.perf.progress import SANDBOX_DONE, wait_until_done
from tests.perf.rowcount import read_counts
from tests.perf.servers import SEND_PATH, tidings_server


def _connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)


@dataclass
class Snapshot:
    rows: dict[str, int] = field(default_factory=dict)  # table → row count
    bytes: dict[str, int] = field(default_factory=dict)  # table (its indexes included) → bytes in pages
    by_table: bool = True  # False: dbstat missing, ``bytes`` holds one total under "*"

    @property
    def notifications(self) -> int:
        return self.rows.get("notifications", 0)


def snapshot(path: Path) -> Snapshot:
    conn = _connect(path)
    try:
        conn.execute("BEGIN")  # one read snapshot for every count
        tables = [name for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        rows = {table: int(conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]) for table in tables}
        try:
            sizes = conn.execute(
                "SELECT coalesce(m.tbl_name, s.name), sum(s.pgsize) FROM dbstat AS s "
                "LEFT JOIN sqlite_master AS m ON m.name = s.name GROUP BY 1").fetchall()
            return Snapshot(rows, {str(table): int(size) for table, size in sizes})
        except sqlite3.OperationalError:  # no dbstat in this SQLite build
            pages = conn.execute("PRAGMA page_count").fetchone()[0] - conn.execute("PRAGMA freelist_count").fetchone()[0]
            return Snapshot(rows, {"*": int(pages * conn.execute("PRAGMA page_size").fetchone()[0])}, by_table=False)
    finally:
        conn.close()


@dataclass
class Footprint:
    """What each notification added between two snapshots."""

    notifications: int
    rows: dict[str, float]  # table → rows gained per notification (only tables that changed)
    bytes: dict[str, float]  # table → bytes gained per notification
    by_table: bool

    @property
    def rows_per_notification(self) -> float:
        return sum(self.rows.values())

    @property
    def bytes_per_notification(self) -> float:
        return sum(self.bytes.values())

    def describe(self) -> str:
        rows = ", ".join(f"{table} {n:.2f}" for table, n in sorted(self.rows.items(), key=lambda kv: -kv[1]))
        size = ", ".join(f"{table} {n:,.0f}" for table, n in sorted(self.bytes.items(), key=lambda kv: -kv[1]) if abs(n) >= 1)
        source = "dbstat, tables with their indexes" if self.by_table else "pages in use; no dbstat"
        return (f"per notification ({self.notifications:,}): rows kept {self.rows_per_notification:.2f} [{rows}]; "
                f"bytes {self.bytes_per_notification:,.0f} ({source}) [{size}]")


def footprint(before: Snapshot, after: Snapshot) -> Footprint:
    gained = after.notifications - before.notifications
    per = max(gained, 1)
    rows = {t: (n - before.rows.get(t, 0)) / per for t, n in after.rows.items() if n != before.rows.get(t, 0)}
    sizes = {t: (n - before.bytes.get(t, 0)) / per for t, n in after.bytes.items() if n != before.bytes.get(t, 0)}
    return Footprint(gained, rows, sizes, after.by_table)


@dataclass
class RowWrites:
    """Rows each SQL verb changed per notification, by table (tests.perf.rowcount), accept → delivered."""

    notifications: int = 0
    per: dict[str, dict[str, float]] = field(default_factory=dict)  # verb → table → rows per notification
    drained: bool = False  # every delivery was done when the counts were read

    def total(self, verb: str) -> float:
        return sum(self.per.get(verb, {}).values())

    @property
    def counted(self) -> bool:
        """Whether the instrumentation saw any write (it would not if the store stopped using sqlite3.connect)."""
        return self.notifications > 0 and self.total("insert") > 0

    def describe(self) -> str:
        parts = []
        for verb in ("insert", "update", "delete"):
            tables = sorted(self.per.get(verb, {}).items(), key=lambda kv: -kv[1])
            parts.append(f"{verb}s {self.total(verb):.2f} [" + ", ".join(f"{t} {n:.2f}" for t, n in tables) + "]")
        done = "" if self.drained else " (NOT all delivered when counted)"
        return f"per notification ({self.notifications:,}){done}: " + "; ".join(parts)


def measure_row_writes(sends: int, connections: int, timeout: float) -> RowWrites:
    """``sends`` README sends by wrk into a counting server; rows written per notification once all are delivered."""
    with tidings_server(counting=True) as server:
        assert server.rowcount_file is not None
        time.sleep(1.0)  # start-up writes settle before the baseline
        before, notes = read_counts(server.rowcount_file), snapshot(server.database).notifications
        run_wrk(server.base_url + SEND_PATH, README_SEND, connections, timeout, responses=sends)
        drained = not math.isnan(wait_until_done(server.database, SANDBOX_DONE, timeout))
        time.sleep(0.5)  # what follows a delivery (the notification's status) commits, and the counts are written out
        after, gained = read_counts(server.rowcount_file), snapshot(server.database).notifications - notes
    per = {
        verb: {table: (n - before.get(verb, {}).get(table, 0)) / max(gained, 1) for table, n in tables.items()
               if n != before.get(verb, {}).get(table, 0)}
        for verb, tables in after.items()
    }
    return RowWrites(gained, per, drained)
