"""The store's files on disk: readable by the server's user alone, and used by one process at a time.

The database holds recipients and message content, so it is created ``0600`` in a directory
created ``0700``; SQLite gives its ``-wal`` and ``-shm`` files the database file's mode, and
files an older version left readable are narrowed when the store opens. A second process on
the same database would run a second dispatcher over the same outbox, so the store takes an
exclusive lock on a file beside it (released by the kernel however the process ends, even
``kill -9``) and refuses to open while another process holds it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Final

from gateway.errors import StoreInUseError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one process per store is then up to the operator
    fcntl = None  # type: ignore[assignment]

PRIVATE_FILE: Final = 0o600
PRIVATE_DIRECTORY: Final = 0o700
SIDE_FILES: Final = ("-wal", "-shm", "-journal")


def prepare_private(path: Path) -> None:
    """Create the database's directory and file private to this user, and narrow existing ones."""
    path.parent.mkdir(mode=PRIVATE_DIRECTORY, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE))
    for name in (path, *(path.with_name(path.name + suffix) for suffix in SIDE_FILES)):
        if name.exists():
            name.chmod(PRIVATE_FILE)


def lock_exclusively(path: Path) -> IO[bytes]:
    """Hold the lock beside ``path`` until the returned file is closed; raise if another process holds it."""
    lock = open(path.with_name(path.name + ".lock"), "ab")  # noqa: SIM115 - held open for the store's lifetime
    os.chmod(lock.name, PRIVATE_FILE)
    if fcntl is None:
        return lock
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise StoreInUseError(path) from None
    return lock
