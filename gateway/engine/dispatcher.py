"""Delivering what the store holds: claim due deliveries, attempt each, record what happened.

One loop per channel claims due deliveries in batches under a lease, so a slow provider on
one channel never holds up another, and a worker that dies loses nothing: its leases expire
and the deliveries are claimed again. Each attempt (:mod:`gateway.engine.attempts`) runs as its
own task, bounded per channel; results are recorded in batches. The dispatcher schedules and
the attempt judges; the provider only talks to its vendor.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
from collections.abc import Callable, Iterable
from typing import Final

from gateway.clock import Clock
from gateway.engine.attempts import Attempts, DispatchSettings
from gateway.engine.outcomes import Outcomes
from gateway.engine.provider_pool import ProviderPool
from gateway.engine.throttle import Throttles
from gateway.lifecycle import Held
from gateway.metrics import Metrics
from gateway.policy.view import PolicyHolder
from gateway.store import AttemptResult, ClaimedDelivery, Store
from gateway.watermark import Watermark

log = logging.getLogger(__name__)
IDLE_POLL: Final = 1.0


class Dispatcher:
    """In-process delivery workers: one claiming loop per channel."""

    def __init__(
        self,
        store: Store,
        outcomes: Outcomes,
        policies: PolicyHolder,
        pool: Callable[[], ProviderPool],
        clock: Clock,
        settings: DispatchSettings,
        metrics: Metrics | None = None,
    ) -> None:
        self._store = store
        self._policies = policies
        self._pool = pool
        self._clock = clock
        self._settings = settings
        self.owner = f"dispatcher-{secrets.token_hex(4)}"
        self._loops: dict[str, asyncio.Task[None]] = {}
        self._wakeups: dict[str, asyncio.Event] = {}
        self._in_flight: dict[str, dict[str, asyncio.Task[None]]] = {}
        self._unrecorded: dict[str, int] = {}  # delivery id → ticket of its final outcome, on its way to the store
        self._slot_freed: dict[str, asyncio.Event] = {}
        self._sending: dict[str, asyncio.Semaphore] = {}  # per channel: sends at once, of the deliveries in hand
        self._outcomes = outcomes
        self._throttles = Throttles(clock)
        self._attempts = Attempts(outcomes, policies, pool, clock, settings, self._throttles, metrics)
        self._stopping = False
        self._claims: dict[str, int] = {}  # claims begun, per channel
        self._quiet: dict[str, Watermark] = {}  # per channel, the number of the latest claim that found nothing more due
        self._claimed = 0  # deliveries claimed since start, over all channels
        self._turns: dict[tuple[str, str | None], str] = {}  # per channel and mode (None: both), the tenant the last claim ended on

    @property
    def running(self) -> bool:
        return bool(self._loops) and not self._stopping

    @property
    def attempts(self) -> Attempts:
        """Who makes the attempts: the instances' breakers and recent counts are read from it."""
        return self._attempts

    @property
    def channels(self) -> frozenset[str]:
        """Channels with a claiming loop."""
        return frozenset(self._loops)

    def circuits(self) -> dict[str, str]:
        """Each provider instance's circuit state (``closed``, ``open``, ``half_open``), for those sent to since start."""
        return self._attempts.circuits

    def start(self) -> None:
        self.ensure_channels(spec.name for spec in self._policies.current.channels)

    def ensure_channels(self, names: Iterable[str]) -> None:
        """Claim on every channel in ``names`` too: a reloaded policy may bring new ones.

        Loops are never stopped by a reload: deliveries already queued on a channel the new
        policy dropped still get an answer (sent, or failed for want of a provider).
        """
        if self._stopping:
            return
        for name in names:
            if name not in self._loops:
                self._start_channel(name)

    async def wait_in_flight(self) -> None:
        """Return once every send in flight now has finished; sends started later are not waited for."""
        tasks = [task for flights in self._in_flight.values() for task in flights.values()]
        if tasks:
            await asyncio.wait(tasks)

    async def until_idle(self) -> None:
        """Return once nothing is due at the clock's current time and every outcome is recorded.

        Every channel claims again (as if woken) and finds nothing more due, no send is in
        flight, and the results are in the store; repeated until a round claims nothing, so a
        fallback that a failure made due is sent too. Work due only later on the clock (a
        retry, a ``send_at``) is not waited for. Tests and benchmarks wait on this, not on time.
        """
        while self.running:
            claimed_before, marks = self._claimed, dict(self._claims)
            self.wake()
            for channel, mark in marks.items():
                await self._quiet[channel].wait_past(mark)
            await self.wait_in_flight()
            await self._outcomes.drain()
            if self._claimed == claimed_before and not any(self._in_flight.values()):
                return

    def _start_channel(self, channel: str) -> None:
        self._claims[channel] = 0
        self._quiet[channel] = Watermark()
        self._wakeups[channel] = asyncio.Event()
        self._slot_freed[channel] = asyncio.Event()
        self._sending[channel] = asyncio.Semaphore(self._settings.concurrency)
        self._in_flight[channel] = {}
        self._loops[channel] = asyncio.create_task(self._claim_loop(channel), name=f"dispatch-{channel}")

    def wake(self, channels: Iterable[str] | None = None) -> None:
        """Look for due work now (new deliveries were committed, or the clock moved)."""
        for channel in self._wakeups if channels is None else channels:
            event = self._wakeups.get(channel)
            if event is not None:
                event.set()

    async def stop(self) -> None:
        """Stop claiming; let in-flight sends finish within the grace period; release the rest."""
        self._stopping = True
        # Loops are woken, not cancelled: a claim already sent to the store must come back to
        # a loop that starts its sends, or those deliveries would sit leased until expiry.
        for event in (*self._wakeups.values(), *self._slot_freed.values()):
            event.set()
        await asyncio.gather(*self._loops.values(), return_exceptions=True)
        tasks = [task for flights in self._in_flight.values() for task in flights.values()]
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=self._settings.shutdown_grace)
            unfinished = [d for flights in self._in_flight.values() for d, task in flights.items() if task in pending]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            if unfinished:
                log.warning("released %d in-flight deliveries at shutdown", len(unfinished))
                await self._store.release(unfinished, self.owner)
        await self._outcomes.drain()
        self._loops.clear()

    def _has_enough_in_hand(self, held: int) -> bool:
        """Whether to wait for sends to finish before claiming again, holding ``held`` deliveries.

        A channel holds up to twice its concurrency: the sends in flight and as many claimed
        ahead, so a finished send's slot takes the next delivery at once instead of waiting for
        a claim's commit. It claims again once half the deliveries ahead have gone, not for every
        slot that frees, so each claim's transaction carries many deliveries.
        """
        concurrency = self._settings.concurrency
        return held >= 2 * concurrency or (held >= concurrency and 2 * concurrency - held < max(1, concurrency // 2))

    async def _claim_loop(self, channel: str) -> None:
        wakeup = self._wakeups[channel]
        flights = self._in_flight[channel]
        while not self._stopping:
            if self._has_enough_in_hand(len(flights)):
                self._slot_freed[channel].clear()
                await self._slot_freed[channel].wait()
                continue
            wakeup.clear()
            self._claims[channel] += 1
            claim = self._claims[channel]
            want = min(2 * self._settings.concurrency - len(flights), self._settings.batch)
            bucket = self._throttles.get(f"channel:{channel}", self._policies.current.channel_throughput(channel))
            throttled = False  # live deliveries left in the store for want of the channel's tokens
            if bucket is None:  # both modes in one claim: one transaction, not two
                sandbox, live = [], await self._claim(channel, None, want, flights)
            else:  # test-mode deliveries go to the sandbox: the channel's rate is for live traffic only
                sandbox = await self._claim(channel, "test", want, flights)
                live_want = want - len(sandbox)
                granted = bucket.take_up_to(live_want)
                live = await self._claim(channel, "live", granted, flights) if granted else []
                bucket.put_back(granted - len(live))
                throttled = granted < live_want and len(live) == granted
            for delivery in (*sandbox, *live):  # none of them in flights: never two attempts of one delivery at once
                task = asyncio.create_task(self._deliver(delivery))
                flights[delivery.id] = task
                task.add_done_callback(functools.partial(self._finished, channel, delivery.id))
            if len(sandbox) + len(live) == want:
                continue  # there may be more due: claim again
            self._quiet[channel].raise_to(claim)
            if throttled and bucket is not None:  # they wait in the store, unleased, until a token is due
                await self._pause(wakeup, bucket.wait_time())
            else:  # nothing more is due now: sleep until woken or the next poll
                try:
                    await asyncio.wait_for(wakeup.wait(), IDLE_POLL)
                except TimeoutError:
                    pass

    async def _claim(self, channel: str, mode: str | None, limit: int, flights: dict[str, asyncio.Task[None]]) -> list[ClaimedDelivery]:
        """Up to ``limit`` due deliveries of ``mode`` (None: either), tenants in turn from where the last claim left off.

        Suspended tenants' deliveries stay queued until they are active again; one suspended
        after this claim is caught before its send (:class:`Held`).
        """
        if limit <= 0:
            return []
        paused = self._policies.current.suspended_tenants
        try:
            claimed = await self._store.claim_due(
                channel, limit=limit, owner=self.owner, lease_seconds=self._settings.lease_seconds, holding=self._holding(flights),
                mode=mode, after_tenant=self._turns.get((channel, mode)), paused=paused,
            )
        except Exception:
            log.exception("claiming %s deliveries failed", channel)
            return []
        if claimed:
            self._turns[(channel, mode)] = claimed[-1].tenant
        self._claimed += len(claimed)
        return claimed

    def _holding(self, flights: dict[str, asyncio.Task[None]]) -> set[str]:
        """Deliveries this dispatcher still answers for: sends in flight, and outcomes not yet in the store.

        The store shows both as ``sending`` under a lease; were that lease to run out, a claim
        that did not leave them out would send them a second time.
        """
        done = self._outcomes.recorded_through
        self._unrecorded = {delivery: ticket for delivery, ticket in self._unrecorded.items() if ticket > done}
        return flights.keys() | self._unrecorded.keys()

    def _record(self, result: AttemptResult) -> None:
        """Queue a delivery's final outcome for the store, holding the delivery back from claims until it is there."""
        self._unrecorded[result.delivery_id] = self._outcomes.record(result)

    async def _pause(self, wakeup: asyncio.Event, seconds: float) -> None:
        """Wait ``seconds`` of clock time, or less if woken."""
        waits = [asyncio.ensure_future(wakeup.wait()), asyncio.ensure_future(self._clock.sleep(seconds))]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    def _finished(self, channel: str, delivery_id: str, _task: asyncio.Task[None]) -> None:
        self._in_flight[channel].pop(delivery_id, None)
        self._slot_freed[channel].set()

    async def _deliver(self, delivery: ClaimedDelivery) -> None:
        """Make one attempt and queue its final result; until it is in the store, claims leave the delivery out (:meth:`_holding`).

        An attempt held back because the tenant was suspended meanwhile gives the delivery back
        unsent and uncounted; it is claimed again once the tenant is active.
        """
        async with self._sending[delivery.channel]:  # claimed ahead: waits here for a send slot
            outcome = await self._attempts.make(delivery)
        if isinstance(outcome, Held):
            try:
                await self._store.hold([delivery.id], self.owner, outcome.reason)
            except Exception:  # its lease runs out, and it is claimed again then
                log.exception("holding delivery %s of suspended tenant %s failed", delivery.id, delivery.tenant)
            return
        self._record(outcome)
