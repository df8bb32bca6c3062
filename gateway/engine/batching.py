"""Coalescing many small writes into few: items pile up while the previous flush runs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from gateway.watermark import Watermark

T = TypeVar("T")
log = logging.getLogger(__name__)


class Batcher(Generic[T]):
    """Hands items to ``flush`` in batches; one flush runs at a time, the next takes all that waited.

    When a flush fails because the store is briefly unavailable (``retryable``), the whole batch
    is tried again after ``retry_pause``. Any other failure means some item can never be
    written: the batch is split in halves until that item is alone, and it is logged and
    dropped, so one bad item cannot hold up everything queued behind it.
    """

    def __init__(
        self,
        flush: Callable[[list[T]], Awaitable[None]],
        *,
        name: str,
        retryable: Callable[[BaseException], bool] = lambda _error: True,
        retry_pause: float = 0.5,
    ) -> None:
        self._flush = flush
        self._name = name
        self._retryable = retryable
        self._retry_pause = retry_pause
        self._pending: list[T] = []
        self._task: asyncio.Task[None] | None = None
        self._added = 0  # items added so far
        self._settled = Watermark()  # of those, how many are written (or dropped): always the oldest, as batches keep their order

    def add(self, item: T) -> int:
        """Queue ``item``; its ticket: the item is written once :attr:`settled_through` reaches it."""
        self._pending.append(item)
        self._added += 1
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"batch-{self._name}")
        return self._added

    @property
    def settled_through(self) -> int:
        """The ticket of the newest item written, or dropped as one that never can be; every older one is too."""
        return self._settled.value

    async def written(self, ticket: int) -> None:
        """Return once the item with ``ticket``, and so every older one, is written (or dropped as one that never can be)."""
        await self._settled.wait_past(ticket - 1)

    async def _run(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                if not await self._flush_isolating(batch):
                    self._pending[:0] = batch
                    await asyncio.sleep(self._retry_pause)
                    continue
                self._settled.raise_to(self._settled.value + len(batch))
        finally:
            self._task = None

    async def _flush_isolating(self, batch: list[T]) -> bool:
        """Flush ``batch``, dropping items that can never be written; False to retry it all later."""
        try:
            await self._flush(batch)
        except Exception as error:
            if self._retryable(error):
                log.exception("%s: flushing %d items failed; retrying them", self._name, len(batch))
                return False
            if len(batch) == 1:
                # By its type only: an item holds recipients, message bodies, idempotency keys.
                log.exception("%s: dropping an item that cannot be written: %s", self._name, type(batch[0]).__name__)
                return True
            middle = len(batch) // 2
            return await self._flush_isolating(batch[:middle]) and await self._flush_isolating(batch[middle:])
        return True

    async def drain(self) -> None:
        """Wait until everything added so far has been flushed."""
        while self._task is not None:
            await asyncio.shield(self._task)


class Coalescer(Generic[T]):
    """Writes for callers that wait on them, gathered: one ``write`` for all that arrive while the previous one runs.

    Unlike :class:`Batcher`, whose items are written some time after they are handed over,
    each caller of :meth:`submit` waits for its own item's write and gets its outcome: it
    returns only once the write holding the item is done (for a store write, committed), and
    raises what that write raised. Nothing is retried here and nothing is dropped: a write
    that fails fails for every caller in it — except that, when the failure is not the
    store's (``transient`` says no), the items are written again one by one, so an item that
    can never be written fails its own caller only.
    """

    def __init__(
        self, write: Callable[[list[T]], Awaitable[None]], *, name: str, transient: Callable[[BaseException], bool] = lambda _error: True
    ) -> None:
        self._write = write
        self._name = name
        self._transient = transient
        self._pending: list[tuple[T, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> None:
        """Write ``item`` with whatever else comes meanwhile; return once that write is done, or raise its error."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"coalesce-{self._name}")
        await future

    async def _run(self) -> None:
        batch: list[tuple[T, asyncio.Future[None]]] = []
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                await self._write_settling(batch)
        finally:
            self._task = None
            for _item, future in batch + self._pending:  # cut short (the loop is closing): nobody waits for ever
                future.cancel()
            self._pending = []

    async def _write_settling(self, batch: list[tuple[T, asyncio.Future[None]]]) -> None:
        try:
            await self._write([item for item, _future in batch])
        except Exception as error:  # noqa: BLE001 - it is the callers' to handle
            if len(batch) > 1 and not self._transient(error):
                log.warning("%s: writing %d items together failed (%s); writing them one by one", self._name, len(batch), type(error).__name__)
                for entry in batch:
                    await self._write_settling([entry])
                return
            for _item, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for _item, future in batch:
            if not future.done():
                future.set_result(None)
