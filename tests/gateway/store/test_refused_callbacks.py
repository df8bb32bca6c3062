"""Refused callbacks as the store keeps them: summaries only, the newest so many, migrated from whole rows."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from gateway.store import RefusedCallback
from gateway.store.migrations import MIGRATIONS, migrate


def refused(n: int, at: float = 1.0) -> RefusedCallback:
    return RefusedCallback(f"whk_{n:04d}", "mail", at, "192.0.2.1", "POST", 10, "ab" * 32, "the signature does not match")


async def test_only_the_newest_are_kept(fresh_store: Any) -> None:
    for n in range(7):
        await fresh_store.store_refused(refused(n), keep=3)
    assert [await fresh_store.get_refused(f"whk_{n:04d}") is not None for n in range(7)] == [False] * 4 + [True] * 3
    assert await fresh_store.get_refused("whk_0006") == refused(6)


async def test_the_retention_purge_takes_refused_callbacks_too(fresh_store: Any) -> None:
    await fresh_store.store_refused(refused(1, at=100.0), keep=10)
    await fresh_store.store_refused(refused(2, at=300.0), keep=10)
    assert await fresh_store.purge_inbound(200.0) == 1
    assert await fresh_store.get_refused("whk_0001") is None and await fresh_store.get_refused("whk_0002") is not None


def test_refusals_kept_whole_before_v9_become_summaries_and_verified_callbacks_stay(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "v8.sqlite3", isolation_level=None)
    for number, script in enumerate(MIGRATIONS[:8], start=1):
        conn.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")
    rows = [
        ("whk_forged", "rejected", "the signature does not match"),
        ("whk_crashed", "rejected", "verification failed in the plugin: KeyError"),
        ("whk_unreadable", "rejected", "could not be parsed: ValueError: no"),
        ("whk_orphan", "rejected", "its provider instance is no longer in policy"),
        ("whk_fine", "processed", None),
    ]
    conn.executemany(
        "INSERT INTO inbound_requests (id, provider, received_at, source, method, target, headers, body, outcome, reason) "
        "VALUES (?, 'mail', 1.0, '192.0.2.1', 'POST', '/api/v1/webhooks/mail', '{}', x'00112233', ?, ?)",
        rows,
    )
    assert migrate(conn) == len(MIGRATIONS)
    summaries = conn.execute("SELECT id, size, sha256, reason FROM refused_callbacks ORDER BY id").fetchall()
    assert summaries == [("whk_crashed", 4, None, "verification failed in the plugin: KeyError"), ("whk_forged", 4, None, "the signature does not match")]
    assert sorted(row[0] for row in conn.execute("SELECT id FROM inbound_requests")) == ["whk_fine", "whk_orphan", "whk_unreadable"]
    conn.close()
