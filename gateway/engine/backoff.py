"""How long to wait before the next attempt of a delivery that failed transiently."""

from __future__ import annotations

import random
from typing import Final

MAX_DELAY: Final = 3600.0
JITTER: Final = 0.2


def retry_delay(
    attempt: int, *, base: float, scheduled: float | None = None, retry_after: float | None = None, rand: random.Random | None = None
) -> float:
    """Seconds from failed attempt number ``attempt`` (1-based) to the next one.

    ``scheduled`` is what the policy's retry schedule says for this attempt; without one it is
    exponential backoff: ``base``, then 2×, 4×… capped at an hour, each with ±20% jitter so
    deliveries that failed together do not all come back together. A provider's own
    ``retry_after`` wins when it asks for longer.
    """
    if scheduled is None:
        jitter = (rand or random).uniform(1 - JITTER, 1 + JITTER)
        scheduled = min(base * 2.0 ** max(attempt - 1, 0), MAX_DELAY) * jitter
    return max(scheduled, retry_after or 0.0)
