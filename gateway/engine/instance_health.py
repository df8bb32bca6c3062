"""How each provider instance has fared lately: sends answered, refused and failed, counted per minute in memory.

The dashboard shows an instance's recent error rate and throughput beside its breaker. The
counts live in a ring of :data:`BUCKETS` one-minute buckets per instance, so memory stays
bounded however much is sent, and reading them costs the same at any load. They start empty at
every start of the process: the store holds the full record (each attempt in a notification's
history); this is only the recent picture.

An answer is one of three kinds: ``sent`` (the provider took the message), ``refused`` (it
answered, but refused that message: a bad number, say) and ``fault`` (the provider itself
failed: a timeout, a 5xx, a rejected credential), the kind a breaker counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from gateway.clock import Clock

Answer = Literal["sent", "refused", "fault"]
BUCKET_SECONDS: Final = 60
BUCKETS: Final = 5
WINDOW_SECONDS: Final = BUCKET_SECONDS * BUCKETS


@dataclass(frozen=True, slots=True)
class RecentSends:
    """An instance's answers in this minute and the :data:`BUCKETS` - 1 before it (:data:`WINDOW_SECONDS` at most)."""

    sent: int = 0
    refused: int = 0
    faults: int = 0

    @property
    def total(self) -> int:
        return self.sent + self.refused + self.faults

    @property
    def error_rate(self) -> float | None:
        """The share of sends that did not go (refused or failed); None when there were none."""
        return (self.refused + self.faults) / self.total if self.total else None

    @property
    def per_minute(self) -> float:
        """Sends a minute, averaged over the window."""
        return self.total * 60 / WINDOW_SECONDS


class _Ring:
    """One instance's counts: a bucket per minute, the oldest overwritten by the newest."""

    __slots__ = ("minutes", "counts")

    def __init__(self) -> None:
        self.minutes = [-1] * BUCKETS
        self.counts = [[0, 0, 0] for _ in range(BUCKETS)]

    def add(self, minute: int, kind: int) -> None:
        slot = minute % BUCKETS
        if self.minutes[slot] != minute:
            self.minutes[slot], self.counts[slot] = minute, [0, 0, 0]
        self.counts[slot][kind] += 1

    def since(self, oldest: int) -> RecentSends:
        totals = [0, 0, 0]
        for minute, counts in zip(self.minutes, self.counts, strict=True):
            if minute >= oldest:
                totals = [a + b for a, b in zip(totals, counts, strict=True)]
        return RecentSends(*totals)


_KIND: Final = {"sent": 0, "refused": 1, "fault": 2}


class InstanceHealth:
    """Recent answers of every provider instance, by name."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._rings: dict[str, _Ring] = {}

    def record(self, instance: str, answer: Answer) -> None:
        ring = self._rings.get(instance)
        if ring is None:
            ring = self._rings[instance] = _Ring()
        ring.add(self._minute(), _KIND[answer])

    def recent(self, instance: str) -> RecentSends:
        """The instance's answers in the window; all zero for one that has sent nothing since the start."""
        ring = self._rings.get(instance)
        return ring.since(self._minute() - BUCKETS + 1) if ring is not None else RecentSends()

    def _minute(self) -> int:
        return int(self._clock.now() // BUCKET_SECONDS)
