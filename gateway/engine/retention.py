"""Forgetting what is only kept for a while: raw provider callbacks, idempotency records.

One :class:`Purger` runs every :class:`Retention` at start and then every hour of clock time
(sooner when a retention is shorter than that), each on its own: one that fails is logged and
tried again next time, and does not hold up the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final

from gateway.clock import Clock

log = logging.getLogger(__name__)
PURGE_EVERY: Final = 3600.0


@dataclass(frozen=True, slots=True)
class Retention:
    """What is kept for ``keep_seconds``, and how to forget what is older (``purge(before)`` → how many went)."""

    what: str
    keep_seconds: float
    purge: Callable[[float], Awaitable[int]]


class Purger:
    """Purges each retention's old rows, periodically on ``clock``."""

    def __init__(self, clock: Clock, retentions: Sequence[Retention]) -> None:
        self._clock = clock
        self._retentions = tuple(retentions)
        self.runs = 0
        self.purged = 0

    async def purge(self) -> int:
        """One round over every retention; how many rows went in all."""
        total = 0
        for retention in self._retentions:
            try:
                count = await retention.purge(self._clock.now() - retention.keep_seconds)
            except Exception:
                log.exception("purging old %s failed; trying again later", retention.what)
                continue
            if count:
                log.info("purged %d %s older than %gh", count, retention.what, retention.keep_seconds / 3600)
            total += count
        self.runs += 1
        self.purged += total
        return total

    async def run(self) -> None:
        every = min([PURGE_EVERY, *(retention.keep_seconds for retention in self._retentions)])
        while True:
            await self.purge()
            await self._clock.sleep(every)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        task = asyncio.create_task(self.run(), name="retention-purge")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
