"""A count that only rises, and coroutines waiting to see it pass a mark.

The store counts its commits, the dispatcher each channel's quiet claims, the event-webhook
worker its quiet passes; each waiter asks to be woken once the count is past the value it saw.
"""

from __future__ import annotations

import asyncio


class Watermark:
    """``value`` rises by :meth:`raise_to`; :meth:`wait_past` returns once it is above a mark."""

    def __init__(self) -> None:
        self.value = 0
        self._risen = asyncio.Event()

    def raise_to(self, value: int) -> None:
        """Set the count to ``value`` and wake everyone waiting, each to check its own mark."""
        self.value = value
        self._risen.set()
        self._risen = asyncio.Event()

    async def wait_past(self, mark: int) -> None:
        """Return once the count is above ``mark``."""
        while self.value <= mark:
            await self._risen.wait()
