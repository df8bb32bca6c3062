"""Claims on work kept in memory: the SQLite store belongs to one process alone, so a claim need not outlive it.

The store contract lets several workers share pending business events and due digests: what
one claims, another's claim leaves out until the lease runs out or the work is recorded (a
store shared by several processes keeps that in the rows, taken ``FOR UPDATE SKIP LOCKED``).
The SQLite file is locked by the one process that has it open, so its claims live as long as
that process: a crash takes them along with the worker that held them, and what they held is
claimed afresh at the next start, with nothing to wait out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


class Claims:
    """Keys (event seqs, digest ids) held by an owner until a time on the store's clock."""

    def __init__(self) -> None:
        self._held: dict[int, tuple[str, float]] = {}
        self.lock = asyncio.Lock()
        """Held from reading what others hold to taking what was found, so two claimers never take the same key."""

    def held_by_others(self, owner: str, now: float) -> list[int]:
        """The keys another owner holds at ``now``; leases that ran out are forgotten (their holder died, or lost them)."""
        self._held = {key: lease for key, lease in self._held.items() if lease[1] > now}
        return sorted(key for key, (holder, _until) in self._held.items() if holder != owner)

    def take(self, owner: str, keys: Iterable[int], until: float) -> None:
        for key in keys:
            self._held[key] = (owner, until)

    def drop(self, keys: Iterable[int]) -> None:
        """The work is recorded: nobody holds it any more."""
        for key in keys:
            self._held.pop(key, None)
