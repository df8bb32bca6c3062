"""How long to wait before the next attempt of a delivery that failed transiently."""

from __future__ import annotations

import random
from typing import Final

MAX_DELAY: Final = 3600.0


def retry_delay(attempt: int, *, base: float, retry_after: float | None = None, rand: random.Random | None = None) -> float:
    """Exponential backoff with ±20% jitter: ``base``, 2×, 4×… capped at an hour.

    A provider's own ``retry_after`` wins when it asks for longer.
    """
    jitter = (rand.uniform if rand is not None else random.uniform)(0.8, 1.2)
    delay = min(base * 2.0 ** max(attempt - 1, 0), MAX_DELAY) * jitter
    return max(delay, retry_after or 0.0)
