"""What the store's threads are handed: a function of a connection, and the future its caller awaits."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

Job = Callable[[sqlite3.Connection], Any]
STOP: Final = object()
"""Put on a thread's queue to end it once the jobs before it are done."""


@dataclass(slots=True)
class Pending:
    job: Job
    future: asyncio.Future[Any]


def settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    """Hand a job's outcome to its caller; one who stopped waiting (cancelled) is skipped: the job ran all the same."""
    if future.done():
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)
