"""Event webhooks: tell tenants' endpoints about events, signed per Standard Webhooks, at least once.

Fan-out happens here, not where events are written: the worker reads the ``events`` table by
``seq`` past a cursor kept in the store and adds one ``webhook_deliveries`` row per endpoint
subscribed to the event's type in the policy in force *then* (a ``tenant``-less event goes to
every tenant's subscribed endpoints). The write paths stay one cheap INSERT per event and never
need the policy; moving the cursor and adding the rows is one transaction, so a crash neither
loses nor doubles a fan-out.

Delivery: due rows are claimed oldest event first with a lease; each endpoint's share of a
batch is sent one at a time in creation order (endpoints run side by side), so one slow
endpoint never holds back another. 2xx succeeds; 410 disables the endpoint (while its url stays
the same), and so does failing continuously for the endpoint's ``disable_after`` (5 days by
default), until the tenant enables it again; 429, 5xx, timeouts and network errors retry on the ``webhooks`` retry schedule
(honouring ``Retry-After``) and go ``dead`` when it runs out; any other status — a 3xx included,
redirects are never followed — is ``dead`` at once, since sending it again would get the same.
A url resolving to a loopback, link-local or private address is refused unless the endpoint
sets ``allow_private`` (SSRF).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Sequence
from dataclasses import replace
from typing import Final
from urllib.parse import urlsplit

import aiohttp
import orjson

from gateway import signing
from gateway.clock import Clock, isoformat
from gateway.lifecycle import RetrySchedule, plan_retry
from gateway.policy.durations import parse_duration
from gateway.policy.models import WebhookEndpointPolicy
from gateway.policy.view import PolicyHolder, PolicySet, retry_schedule_of
from gateway.provider_kit import retry_after_seconds
from gateway.store import ClaimedWebhook, Store, StoredEvent, WebhookResult, WebhookTarget
from gateway.watermark import Watermark

log = logging.getLogger(__name__)

SCHEDULE_NAME: Final = "webhooks"
DEFAULT_SCHEDULE: Final = RetrySchedule(8, (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0))
"""Immediately, then 5s, 5m, 30m, 2h, 5h, 10h, 10h: eight attempts over about 28 hours."""
IDLE_POLL: Final = 1.0

PENDING: Final = "pending"
SUCCEEDED: Final = "succeeded"
DEAD: Final = "dead"
DISABLED: Final = "disabled"


class RefusedUrlError(ValueError):
    """An endpoint url that resolves to an address the policy does not allow (SSRF guard)."""


def retry_schedule(policy: PolicySet) -> RetrySchedule:
    """The policy's ``webhooks`` retry schedule, else the Standard Webhooks-style default."""
    found = policy.document.retry_schedules.get(SCHEDULE_NAME)
    if found is None:
        return DEFAULT_SCHEDULE
    return retry_schedule_of(found)


def disable_after(endpoint: WebhookEndpointPolicy) -> float | None:
    """Seconds of continuous failure after which the endpoint is disabled; None: never."""
    return parse_duration(endpoint.disable_after) if endpoint.disable_after is not None else None


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


def is_private(address: str) -> bool:
    """Loopback, link-local, private, unspecified, multicast or reserved: nothing a tenant's endpoint should be."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or ip.is_link_local or ip.is_private or ip.is_unspecified or ip.is_multicast or ip.is_reserved


async def check_url(url: str) -> None:
    """Raise :class:`RefusedUrlError` when any address ``url``'s host resolves to is private.

    Every address is checked, not only the first, so a name with one public and one private
    record cannot be used to reach the private one.
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    for *_rest, sockaddr in infos:
        if is_private(str(sockaddr[0])):
            raise RefusedUrlError(f"{host} resolves to {sockaddr[0]}, a private address; set allow_private to send there")


def event_body(event: StoredEvent) -> bytes:
    """The JSON body: type, creation time, and the data with the event's ``seq`` so receivers can order."""
    return orjson.dumps({"type": event.type, "timestamp": isoformat(event.at), "data": {**event.data, "seq": event.seq}})


def signed_headers(
    endpoint: WebhookEndpointPolicy, event: StoredEvent, timestamp: int, body: bytes, signer: signing.Ed25519Signer
) -> dict[str, str]:
    """The Standard Webhooks headers: ``v1`` with the secret and every previous one still in rotation, plus ``v1a`` for ed25519 endpoints."""
    secrets = [secret for secret in (endpoint.secret, *endpoint.previous_secrets) if secret]
    asymmetric = signer if endpoint.signing == "ed25519" else None
    return {"content-type": "application/json", **signing.signature_headers(secrets, event.id, timestamp, body, signer=asymmetric)}


class EventWebhooks:
    """Fans events out to subscribed endpoints and delivers them until told to stop."""

    def __init__(
        self, store: Store, policies: PolicyHolder, session: aiohttp.ClientSession, clock: Clock, signer: signing.Ed25519Signer,
        *, batch: int = 200, lease_seconds: float = 60.0, timeout: float = 10.0,
    ) -> None:
        self._store = store
        self._signer = signer
        self._policies = policies
        self._session = session
        self._clock = clock
        self._batch = batch
        self._lease = lease_seconds
        self._timeout = aiohttp.ClientTimeout(total=timeout)
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
            result = await self.send(item)
            results.append(result)
            if result.status == DISABLED:
                break
        return results

    async def send(self, item: ClaimedWebhook) -> WebhookResult:
        """One attempt at one delivery, and what it means for the delivery and its endpoint."""
        policy = self._policies.current
        endpoint = policy.document.webhooks.get(item.tenant, {}).get(item.endpoint)
        if endpoint is None:
            return WebhookResult(item.id, item.tenant, item.endpoint, DEAD, last_error="endpoint no longer in policy")
        result = await self._attempt(item, policy, endpoint)
        return replace(result, url=endpoint.url, disable_after=disable_after(endpoint))

    async def _attempt(self, item: ClaimedWebhook, policy: PolicySet, endpoint: WebhookEndpointPolicy) -> WebhookResult:
        try:
            if not endpoint.allow_private:
                await check_url(endpoint.url)
            status, wait = await self._post(endpoint, item.event)
        except RefusedUrlError as err:
            log.warning("event webhook %s/%s refused: %s", item.tenant, item.endpoint, err)
            return WebhookResult(item.id, item.tenant, item.endpoint, DEAD, last_error=f"refused: {err}")
        except (aiohttp.ClientError, OSError, TimeoutError) as err:
            return self._retry(item, policy, None, f"{type(err).__name__}: {err}", None)
        return self._judge(item, policy, status, wait)

    async def _post(self, endpoint: WebhookEndpointPolicy, event: StoredEvent) -> tuple[int, float | None]:
        body = event_body(event)
        headers = signed_headers(endpoint, event, int(self._clock.now()), body, self._signer)
        async with self._session.post(endpoint.url, data=body, headers=headers, allow_redirects=False, timeout=self._timeout) as response:
            await response.read()
            return response.status, retry_after_seconds(response.headers.get("Retry-After"), now=self._clock.now())

    def _judge(self, item: ClaimedWebhook, policy: PolicySet, status: int, wait: float | None) -> WebhookResult:
        if 200 <= status < 300:
            return WebhookResult(item.id, item.tenant, item.endpoint, SUCCEEDED, last_status=status)
        if status == 410:
            log.warning("event webhook endpoint %s/%s answered 410 Gone: disabled", item.tenant, item.endpoint)
            return WebhookResult(item.id, item.tenant, item.endpoint, DISABLED, status, "410 Gone: endpoint disabled")
        if status == 429 or status >= 500:
            return self._retry(item, policy, status, f"HTTP {status}", wait)
        return WebhookResult(item.id, item.tenant, item.endpoint, DEAD, status, f"HTTP {status} (not retried; redirects are not followed)")

    def _retry(self, item: ClaimedWebhook, policy: PolicySet, status: int | None, error: str, wait: float | None) -> WebhookResult:
        """Try again on the schedule (later when ``Retry-After`` asks for longer), or give up when it has run out."""
        plan = plan_retry(retry_schedule(policy), item.attempt, self._clock.now(), error, retry_after=wait)
        if plan.retry_at is None:
            return WebhookResult(item.id, item.tenant, item.endpoint, DEAD, status, f"retries exhausted: {error}")
        return WebhookResult(item.id, item.tenant, item.endpoint, PENDING, status, error, plan.retry_at)
