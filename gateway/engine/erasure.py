"""Erasing a deleted contact's addresses from its tenant's notifications, a batch a write, to the end.

Deleting a contact notes an :class:`~gateway.store.Erasure` in the same write that forgets it;
:meth:`Eraser.erase` then asks the store for batches (each its own background transaction, so
sends are written between them and a contact with 100,000 notifications never holds them up by
more than one batch) until none is left. An erasure runs in a task of its own: a client that
hangs up before the ``204`` does not stop it, and one cut short by a stop is resumed at the
next start (:meth:`Eraser.resume`).
"""

from __future__ import annotations

import asyncio
import logging

from gateway.store import Erasure, Store

log = logging.getLogger(__name__)


class Eraser:
    """Runs erasures to their end, one task each, never two of the same contact at once."""

    def __init__(self, store: Store, *, batch: int) -> None:
        self._store = store
        self._batch = batch
        self._running: dict[str, asyncio.Task[int]] = {}

    async def erase(self, erasure: Erasure) -> int:
        """Erase to the end; how many notifications were changed. Waiting can be cancelled, the erasure goes on."""
        return await asyncio.shield(self._start(erasure))

    async def resume(self) -> None:
        """Start every erasure a stop cut short; they run in the background."""
        for erasure in await self._store.pending_erasures():
            log.info("resuming the erasure of contact %s's addresses", erasure.contact_id)
            self._start(erasure)

    def _start(self, erasure: Erasure) -> asyncio.Task[int]:
        """The task erasing ``erasure``: the one running already, else a new one."""
        task = self._running.get(erasure.contact_id)
        if task is None:
            task = asyncio.ensure_future(self._run(erasure))
            self._running[erasure.contact_id] = task
            task.add_done_callback(lambda _done: self._running.pop(erasure.contact_id, None))
        return task

    async def wait(self) -> None:
        """Return once the erasures running now have finished (those a stop had cut short, resumed at start, among them)."""
        await asyncio.gather(*self._running.values())

    async def stop(self) -> None:
        """Cancel erasures still running; what they had not erased is erased after the next start."""
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, erasure: Erasure) -> int:
        total = 0
        while erased := await self._store.erase_contact_batch(erasure, limit=self._batch):
            total += erased
        log.info("erased contact %s's addresses from %d notifications", erasure.contact_id, total)
        return total
