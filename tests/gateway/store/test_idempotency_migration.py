"""The migration that scopes idempotency keys by mode keeps every key, each in the mode of what it made."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gateway.store.migrations import MIGRATIONS, migrate

SCOPED = next(index for index, script in enumerate(MIGRATIONS) if "idempotency_keys_v9" in script)


def test_keys_from_before_keep_their_answers_in_the_mode_of_their_notifications(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "old.sqlite3", isolation_level=None)
    for number, script in enumerate(MIGRATIONS[:SCOPED], start=1):
        conn.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")
    conn.execute(
        "INSERT INTO notifications (id, tenant, status, mode, priority, strategy, recipient, channels, idempotency_key, created_by, created_at, updated_at) "
        "VALUES ('ntf_1', 'acme', 'sent', 'test', 'normal', 'all', '{}', '[]', 'k-test', 'key:x', 1, 1)"
    )
    conn.executemany(
        "INSERT INTO idempotency_keys (tenant, key, fingerprint, status_code, response, created_at) VALUES (?, ?, 'fp', 202, x'7b7d', ?)",
        [("acme", "k-test", 10.0), ("acme", "k-none", 20.0)],
    )
    assert migrate(conn) == len(MIGRATIONS)
    rows = conn.execute("SELECT tenant, mode, key, created_at FROM idempotency_keys ORDER BY key").fetchall()
    assert rows == [("acme", "live", "k-none", 20.0), ("acme", "test", "k-test", 10.0)]
    # The same key may now be used once per mode.
    conn.execute("INSERT INTO idempotency_keys (tenant, mode, key, fingerprint, status_code, response, created_at) VALUES ('acme', 'live', 'k-test', 'fp', 202, x'7b7d', 30)")
