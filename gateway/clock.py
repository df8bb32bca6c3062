"""Time, behind an interface so schedules can be tested without sleeping."""

from __future__ import annotations

import asyncio
import math
import time
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
FIRST: Final = (datetime(1, 1, 1, tzinfo=UTC) - EPOCH).total_seconds()
LAST: Final = (datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC) - EPOCH).total_seconds()


class Clock(Protocol):
    """Wall-clock seconds since the epoch, as the store records them, and waiting on that time."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None:
        """Return once ``seconds`` of this clock's time have passed (a test clock: once moved)."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds, 0.0))


def isoformat(timestamp: float | None) -> str | None:
    """Epoch seconds as ISO 8601 UTC with milliseconds, as the API shows times.

    Every stored value renders: one beyond what ISO 8601 years (1 to 9999) can say is shown
    as the first or last moment they can, and a value that is no time at all (NaN) as None.
    Requests cannot store such times (schedules are bounded); this keeps reads answering
    whatever a store holds.
    """
    if timestamp is None or math.isnan(timestamp):
        return None
    moment = EPOCH + timedelta(seconds=min(max(timestamp, FIRST), LAST))
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_timestamp(value: str) -> float:
    """Epoch seconds of an ISO 8601 time with a zone, as requests give ``send_at`` and the like.

    Raises ValueError saying what is wrong, worded for the caller's error detail.
    """
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("must be an ISO 8601 time such as 2026-05-01T09:30:00Z") from None
    if moment.tzinfo is None:
        raise ValueError("must include a time zone (Z or +02:00)")
    return moment.timestamp()
