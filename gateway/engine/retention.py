"""Forgetting what is only kept for a while: raw provider callbacks, idempotency records, and each tenant's notifications.

One :class:`Purger` runs every :class:`Retention` at start and then in rounds on the clock: every
hour, or every tenth of the shortest retention when that is sooner (at most once a second), so
nothing outlives its retention by more than a tenth of it. Each retention is purged on its own:
one that fails is logged and tried again next round, and does not hold up the others.

The fixed retentions come from settings; the tenants' come from the policy in force, read again
each round (:class:`TenantRetentions`), so a reload applies from the next round. A tenant's
notifications are purged in batches, each its own small write, with the event loop free between
them: a send arriving during a purge is written after at most one batch, never after the whole
purge. A tenant no longer in policy keeps its data until it is back (then its retention applies):
taking a tenant out of the files, by mistake or for a while, never deletes what it sent.

After a round that purged something, the freed pages are given back to the file system a few
hundred at a time (the store's ``reclaim_space``), so the database file shrinks rather than only
stops growing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from gateway.clock import Clock
from gateway.policy.view import PolicyHolder
from gateway.store import Store

log = logging.getLogger(__name__)
PURGE_EVERY: Final = 3600.0
ROUNDS_PER_RETENTION: Final = 10
SHORTEST_ROUND: Final = 1.0
RECLAIM_PAGES: Final = 256  # pages given back per write: a few hundred page moves, a millisecond or two
DEFAULT_LINES_RETENTION: Final = 30 * 86400.0  # lines of no tenant, when the policy has no tenants to go by


@dataclass(frozen=True, slots=True)
class Retention:
    """What is kept for ``keep_seconds``, and how to forget what is older (``purge(before)`` → how many went)."""

    what: str
    keep_seconds: float
    purge: Callable[[float], Awaitable[int]]


class Reclaim(Protocol):
    def __call__(self, *, pages: int) -> Awaitable[int]: ...


class TenantRetentions:
    """The retentions of the tenants in the policy in force: their notifications, and their history lines about none.

    History lines of no tenant (written by older versions, shown to every tenant) are kept as
    long as the longest retention, or for ever if a tenant keeps everything.
    """

    def __init__(self, store: Store, policies: PolicyHolder, *, batch: int) -> None:
        self._store = store
        self._policies = policies
        self._batch = batch

    def __call__(self) -> list[Retention]:
        retentions = self._policies.current.retentions
        found: list[Retention] = []
        for tenant, keep in sorted(retentions.items()):
            if keep is not None:
                found.append(Retention(f"notifications of tenant {tenant!r}", keep, functools.partial(self.purge_notifications, tenant)))
                found.append(Retention(f"history lines of tenant {tenant!r}", keep, functools.partial(self.purge_lines, tenant)))
                found.append(Retention(f"business events of tenant {tenant!r}", keep, functools.partial(self.purge_events, tenant)))
        kept = [keep for keep in retentions.values() if keep is not None]
        if len(kept) == len(retentions):
            longest = max(kept, default=DEFAULT_LINES_RETENTION)
            found.append(Retention("history lines of no tenant", longest, functools.partial(self.purge_lines, None)))
        return found

    async def purge_notifications(self, tenant: str, before: float) -> int:
        """The tenant's notifications that may go, batch by batch, yielding between batches; how many went."""
        total, after = 0, None
        while True:
            batch = await self._store.purge_notifications(tenant, before, limit=self._batch, after=after)
            total += batch.purged
            if batch.resume_after is None:
                return total
            after = batch.resume_after
            await asyncio.sleep(0)

    async def purge_events(self, tenant: str, before: float) -> int:
        """The tenant's processed business events (and settled digests) that may go, batch by batch; how many went."""
        total = 0
        while True:
            purged = await self._store.purge_business_events(tenant, before, limit=self._batch)
            total += purged
            if purged < self._batch:
                return total
            await asyncio.sleep(0)

    async def purge_lines(self, tenant: str | None, before: float) -> int:
        """The tenant's history lines about no notification that may go, batch by batch; how many went."""
        total = 0
        while True:
            purged = await self._store.purge_history_lines(tenant, before, limit=self._batch)
            total += purged
            if purged < self._batch:
                return total
            await asyncio.sleep(0)


def no_more() -> Sequence[Retention]:
    return ()


class Purger:
    """Purges each retention's old rows, periodically on ``clock``, and gives the freed pages back."""

    def __init__(
        self, clock: Clock, retentions: Sequence[Retention], *, tenants: Callable[[], Sequence[Retention]] = no_more,
        reclaim: Reclaim | None = None,
    ) -> None:
        self._clock = clock
        self._fixed = tuple(retentions)
        self._tenants = tenants
        self._reclaim = reclaim
        self.runs = 0
        self.purged = 0
        self._waiting: asyncio.Future[None] | None = None

    @property
    def asleep(self) -> bool:
        """Whether it waits on the clock for its next round and has not been woken (a test moves a fake clock only then)."""
        return self._waiting is not None and not self._waiting.done()

    def retentions(self) -> list[Retention]:
        """The fixed retentions, then the tenants' under the policy in force now."""
        return [*self._fixed, *self._tenants()]

    async def purge(self) -> int:
        """One round over every retention, then the freed pages given back; how many rows went in all."""
        return await self._round(self.retentions())

    async def _round(self, retentions: Sequence[Retention]) -> int:
        total = 0
        for retention in retentions:
            try:
                count = await retention.purge(self._clock.now() - retention.keep_seconds)
            except Exception:
                log.exception("purging old %s failed; trying again later", retention.what)
                continue
            if count:
                log.info("purged %d %s older than %s", count, retention.what, span(retention.keep_seconds))
            total += count
        if total:
            await self._give_back()
        self.runs += 1
        self.purged += total
        return total

    async def _give_back(self) -> None:
        if self._reclaim is None:
            return
        freed = 0
        try:
            while (step := await self._reclaim(pages=RECLAIM_PAGES)) > 0:
                freed += step
                if step < RECLAIM_PAGES:
                    break
                await asyncio.sleep(0)
        except Exception:
            log.exception("giving freed pages back failed; trying again after the next purge")
        if freed:
            log.info("gave %d free pages back to the file system", freed)

    async def run(self) -> None:
        while True:
            retentions = self.retentions()
            await self._round(retentions)
            self._waiting = asyncio.ensure_future(self._clock.sleep(interval(retentions)))
            await self._waiting

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        task = asyncio.create_task(self.run(), name="retention-purge")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def interval(retentions: Sequence[Retention]) -> float:
    """How long to wait between rounds: an hour, a tenth of the shortest retention if sooner, never under a second."""
    return max(SHORTEST_ROUND, min([PURGE_EVERY, *(r.keep_seconds / ROUNDS_PER_RETENTION for r in retentions)]))


def span(seconds: float) -> str:
    """``seconds`` as policy writes a duration: 30d, 12h, 90m, 20s."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"
