"""One writer thread with group commit: many callers' writes share one SQLite transaction.

Callers hand the writer a function of a ``sqlite3.Connection``. The thread takes every job
waiting, runs each inside its own savepoint (one failing job rolls back only its own writes),
commits once, and only then resolves the callers' futures, so an answer never precedes
durability. With ``synchronous=FULL`` the one fsync per commit is shared by the whole batch.

Background jobs (retention purges, giving pages back: large, and nobody waits on them for an
answer) never share a transaction: each commits alone, and one runs only after the jobs that
were waiting beside it have committed. A send that arrives while a purge runs thus waits for
one background job at most, never for a queue of them; and a steady stream of sends does not
starve the purge either, which gets one job in after each batch.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeVar

from gateway.store.jobs import STOP, Pending, settle
from gateway.store.protocol import StorageUnavailableError

T = TypeVar("T")
MAX_BATCH: Final = 1024
NUDGE: Final = object()
"""Put on the queue with each background job, so that a writer waiting for work wakes for it."""
log = logging.getLogger(__name__)

STORAGE_FAULTS: Final = frozenset(
    {sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED,
     sqlite3.SQLITE_NOMEM}
)
"""SQLite's primary result codes for a write the storage (not the statement) refused."""


def as_storage_fault(error: BaseException) -> BaseException:
    """``error`` as :class:`StorageUnavailableError` when the storage refused the write, else unchanged."""
    if isinstance(error, sqlite3.Error) and (error.sqlite_errorcode & 0xFF) in STORAGE_FAULTS:
        fault = StorageUnavailableError(f"the store refused a write: {error}")
        fault.__cause__ = error
        return fault
    return error


def connect(path: Path, synchronous: str) -> sqlite3.Connection:
    """A connection tuned for the store: WAL, the chosen durability, autocommit off by hand.

    ``auto_vacuum`` comes first: on a new database it only holds if set before anything is
    written, and switching to WAL writes the first page. An existing database keeps the mode it
    was made with until :func:`ensure_incremental_vacuum` converts it.
    """
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, cached_statements=256)
    conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


def ensure_incremental_vacuum(conn: sqlite3.Connection) -> bool:
    """Make a database made without auto-vacuum give freed pages back on request (``PRAGMA incremental_vacuum``).

    Once per database: ``auto_vacuum`` was set when the connection opened, and a database that
    already has tables takes it only through a ``VACUUM``, which rewrites the whole file (it
    needs as much free disk again, and time in proportion to its size). ``VACUUM`` is one
    transaction: if it fails (a full disk) the database is as it was, the store opens all the
    same, and the next start tries again. Returns whether the database reclaims pages now.
    Run outside any transaction, before the readers and the writer start.
    """
    (mode,) = conn.execute("PRAGMA auto_vacuum").fetchone()
    if mode != 0:  # 1 full, 2 incremental: pages are given back already
        return True
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    log.info(
        "store: converting the database (%.1f MB) to incremental auto-vacuum, once, so that purged pages shrink the file; "
        "this rewrites it and needs as much free disk again", pages * page_size / 1e6,
    )
    try:
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        conn.execute("VACUUM")
    except sqlite3.Error as err:
        log.error("store: the conversion to incremental auto-vacuum failed (%s); the file will not shrink until it succeeds, "
                  "tried again at the next start", err)
        return False
    (mode,) = conn.execute("PRAGMA auto_vacuum").fetchone()
    log.info("store: the database now reclaims purged pages (auto_vacuum=%s)", "incremental" if mode == 2 else mode)
    return bool(mode)


class GroupCommitWriter:
    """Serialises all writes through one thread and one connection, batching commits."""

    def __init__(
        self, conn: sqlite3.Connection, on_commit: Callable[[Any], None] | None = None, *, after_commit: Callable[[sqlite3.Connection], Any] | None = None
    ) -> None:
        """``on_commit`` is called on the loop after each commit that changed something, with what ``after_commit`` read
        (on the writer's connection, right after that commit) or None."""
        self._conn = conn
        self._queue: queue.SimpleQueue[Pending | object] = queue.SimpleQueue()
        self._background: queue.SimpleQueue[Pending] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="tidings-writer", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_commit = on_commit
        self._after_commit = after_commit
        self.batches = 0
        self.jobs = 0
        self.refusing: str | None = None
        """Why the storage refused the last write, until a write that changed something is kept again."""

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread.start()

    async def run(self, job: Callable[[sqlite3.Connection], T], *, background: bool = False) -> T:
        """Run ``job`` in the next transaction (``background``: in one of its own, after the jobs waiting now); its result once committed."""
        assert self._loop is not None, "writer not started"
        future: asyncio.Future[T] = self._loop.create_future()
        if background:
            self._background.put(Pending(job, future))
            self._queue.put(NUDGE)
        else:
            self._queue.put(Pending(job, future))
        return await future

    async def stop(self) -> None:
        """Finish every queued job, then close the connection."""
        if not self._thread.is_alive():
            return
        self._queue.put(STOP)
        await asyncio.to_thread(self._thread.join)

    def _run(self) -> None:
        stop = False
        while not stop:
            batch, stop = self._take()
            if batch:
                self._commit_batch(batch)
            self._commit_background()
        while self._commit_background():  # stopping: the background jobs still asked for are done too
            pass
        self._conn.close()

    def _take(self) -> tuple[list[Pending], bool]:
        """The jobs waiting, up to a batch; whether the writer is to stop after them.

        With no background job left it first waits for anything to arrive. (A nudge comes with
        each background job, but one take may swallow the nudges of several.)
        """
        batch: list[Pending] = []
        try:
            item = self._queue.get(block=self._background.empty())
        except queue.Empty:
            return batch, False
        while True:
            if item is STOP:
                return batch, True
            if isinstance(item, Pending):
                batch.append(item)
                if len(batch) >= MAX_BATCH:
                    return batch, False
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return batch, False

    def _commit_background(self) -> bool:
        """Commit the next background job, alone; whether there was one."""
        try:
            pending = self._background.get_nowait()
        except queue.Empty:
            return False
        self._commit_batch([pending])
        return True

    def _commit_batch(self, batch: list[Pending]) -> None:
        conn = self._conn
        outcomes: list[tuple[Pending, Any, BaseException | None]] = []
        changes_before = conn.total_changes
        changed = False  # whether a commit changed something: an idle claim that found nothing wakes nobody
        try:
            conn.execute("BEGIN IMMEDIATE")
            for pending in batch:
                outcomes.append(self._run_job(conn, pending))
            conn.execute("COMMIT")
        except sqlite3.Error as err:
            failure = as_storage_fault(err)
            if isinstance(failure, StorageUnavailableError):
                log.error("store commit failed; %d writes refused: %s", len(batch), err)
            else:
                log.exception("store commit failed; %d writes refused", len(batch))
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            outcomes = [(pending, None, failure) for pending in batch]
        else:
            changed = conn.total_changes > changes_before
            if changed:
                self.refusing = None
        seen = self._read_after_commit(conn) if changed else None
        for _pending, _result, refused in outcomes:
            if isinstance(refused, StorageUnavailableError):
                self.refusing = str(refused)
        self.batches += 1
        self.jobs += len(batch)
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._resolve, outcomes, changed, seen)

    def _read_after_commit(self, conn: sqlite3.Connection) -> Any:
        if self._after_commit is None:
            return None
        try:
            return self._after_commit(conn)
        except sqlite3.Error:
            log.exception("store: reading after a commit failed")
            return None

    @staticmethod
    def _run_job(conn: sqlite3.Connection, pending: Pending) -> tuple[Pending, Any, BaseException | None]:
        conn.execute("SAVEPOINT job")
        try:
            result = pending.job(conn)
        except Exception as err:  # the caller gets it; other jobs in the batch go on
            if not conn.in_transaction:
                raise  # SQLite rolled the whole transaction back (a full disk, an I/O error): the batch fails with it
            conn.execute("ROLLBACK TO job")
            conn.execute("RELEASE job")
            return (pending, None, as_storage_fault(err))
        conn.execute("RELEASE job")
        return (pending, result, None)

    def _resolve(self, outcomes: list[tuple[Pending, Any, BaseException | None]], changed: bool, seen: Any) -> None:
        for pending, result, error in outcomes:
            settle(pending.future, result, error)
        if changed and self._on_commit is not None:
            self._on_commit(seen)
