"""Time, behind an interface so schedules can be tested without sleeping."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """Wall-clock seconds since the epoch, as the store records them."""

    def now(self) -> float: ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()


def isoformat(timestamp: float | None) -> str | None:
    """Epoch seconds as ISO 8601 UTC with milliseconds, as the API shows times."""
    if timestamp is None:
        return None
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
