"""A store whose storage refuses writes says so in store-neutral words, and knows when writes are kept again."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import replace

import pytest

from gateway.store import NewNotification, SqliteStore, StorageUnavailableError
from tests.gateway.store.test_sqlite import notification


async def cap_pages(store: SqliteStore, extra: int | None) -> None:
    """Let the database file grow by ``extra`` pages at most (None: without limit), as a nearly full disk would."""

    def job(conn: sqlite3.Connection) -> None:
        (pages,) = conn.execute("PRAGMA page_count").fetchone()
        conn.execute(f"PRAGMA max_page_count = {pages + extra if extra is not None else 1_000_000_000}")

    await store._write(job)


async def test_a_write_the_storage_refuses_raises_storage_unavailable_until_one_is_kept_again(fresh_store: SqliteStore) -> None:
    assert fresh_store.writable
    await cap_pages(fresh_store, 0)
    with pytest.raises(StorageUnavailableError) as refused:
        await fresh_store.accept([notification_with_room(200_000)], tenant="acme", idempotency=None, status=202, body=b"{}")
    assert "database or disk is full" in str(refused.value)
    assert fresh_store.is_transient(refused.value), "the outcomes batcher keeps and retries what the store refused"
    assert not fresh_store.writable
    assert not await fresh_store.probe_writes(), "a page-sized probe finds no room either"
    assert not fresh_store.writable

    await cap_pages(fresh_store, None)
    assert await fresh_store.probe_writes()
    assert fresh_store.writable
    await fresh_store.accept([notification_with_room(200_000)], tenant="acme", idempotency=None, status=202, body=b"{}")


def notification_with_room(size: int) -> NewNotification:
    """A notification whose metadata needs ``size`` bytes of new pages."""
    return replace(notification(), metadata={"note": "x" * size})


async def test_a_bad_statement_is_not_a_storage_fault(fresh_store: SqliteStore) -> None:
    with pytest.raises(sqlite3.OperationalError):
        await fresh_store._write(lambda conn: conn.execute("SELECT no_such_column FROM history"))
    assert fresh_store.writable


async def test_probes_asked_for_at_once_make_one_write(fresh_store: SqliteStore) -> None:
    writer = fresh_store._writer
    assert writer is not None
    before = writer.jobs
    assert await asyncio.gather(*(fresh_store.probe_writes() for _ in range(20))) == [True] * 20
    assert writer.jobs == before + 1, "one write for twenty askers"
