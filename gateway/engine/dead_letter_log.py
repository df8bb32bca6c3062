"""Every dead letter, logged with its ids and counted, once it is committed, whichever path made it.

A delivery becomes a dead letter in several writes (an attempt that exhausts its retries or is
refused with no fallback left, a claim that finds it expired, an opt-out while it waited), each
deciding through :mod:`gateway.lifecycle` and each writing a ``dead_lettered`` line of history.
:class:`DeadLetterLog` follows the history from where it stood at start-up: after each commit
that added lines (at most once per :data:`PASS_EVERY` seconds), it reads the new dead letters
through :meth:`~gateway.store.Store.dead_lettered_after`, a range of the history's key, and
logs and counts each one. A scrape of ``/metrics`` catches up first, so the count it shows is
current.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from gateway.clock import Clock
from gateway.engine.worker import Worker
from gateway.logconfig import fields
from gateway.metrics import Metrics
from gateway.store import DeadLettered, Store

log = logging.getLogger(__name__)
PASS_EVERY: Final = 1.0
BATCH: Final = 500


class DeadLetterLog(Worker):
    """Follows the history for dead letters: one log line and one count each."""

    name = "dead-letter-log"

    def __init__(self, store: Store, metrics: Metrics, clock: Clock) -> None:
        super().__init__(clock)
        self._store = store
        self._metrics = metrics
        self._cursor = store.history_seq  # those from before this start were told by the process that made them
        self._lock = asyncio.Lock()

    async def run(self) -> None:
        while True:
            await self._store.wait_for_history(self._cursor)
            try:
                await self.catch_up()
            except Exception:  # a failing read: the lines stay in the history, read at the next pass
                log.exception("reading dead letters from the history failed; trying again shortly")
            await self.rest(PASS_EVERY)

    async def catch_up(self) -> int:
        """Log and count every dead letter committed so far that is not yet; how many there were."""
        async with self._lock:
            told = 0
            through = self._store.history_seq
            while self._cursor < through:
                found = await self._store.dead_lettered_after(self._cursor, through=through, limit=BATCH)
                for dead in found:
                    self._tell(dead)
                told += len(found)
                self._cursor = found[-1].seq if len(found) == BATCH else through
            return told

    def _tell(self, dead: DeadLettered) -> None:
        self._metrics.count_dead_letter(dead)
        log.warning(
            "dead letter: delivery %s of notification %s (tenant %s, %s via %s): %s",
            dead.delivery_id, dead.notification_id, dead.tenant, dead.channel, dead.provider or "no instance", dead.reason,
            extra=fields(
                event="dead_letter", tenant=dead.tenant, notification_id=dead.notification_id, delivery_id=dead.delivery_id,
                channel=dead.channel, provider=dead.provider, reason=dead.reason,
            ),
        )
