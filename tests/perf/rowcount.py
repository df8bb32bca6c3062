"""``tidings serve`` that counts the rows each SQL statement changes, by verb and table.

Run as ``python -m tests.perf.rowcount serve`` with ``BENCH_ROWCOUNT_FILE`` set: before the
gateway is imported, ``sqlite3.connect`` is wrapped so every connection is a
:class:`CountingConnection`, whose ``execute``/``executemany`` note how far SQLite's
``total_changes`` moved (rows inserted, updated or deleted, trigger and foreign-key actions
included). A daemon thread writes the totals to the file as JSON every 100 ms:
``{"insert": {table: rows}, "update": {...}, "delete": {...}}``. An upsert
(``INSERT … ON CONFLICT DO UPDATE``) counts as an insert; ``executescript`` (migrations) is
not counted. The engine is not changed: this is the stdlib module, observed from outside.

The wrapper costs the writer thread time, so only the row-accounting step runs it; the timed
steps run plain ``tidings serve``.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

ENV = "BENCH_ROWCOUNT_FILE"
_STATEMENT = re.compile(
    r"^\s*(?:WITH\b.*?\)\s*)?(INSERT|REPLACE|UPDATE|DELETE)\b(?:\s+OR\s+\w+)?\s+(?:INTO\s+|FROM\s+)?[\"`\[]?(\w+)",
    re.IGNORECASE | re.DOTALL,
)
_counts: dict[str, dict[str, int]] = {"insert": defaultdict(int), "update": defaultdict(int), "delete": defaultdict(int)}
_kinds: dict[str, tuple[str, str]] = {}  # statement text → (verb, table)
_lock = threading.Lock()


def classify(sql: str) -> tuple[str, str]:
    """(``insert``/``update``/``delete``, table) of a statement; ``other`` for anything else."""
    kind = _kinds.get(sql)
    if kind is None:
        match = _STATEMENT.match(sql)
        if match is None:
            kind = ("other", "?")
        else:
            verb = match.group(1).lower()
            kind = ("insert" if verb == "replace" else verb, match.group(2))
        _kinds[sql] = kind
    return kind


def _note(sql: str, changed: int) -> None:
    verb, table = classify(sql)
    with _lock:
        _counts.setdefault(verb, defaultdict(int))[table] += changed


class CountingConnection(sqlite3.Connection):
    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        before = self.total_changes
        cursor = super().execute(sql, parameters)
        if (changed := self.total_changes - before) > 0:
            _note(sql, changed)
        return cursor

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> sqlite3.Cursor:
        before = self.total_changes
        cursor = super().executemany(sql, parameters)
        if (changed := self.total_changes - before) > 0:
            _note(sql, changed)
        return cursor


def install() -> None:
    plain = sqlite3.connect

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        kwargs.setdefault("factory", CountingConnection)
        conn: sqlite3.Connection = plain(*args, **kwargs)
        return conn

    sqlite3.connect = connect  # type: ignore[assignment]


def _publish(path: str) -> None:
    while True:
        with _lock:
            data = {verb: dict(tables) for verb, tables in _counts.items()}
        tmp = f"{path}.tmp"
        with open(tmp, "w") as out:
            json.dump(data, out)
        os.replace(tmp, path)
        time.sleep(0.1)


def read_counts(path: str | os.PathLike[str]) -> dict[str, dict[str, int]]:
    """The totals the server last wrote (empty before its first write)."""
    try:
        with open(path) as f:
            data: dict[str, dict[str, int]] = json.load(f)
            return data
    except (OSError, ValueError):
        return {}


def main() -> int:
    install()
    threading.Thread(target=_publish, args=(os.environ[ENV],), name="bench-rowcount", daemon=True).start()
    from gateway.cli import main as tidings

    return tidings(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
