"""The store's connections: the writer thread, the snapshot readers, the lock and the commit counter; helpers every part shares."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any, Final, TypeVar

import orjson

from gateway.clock import Clock
from gateway.store.files import lock_exclusively, prepare_private
from gateway.store.migrations import migrate
from gateway.store.protocol import StorageUnavailableError
from gateway.store.reader import SnapshotReader
from gateway.store.writer import GroupCommitWriter, connect, ensure_incremental_vacuum
from gateway.watermark import Watermark

T = TypeVar("T")

DISPATCHER: Final = "dispatcher"
FALLBACK: Final = "fallback"
NEVER: Final = 1e15  # next_attempt_at of a waiting fallback with no deadline (year ~33,000)
LIVE: Final = "status IN ('queued', 'sending')"
PROBE_PAGES: Final = 255  # at most this many pages (+1) written by a probe of a store refusing writes
OPTED_OUT_EVENT: Final = "recipient.opted_out"
OPTED_IN_EVENT: Final = "recipient.opted_in"


def dumps(value: Any) -> str:
    # Plugins fill ``detail`` maps; a value JSON has no type for is kept as its text.
    return orjson.dumps(value, default=str).decode()


def loads(value: str | bytes | None) -> Any:
    return orjson.loads(value) if value else None


CHUNK: Final = 500  # bound parameters per IN (...) list, well under SQLite's limit


def chunks(values: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), CHUNK):
        yield values[start : start + CHUNK]


def select_in(conn: sqlite3.Connection, sql: str, values: Iterable[Any], *params: Any) -> list[Any]:
    """Run ``sql`` whose last placeholder is ``IN ({})`` over ``values``, in chunks."""
    rows: list[Any] = []
    distinct = list(dict.fromkeys(values))
    for chunk in chunks(distinct):
        rows += conn.execute(sql.format(", ".join("?" * len(chunk))), (*params, *chunk)).fetchall()
    return rows


class StoreBase:
    """The outbox, idempotency records, attempts and history in one SQLite file: connections and commits."""

    def __init__(self, path: Path, clock: Clock, *, synchronous: str = "FULL") -> None:
        self.path = path
        self.clock = clock
        self._synchronous = synchronous
        self._writer: GroupCommitWriter | None = None
        self._reader: SnapshotReader | None = None
        self._commits = Watermark()
        self._history = Watermark()  # the seq of the newest line of history committed
        self._lock: IO[bytes] | None = None
        self._probe: asyncio.Future[bool] | None = None  # the probe in flight, shared by every caller meanwhile
        self._salt = b""  # keys the ids derived from seq (events, attempts): the store's own, read at open

    async def open(self) -> None:
        """Open the store, private to this user; raise ``StoreInUseError`` if another process has it open."""
        prepare_private(self.path)
        self._lock = lock_exclusively(self.path)
        try:
            conn = await asyncio.to_thread(self._connect_and_migrate)
        except BaseException:
            self._lock.close()
            raise
        self._history.raise_to(newest_history_seq(conn))
        self._writer = GroupCommitWriter(conn, on_commit=self._note_commit, after_commit=newest_history_seq)
        self._writer.start()
        self._reader = SnapshotReader(self.path)
        self._reader.start()

    def _connect_and_migrate(self) -> sqlite3.Connection:
        conn = connect(self.path, self._synchronous)
        ensure_incremental_vacuum(conn)
        migrate(conn)
        (self._salt,) = conn.execute("SELECT value FROM store_meta WHERE name = 'id_salt'").fetchone()
        return conn

    async def close(self) -> None:
        if self._writer is not None:
            await self._writer.stop()
            self._writer = None
        if self._reader is not None:
            await self._reader.stop()
            self._reader = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    @staticmethod
    def is_transient(error: BaseException) -> bool:
        """Whether a failed write may succeed if tried again (busy, locked, disk full or failing), not a bad row."""
        return isinstance(error, (StorageUnavailableError, sqlite3.OperationalError))

    @property
    def writable(self) -> bool:
        return self._writer is not None and self._writer.refusing is None

    async def probe_writes(self) -> bool:
        """Write into the probe table and take it out again in the same transaction: whether the storage took it.

        The write is one page larger than the free pages the file already has (up to a megabyte),
        so it needs new space, as the writes that were refused did. Callers asking while a probe
        runs share it: a flood of ``/readyz`` makes one write at a time.
        """
        if self._probe is None:
            self._probe = asyncio.ensure_future(self._probe_once())
            self._probe.add_done_callback(lambda _done: setattr(self, "_probe", None))
        return await asyncio.shield(self._probe)

    async def _probe_once(self) -> bool:
        def job(conn: sqlite3.Connection) -> None:
            (page_size,) = conn.execute("PRAGMA page_size").fetchone()
            (free,) = conn.execute("PRAGMA freelist_count").fetchone()
            conn.execute("INSERT INTO store_probe (id, filler) VALUES (1, zeroblob(?))", ((min(free, PROBE_PAGES) + 1) * page_size,))
            conn.execute("DELETE FROM store_probe")

        try:
            await self._write(job)
        except StorageUnavailableError:
            return False
        return self.writable

    @property
    def is_open(self) -> bool:
        return self._writer is not None

    def _note_commit(self, history_seq: int | None) -> None:
        if history_seq is not None and history_seq > self._history.value:
            self._history.raise_to(history_seq)
        self._commits.raise_to(self._commits.value + 1)

    @property
    def history_seq(self) -> int:
        """The ``seq`` of the newest line of history committed (0: none yet); it never goes back, not even when lines are purged."""
        return self._history.value

    async def wait_for_history(self, after: int) -> None:
        """Return once a line of history newer than ``seq`` ``after`` is committed."""
        await self._history.wait_past(after)

    @property
    def commits(self) -> int:
        """How many write transactions that changed something have committed since open; see :meth:`wait_for_commit`."""
        return self._commits.value

    async def wait_for_commit(self, after: int) -> None:
        """Return once more than ``after`` transactions have committed."""
        await self._commits.wait_past(after)

    async def _write(self, job: Any, *, background: bool = False) -> Any:
        assert self._writer is not None, "store is not open"
        return await self._writer.run(job, background=background)

    async def _read(self, read: Callable[[sqlite3.Connection], T]) -> T:
        assert self._reader is not None, "store is not open"
        return await self._reader.run(read)

    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """The rows of one query, read in a snapshot of its own."""
        return await self._read(lambda conn: conn.execute(sql, params).fetchall())


def newest_history_seq(conn: sqlite3.Connection) -> int:
    """The ``seq`` the newest line of history was given (``history`` is AUTOINCREMENT: it never goes back)."""
    (seq,) = conn.execute(
        "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'history'), 0), COALESCE((SELECT MAX(seq) FROM history), 0))"
    ).fetchone()
    return int(seq)
