"""Coalescing many small writes into few: items pile up while the previous flush runs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


class Batcher(Generic[T]):
    """Hands items to ``flush`` in batches; one flush runs at a time, the next takes all that waited."""

    def __init__(self, flush: Callable[[list[T]], Awaitable[None]], *, name: str) -> None:
        self._flush = flush
        self._name = name
        self._pending: list[T] = []
        self._task: asyncio.Task[None] | None = None

    def add(self, item: T) -> None:
        self._pending.append(item)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"batch-{self._name}")

    async def _run(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    await self._flush(batch)
                except Exception:
                    log.exception("%s: flushing %d items failed; retrying them", self._name, len(batch))
                    self._pending[:0] = batch
                    await asyncio.sleep(0.5)
        finally:
            self._task = None

    async def drain(self) -> None:
        """Wait until everything added so far has been flushed."""
        while self._task is not None:
            await asyncio.shield(self._task)
