"""A background worker of the engine: one task that loops, woken early when there is work, sleeping on the clock otherwise.

The business-event processor and the digest sender share this shape: ``start`` runs
:meth:`Worker.run` as a task, ``wake`` cuts its current rest short, ``rest`` waits until woken or
until time passes on the injected clock (so tests move it by hand), and ``stop`` cancels it.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod

from gateway.clock import Clock


class Worker(ABC):
    """One looping task with a wake-up; subclasses say what a pass does in :meth:`run`."""

    name = "worker"

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name=self.name)

    def wake(self) -> None:
        """There is work: end the current rest now."""
        self._wakeup.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @abstractmethod
    async def run(self) -> None:
        """One worker's loop: what it does, and how long it rests between passes."""

    async def rest(self, seconds: float) -> None:
        """Until ``seconds`` pass on the clock, or a wake."""
        woken = asyncio.ensure_future(self._wakeup.wait())
        slept = asyncio.ensure_future(self._clock.sleep(seconds))
        try:
            await asyncio.wait({woken, slept}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
            slept.cancel()
