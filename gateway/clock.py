"""Time, behind an interface so schedules can be tested without sleeping."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Protocol


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
    """Epoch seconds as ISO 8601 UTC with milliseconds, as the API shows times."""
    if timestamp is None:
        return None
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
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
