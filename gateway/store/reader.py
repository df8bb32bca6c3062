"""Reads that always see every commit: each one a whole function, run inside its own snapshot.

A read is a function of a ``sqlite3.Connection``, like a write job. A few reader threads, each
with its own read-only connection, take reads off one queue and run each inside ``BEGIN`` …
``COMMIT`` from start to end, with no await in between. So:

- a read sees everything committed before it started, and one consistent state throughout;
- no read ever runs inside another's transaction. With one connection shared by tasks (what
  ``aiosqlite`` gives), a statement one task had executed but not yet finished kept the WAL
  snapshot of its start open, and another task's read on that connection saw that older state:
  a notification answered 202 could then read as 404, and a receipt just applied as not;
- a read whose caller is cancelled (a client gone, a timeout) still runs to its ``COMMIT`` in
  the thread, so it never leaves a transaction open behind it.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeVar

from gateway.store.jobs import STOP, Job, Pending, settle

T = TypeVar("T")
READERS: Final = 2  # WAL lets reads run side by side; two keep one slow list from queueing every other read


def connect_reader(path: Path) -> sqlite3.Connection:
    """A read-only connection whose rows can be read by column name."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, cached_statements=256)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA query_only=ON")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


class SnapshotReader:
    """Runs reads on ``size`` threads, each read inside one read transaction of its own."""

    def __init__(self, path: Path, size: int = READERS) -> None:
        self._path = path
        self._size = size
        self._queue: queue.SimpleQueue[Pending | object] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for number in range(self._size):
            conn = connect_reader(self._path)
            thread = threading.Thread(target=self._serve, args=(conn,), name=f"tidings-reader-{number}", daemon=True)
            thread.start()
            self._threads.append(thread)

    async def run(self, read: Callable[[sqlite3.Connection], T]) -> T:
        """The result of ``read``, run inside a snapshot taken after every commit so far."""
        assert self._loop is not None, "reader not started"
        future: asyncio.Future[T] = self._loop.create_future()
        self._queue.put(Pending(read, future))
        return await future

    async def stop(self) -> None:
        """Finish the reads already queued, then close the connections."""
        for _thread in self._threads:
            self._queue.put(STOP)
        for thread in self._threads:
            await asyncio.to_thread(thread.join)
        self._threads.clear()

    def _serve(self, conn: sqlite3.Connection) -> None:
        try:
            while (item := self._queue.get()) is not STOP:
                assert isinstance(item, Pending)
                result, error = _read_in_snapshot(conn, item.job)
                assert self._loop is not None
                self._loop.call_soon_threadsafe(settle, item.future, result, error)
        finally:
            conn.close()


def _read_in_snapshot(conn: sqlite3.Connection, read: Job) -> tuple[Any, BaseException | None]:
    try:
        conn.execute("BEGIN")
        try:
            return read(conn), None
        finally:
            conn.execute("COMMIT")
    except Exception as err:  # the caller gets it; the reader thread goes on
        # A cursor left in a frame of the traceback would keep its statement, and with it this
        # connection's snapshot, open for as long as the error is kept: drop the frames' locals.
        traceback.clear_frames(err.__traceback__)
        return None, err

