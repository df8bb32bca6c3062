"""Reads see every commit made before them: whatever other reads are doing, and however a caller gave up."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from test_sqlite import notification

from gateway.store import NotificationFilter, SqliteStore
from gateway.store.reader import SnapshotReader
from gateway.store.writer import connect


@pytest.fixture
async def table(tmp_path: Path) -> AsyncIterator[tuple[sqlite3.Connection, SnapshotReader]]:
    """A one-table database: a writing connection, and a reader over the same file."""
    path = tmp_path / "read.sqlite3"
    writer = connect(path, "FULL")
    writer.execute("CREATE TABLE t (x INTEGER)")
    writer.executemany("INSERT INTO t VALUES (?)", [(1,), (2,)])
    reader = SnapshotReader(path)
    reader.start()
    yield writer, reader
    await reader.stop()
    writer.close()


def count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM t").fetchone()[0])


async def test_a_read_holding_its_snapshot_neither_hides_commits_from_other_reads_nor_sees_them_itself(
    table: tuple[sqlite3.Connection, SnapshotReader],
) -> None:
    writer, reader = table
    started, go_on = threading.Event(), threading.Event()

    def long_read(conn: sqlite3.Connection) -> tuple[int, int]:
        rows = conn.execute("SELECT x FROM t")
        rows.fetchone()  # a statement left part-read, as a slow page of a list would be
        started.set()
        go_on.wait(5)
        return rows.fetchone()[0], count(conn)

    held = asyncio.ensure_future(reader.run(long_read))
    await asyncio.to_thread(started.wait, 5)
    writer.execute("INSERT INTO t VALUES (3)")
    assert await reader.run(count) == 3, "a read started after a commit sees it, though another read is part-way through"
    go_on.set()
    assert await held == (2, 2), "the long read sees the one state it started in, to its end"
    assert await reader.run(count) == 3


async def test_a_read_that_fails_with_a_statement_open_leaves_no_snapshot_behind(
    table: tuple[sqlite3.Connection, SnapshotReader],
) -> None:
    writer, reader = table

    def broken(conn: sqlite3.Connection) -> None:
        rows = conn.execute("SELECT x FROM t")
        rows.fetchone()
        raise LookupError(f"a bug after reading {rows}")

    with pytest.raises(LookupError) as failed:
        await reader.run(broken)
    writer.execute("INSERT INTO t VALUES (3)")
    assert [await reader.run(count) for _ in range(4)] == [3, 3, 3, 3], "both reader threads see the commit"
    assert failed.value.args  # the error itself (kept here, as a caller might) holds no open statement


@pytest.mark.parametrize("hops", range(8))
async def test_a_read_cancelled_at_any_point_leaves_every_later_read_current(fresh_store: SqliteStore, hops: int) -> None:
    """What a client that disconnects, or a ``wait_for`` that times out, does to a read in progress."""
    first = notification()
    await fresh_store.accept([first], tenant="acme", idempotency=None, status=202, body=b"{}")
    for read in (
        fresh_store.get_notification("acme", first.id),
        fresh_store.list_notifications("acme", NotificationFilter(), limit=10, cursor=None),
    ):
        task = asyncio.ensure_future(read)
        for _ in range(hops):
            await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    later = notification()
    await fresh_store.accept([later], tenant="acme", idempotency=None, status=202, body=b"{}")
    assert await fresh_store.get_notification("acme", later.id) is not None
    page = await fresh_store.list_notifications("acme", NotificationFilter(), limit=10, cursor=None)
    assert {item.id for item in page.items} == {first.id, later.id}
