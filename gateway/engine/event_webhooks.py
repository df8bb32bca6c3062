"""Event webhooks: tell tenants' endpoints about events, signed per Standard Webhooks, at least once.

Fan-out happens here, not where events are written: the worker reads the ``events`` table by
``seq`` past a cursor kept in the store and adds one ``webhook_deliveries`` row per endpoint
subscribed to the event's type in the policy in force *then* (a ``tenant``-less event goes to
every tenant's subscribed endpoints). The write paths stay one cheap INSERT per event and never
need the policy; moving the cursor and adding the rows is one transaction, so a crash neither
loses nor doubles a fan-out.

Delivery: due rows are claimed oldest event first with a lease; each endpoint's share of a
batch is sent one at a time in creation order (endpoints run side by side). Failing
continuously for the endpoint's ``disable_after`` (5 days by default) disables it, until the
tenant enables it again. What one attempt does with the answer, and the SSRF guard, is
:mod:`gateway.engine.webhook_attempts`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Final

import aiohttp

from gateway import signing
from gateway.clock import Clock
from gateway.engine.webhook_attempts import DISABLED, WebhookPoster
from gateway.policy.models import WebhookEndpointPolicy
from gateway.policy.view import PolicyHolder, PolicySet
from gateway.store import ClaimedWebhook, Store, StoredEvent, WebhookResult, WebhookTarget
from gateway.watermark import Watermark

log = logging.getLogger(__name__)

IDLE_POLL: Final = 1.0


def subscribed(endpoint: WebhookEndpointPolicy, event_type: str) -> bool:
    return "*" in endpoint.events or event_type in endpoint.events


def targets_of(event: StoredEvent, policy: PolicySet, disabled: dict[tuple[str, str], str]) -> list[WebhookTarget]:
    """The endpoints ``event`` goes to under ``policy``: its tenant's, or every tenant's when it has none."""
    tenants = [event.tenant] if event.tenant is not None else sorted(policy.document.webhooks)
    return [
        WebhookTarget(event, tenant, name, disabled=disabled.get((tenant, name)) == endpoint.url)
        for tenant in tenants
        for name, endpoint in policy.document.webhooks.get(tenant, {}).items()
        if subscribed(endpoint, event.type)
    ]


class EventWebhooks:
    """Fans events out to subscribed endpoints and delivers them until told to stop."""

    def __init__(
        self, store: Store, policies: PolicyHolder, session: aiohttp.ClientSession, clock: Clock, signer: signing.Ed25519Signer,
        *, batch: int = 200, lease_seconds: float = 60.0, timeout: float = 10.0,
    ) -> None:
        self._store = store
        self._policies = policies
        self._clock = clock
        self._batch = batch
        self._lease = lease_seconds
        self._poster = WebhookPoster(policies, session, clock, signer, timeout=timeout)
        self._task: asyncio.Task[None] | None = None
        self._in_hand: set[str] = set()  # claimed, outcome not recorded yet
        self._passes = 0  # passes begun
        self._quiet = Watermark()  # the number of the latest pass that found nothing to do
        self._wakeup = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="event-webhooks")

    async def stop(self) -> None:
        """Stop at once, giving back the leases of sends cut short so the next start sends them again."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._in_hand:
            log.info("event webhooks: %d sends cut short by the shutdown are due again", len(self._in_hand))
            await self._store.release_webhooks(sorted(self._in_hand))
            self._in_hand.clear()
        await self._poster.aclose()

    async def until_idle(self) -> None:
        """Return once a pass begun after this call found no event to fan out and nothing due at the clock's time.

        Tests wait on this rather than on time, so "not sent yet" is a finding.
        """
        mark = self._passes
        self._wakeup.set()
        if self._task is not None and not self._task.done():
            await self._quiet.wait_past(mark)

    async def _run(self) -> None:
        while True:
            self._wakeup.clear()
            self._passes += 1
            number, seen = self._passes, self._store.commits
            try:
                busy = await self.fan_out() | await self.deliver_due()
            except Exception:  # noqa: BLE001 - the worker outlives any one bad batch
                log.exception("event webhooks: batch failed; trying again")
                busy = False
                await self._clock.sleep(IDLE_POLL)
            if not busy:
                self._quiet.raise_to(number)
                await self._idle(seen)

    async def _idle(self, seen: int) -> None:
        """Wait for a commit (new events), the next retry or a wake-up, whichever comes first."""
        due = await self._store.next_webhook_due()
        delay = IDLE_POLL if due is None else min(IDLE_POLL, due - self._clock.now())
        waits = [
            asyncio.ensure_future(self._store.wait_for_commit(seen)),
            asyncio.ensure_future(self._clock.sleep(delay)),
            asyncio.ensure_future(self._wakeup.wait()),
        ]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    async def fan_out(self) -> bool:
        """Turn new events into webhook deliveries; whether there were any."""
        events = await self._store.events_to_fan_out(limit=self._batch)
        if not events:
            return False
        policy, disabled = self._policies.current, await self._store.disabled_webhook_endpoints()
        targets = [target for event in events for target in targets_of(event, policy, disabled)]
        await self._store.fan_out(targets, events[-1].seq)
        return True

    async def deliver_due(self) -> bool:
        """Send one batch of due deliveries; whether there was one."""
        due = await self._store.next_webhook_due()
        if due is None or due > self._clock.now():
            return False
        claimed = await self._store.claim_webhooks(limit=self._batch, lease_seconds=self._lease)
        self._in_hand.update(item.id for item in claimed)
        by_endpoint: dict[tuple[str, str], list[ClaimedWebhook]] = {}
        for item in claimed:
            by_endpoint.setdefault((item.tenant, item.endpoint), []).append(item)
        results = await asyncio.gather(*(self._send_in_order(items) for items in by_endpoint.values()))
        await self._store.record_webhooks([result for batch in results for result in batch])
        self._in_hand.difference_update(item.id for item in claimed)
        return bool(claimed)

    async def _send_in_order(self, items: Sequence[ClaimedWebhook]) -> list[WebhookResult]:
        """One endpoint's deliveries, one at a time in creation order; after a 410 the rest stay for the store to disable."""
        results: list[WebhookResult] = []
        for item in items:
            result = await self._poster.send(item)
            results.append(result)
            if result.status == DISABLED:
                break
        return results
