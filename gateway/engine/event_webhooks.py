"""Event webhooks: tell tenants' endpoints about events, signed per Standard Webhooks, at least once.

Fan-out happens here, not where events are written: the worker reads the history's events by
``seq`` past a cursor and adds one ``webhook_deliveries`` row per endpoint subscribed to the
event's type in the policy in force *then*. Every event belongs to a tenant; one without
(written by an older version) goes to no endpoint. The write paths stay one cheap INSERT per
event and never need the policy; moving the cursor and adding the rows is one transaction, so a
crash neither loses nor doubles a fan-out. Events that go to no endpoint move the cursor in
memory only, written at most once a second (and at a stop), so a gateway whose tenants have no
endpoint pays no read or write per commit for them; see :meth:`EventWebhooks.fan_out` for what
that means after a crash. The worker wakes when history is added, not at every commit.

Delivery: each (tenant, endpoint) is a lane of its own. A lane sends its endpoint's due
deliveries one at a time in creation order and records each outcome as soon as it has it;
lanes run side by side, so an endpoint that is slow or never answers holds up only itself.
When a delivery fails and waits for its retry, the deliveries behind it wait too: a failing
endpoint backs off as a whole, and the others are not affected. What one attempt does with the
answer (and the SSRF guard) is :mod:`gateway.engine.webhook_attempts`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
from collections.abc import Sequence
from typing import Final

import aiohttp

from gateway import signing
from gateway.clock import Clock
from gateway.engine.batching import Batcher
from gateway.engine.webhook_attempts import DISABLED, PENDING, WebhookPoster
from gateway.metrics import Metrics
from gateway.policy.models import WebhookEndpointPolicy
from gateway.policy.view import PolicyHolder, PolicySet
from gateway.store import ClaimedWebhook, EventHead, Store, WebhookResult, WebhookTarget
from gateway.watermark import Watermark

log = logging.getLogger(__name__)

IDLE_POLL: Final = 1.0
CURSOR_KEPT_EVERY: Final = 1.0
"""Seconds: how often at most the fan-out cursor is written when no delivery moves it (see :meth:`EventWebhooks.fan_out`)."""

Lane = tuple[str, str]
"""(tenant, endpoint)"""


def subscribed(endpoint: WebhookEndpointPolicy, event_type: str) -> bool:
    return "*" in endpoint.events or event_type in endpoint.events


def targets_of(event: EventHead, policy: PolicySet, disabled: dict[tuple[str, str], str]) -> list[WebhookTarget]:
    """The endpoints of the event's tenant under ``policy`` that subscribe to its type."""
    if event.tenant is None:
        return []
    endpoints = policy.document.webhooks.get(event.tenant, {})
    return [
        WebhookTarget(event, event.tenant, name, disabled=disabled.get((event.tenant, name)) == endpoint.url)
        for name, endpoint in endpoints.items()
        if subscribed(endpoint, event.type)
    ]


class EventWebhooks:
    """Fans events out to subscribed endpoints and runs a lane per endpoint with deliveries due, until told to stop."""

    def __init__(
        self, store: Store, policies: PolicyHolder, session: aiohttp.ClientSession, clock: Clock, signer: signing.Ed25519Signer,
        *, batch: int = 200, lease_seconds: float = 60.0, timeout: float = 10.0, metrics: Metrics | None = None,
    ) -> None:
        self._store = store
        self._metrics = metrics or Metrics()
        self._policies = policies
        self._clock = clock
        self._batch = batch
        self._lease = lease_seconds
        self._refill_at = max(1, batch // 2)  # a lane leases what follows once this many of what it holds are left to send
        self._poster = WebhookPoster(policies, session, clock, signer, timeout=timeout)
        self._results: Batcher[WebhookResult] = Batcher(self._record, name="event-webhooks", retryable=store.is_transient)
        self._task: asyncio.Task[None] | None = None
        self._lanes: dict[Lane, asyncio.Task[None]] = {}  # endpoints being sent to
        self._in_hand: set[str] = set()  # claimed, outcome not recorded yet
        self._passes = 0  # passes begun
        self._quiet = Watermark()  # the number of the latest pass that found nothing to do and no lane running
        self._wakeup = asyncio.Event()
        self._recheck = True  # whether deliveries may have come due since the worker last looked
        self._next_due: float | None = None  # when the next one is due, as of that look
        self._cursor: int | None = None  # events through this seq are fanned out (or went nowhere); read from the store at start
        self._kept = 0  # the cursor as the store holds it: behind _cursor by events that went nowhere
        self._kept_at = -math.inf  # when it was last written (clock time)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="event-webhooks")

    async def stop(self) -> None:
        """Stop at once, giving back the leases of sends cut short so the next start sends them again."""
        tasks = [task for task in (self._task, *self._lanes.values()) if task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._task = None
        await self._results.drain()
        if self._cursor is not None and self._cursor > self._kept:
            await self._store.keep_fan_out_cursor(self._cursor)  # a restart reads no event again that went nowhere
        if self._in_hand:
            log.info("event webhooks: %d sends cut short by the shutdown are due again", len(self._in_hand))
            await self._store.release_webhooks(sorted(self._in_hand))
            self._in_hand.clear()
        await self._poster.aclose()

    def wake(self) -> None:
        """Look for due deliveries now: a replay or an enabled endpoint has queued some."""
        self._recheck = True
        self._wakeup.set()

    async def until_idle(self) -> None:
        """Return once a pass begun after this call found no event to fan out, nothing due at the clock's time
        and no endpoint being sent to.

        Tests wait on this rather than on time, so "not sent yet" is a finding.
        """
        mark = self._passes
        self.wake()
        if self._task is not None and not self._task.done():
            await self._quiet.wait_past(mark)

    async def _run(self) -> None:
        """Fan out after every commit; look for due deliveries only when some may have come due.

        That is after a fan-out, a lane's end, the next retry's time, or a wake-up: not after
        every commit, of which a busy gateway makes hundreds a second.
        """
        while True:
            self._wakeup.clear()
            self._passes += 1
            number, seen = self._passes, self._store.history_seq
            looked, self._recheck = self._recheck, False
            try:
                added, more = await self.fan_out()
                looked = looked or added > 0
                busy = more | (await self.deliver_due() if looked else False)
            except Exception:  # noqa: BLE001 - the worker outlives any one bad batch
                log.exception("event webhooks: batch failed; trying again")
                busy, self._recheck = False, True
                await self._clock.sleep(IDLE_POLL)
            if not busy:
                if not self._lanes and (looked or not self._due_by_last_look()):
                    self._quiet.raise_to(number)
                await self._idle(seen)

    def _due_by_last_look(self) -> bool:
        """Whether a delivery was due by what the worker last read; good until ``_recheck`` says otherwise."""
        return self._next_due is not None and self._next_due <= self._clock.now()

    async def _idle(self, seen: int) -> None:
        """Wait for new history (maybe events), the next retry, a lane ending or a wake-up, whichever comes first.

        Not for any commit: recording the lanes' outcomes commits about once per event sent, and
        none of those commits adds an event.
        """
        due, now = self._next_due, self._clock.now()
        if self._due_by_last_look() and not self._lanes:
            self._recheck = True
            return  # came due since the pass looked
        # Due already with a lane running: that lane holds it, and wakes us when it ends.
        delay = IDLE_POLL if due is None or due <= now else min(IDLE_POLL, due - now)
        committed = asyncio.ensure_future(self._store.wait_for_history(seen))
        waits = [committed, asyncio.ensure_future(self._clock.sleep(delay)), asyncio.ensure_future(self._wakeup.wait())]
        try:
            done, _pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        if done != {committed}:
            self._recheck = True

    async def fan_out(self) -> tuple[int, bool]:
        """Turn new events into webhook deliveries: how many it added, and whether more events may be waiting (it read a full batch).

        The cursor moves in memory; it is written with the deliveries an event adds (one
        transaction, so a crash neither loses nor doubles them), and otherwise at most every
        :data:`CURSOR_KEPT_EVERY` and at a stop: a batch of events no endpoint takes costs no
        write. While no tenant has an endpoint at all, no event is read: the cursor follows the
        history. So an endpoint added later gets events from then on; after a crash, the events
        of the last :data:`CURSOR_KEPT_EVERY` or so that went nowhere are read again, and may go to
        an endpoint added meanwhile. Events that went to an endpoint are never read again.
        """
        if self._cursor is None:
            self._cursor = self._kept = await self._store.fan_out_cursor()
        policy = self._policies.current
        if not any(policy.document.webhooks.values()):
            self._cursor = max(self._cursor, self._store.history_seq)  # every event so far goes nowhere
            if self._cursor > self._kept and self._keeping_due():
                await self._keep_cursor(self._cursor)
            return 0, False
        events = await self._store.events_to_fan_out(after=self._cursor, limit=self._batch)
        if not events:
            if self._cursor > self._kept and self._keeping_due():
                await self._keep_cursor(self._cursor)
            return 0, False
        targets = [target for event in events for target in targets_of(event, policy, {})]
        if targets and (disabled := await self._store.disabled_webhook_endpoints()):
            targets = [target for event in events for target in targets_of(event, policy, disabled)]
        through = events[-1].seq
        if targets:
            await self._store.fan_out(targets, through)
            self._cursor = self._kept = through
            self._kept_at = self._clock.now()
        else:
            self._cursor = through
            if self._keeping_due():
                await self._keep_cursor(through)
        return len(targets), len(events) == self._batch

    def _keeping_due(self) -> bool:
        return self._clock.now() - self._kept_at >= CURSOR_KEPT_EVERY

    async def _keep_cursor(self, through: int) -> None:
        """Write the cursor without adding deliveries."""
        self._kept = await self._store.keep_fan_out_cursor(through)
        self._kept_at = self._clock.now()

    async def deliver_due(self) -> bool:
        """Start a lane for every endpoint with deliveries due and no lane running; whether any started."""
        self._next_due = due = await self._store.next_webhook_due()
        if due is None or due > self._clock.now():
            return False
        claimed = await self._store.claim_webhooks(limit=self._batch, lease_seconds=self._lease, per_endpoint=self._batch, busy=set(self._lanes))
        leased_until = self._clock.now() + self._lease
        self._in_hand.update(item.id for item in claimed)
        by_endpoint: dict[Lane, list[ClaimedWebhook]] = {}
        for item in claimed:
            by_endpoint.setdefault((item.tenant, item.endpoint), []).append(item)
        for lane, items in by_endpoint.items():
            task = asyncio.create_task(self._send_in_order(lane, items, leased_until), name=f"event-webhooks {lane[0]}/{lane[1]}")
            self._lanes[lane] = task
            task.add_done_callback(functools.partial(self._lane_ended, lane))
        return bool(claimed)

    def _lane_ended(self, lane: Lane, task: asyncio.Task[None]) -> None:
        if self._lanes.get(lane) is task:
            del self._lanes[lane]
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("event webhooks: lane %s/%s stopped: %r; its deliveries are due again when their lease ends", *lane, error)
        self.wake()

    async def _send_in_order(self, lane: Lane, items: Sequence[ClaimedWebhook], leased_until: float) -> None:
        """One endpoint's deliveries, one at a time in creation order, each recorded as it ends.

        Outcomes are written in shared batches while the next delivery is sent. Once half of
        what it holds is sent, the lane leases the endpoint's next due deliveries, so it goes on
        without a pause; it ends when there are none, once its own outcomes are written. After a
        failure that will be retried the rest wait behind it (the endpoint backs off); after a
        410 the store disables them. What the lease would not cover is given back.
        """
        ticket = 0
        following: asyncio.Future[tuple[list[ClaimedWebhook], float]] | None = None
        held = [item.id for item in items]  # leased by this lane, outcome maybe not written yet
        try:
            while items:
                full = len(items) >= self._batch  # else it took all that was due: what comes later starts a lane anew
                for index, item in enumerate(items):
                    if full and following is None and len(items) - index <= self._refill_at:
                        held = [delivery_id for delivery_id in held if delivery_id in self._in_hand]
                        following = asyncio.ensure_future(self._claim_following(lane, set(held)))
                    if self._clock.now() + self._poster.timeout > leased_until:
                        await self._give_back(items[index:])
                        return
                    result = await self._poster.send(item)
                    self._metrics.event_webhooks.labels(result.tenant, result.status).inc()
                    ticket = self._results.add(result)
                    if result.status in (PENDING, DISABLED):
                        await self._results.written(ticket)
                        await self._give_back(items[index + 1:])
                        return
                if following is None:
                    return
                items, leased_until = await asyncio.shield(following)  # a stop does not cut the lease short unrecorded
                following = None
                held += [item.id for item in items]
        finally:
            if following is not None:  # stopped early: what was leased to follow goes back too
                await self._give_back_following(following)
            await self._results.written(ticket)

    async def _give_back_following(self, following: asyncio.Future[tuple[list[ClaimedWebhook], float]]) -> None:
        try:
            claimed, _leased_until = await following
        except Exception:  # noqa: BLE001 - the lane is ending anyway; what the claim took (if anything) is due when its lease ends
            log.exception("event webhooks: leasing a lane's next deliveries failed")
            return
        await self._give_back(claimed)

    async def _claim_following(self, lane: Lane, held: set[str]) -> tuple[list[ClaimedWebhook], float]:
        """The endpoint's next due deliveries for its running lane, and until when they are leased."""
        leased_until = self._clock.now() + self._lease
        claimed = await self._store.claim_lane_webhooks(*lane, held=held, limit=self._batch, lease_seconds=self._lease)
        self._in_hand.update(item.id for item in claimed)
        return claimed, leased_until

    async def _record(self, results: list[WebhookResult]) -> None:
        await self._store.record_webhooks(results)
        self._in_hand.difference_update(result.id for result in results)

    async def _give_back(self, items: Sequence[ClaimedWebhook]) -> None:
        if items:
            await self._store.release_webhooks([item.id for item in items])
            self._in_hand.difference_update(item.id for item in items)
