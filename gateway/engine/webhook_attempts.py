"""One attempt at one event webhook delivery: sign the event, POST it, and judge the answer.

2xx succeeds; 410 disables the endpoint (while its url stays the same); 429, 5xx, timeouts and
network errors retry on the ``webhooks`` retry schedule (honouring ``Retry-After``) and go
``dead`` when it runs out; any other status — a 3xx included, redirects are never followed — is
``dead`` at once, since sending it again would get the same.

An endpoint without ``allow_private`` is posted to through a connector that connects only to
publicly routable addresses (:mod:`gateway.egress`): its url resolving to a loopback,
link-local, private or otherwise non-public address, or naming one, is refused on the socket,
before anything is sent, and the delivery is ``dead``. Network failures read the same whatever
their cause, so ``last_error`` does not map a network.

An attempt never raises: a bug in signing or sending one delivery (say, a secret that does not
decode, which policy validation should have refused) is logged and retried as that delivery's
failure, and the other deliveries carry on.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Final

import aiohttp
import orjson

from gateway import signing
from gateway.clock import Clock, isoformat
from gateway.egress import public_connector, refused_as_private
from gateway.lifecycle import RetrySchedule, plan_retry
from gateway.policy.durations import parse_duration
from gateway.policy.models import WebhookEndpointPolicy
from gateway.policy.view import PolicyHolder, PolicySet, retry_schedule_of
from gateway.provider_kit import retry_after_seconds
from gateway.store import ClaimedWebhook, StoredEvent, WebhookResult

log = logging.getLogger(__name__)

SCHEDULE_NAME: Final = "webhooks"
DEFAULT_SCHEDULE: Final = RetrySchedule(8, (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0))
"""Immediately, then 5s, 5m, 30m, 2h, 5h, 10h, 10h: eight attempts over about 28 hours."""

PENDING: Final = "pending"
SUCCEEDED: Final = "succeeded"
DEAD: Final = "dead"
DISABLED: Final = "disabled"

REFUSED_PRIVATE: Final = "refused: the url is not on a public address; set allow_private on the endpoint to send there"
UNREACHABLE: Final = "could not connect to the endpoint"
NO_ANSWER: Final = "the endpoint did not answer in time"


def retry_schedule(policy: PolicySet) -> RetrySchedule:
    """The policy's ``webhooks`` retry schedule, else the Standard Webhooks-style default."""
    found = policy.document.retry_schedules.get(SCHEDULE_NAME)
    if found is None:
        return DEFAULT_SCHEDULE
    return retry_schedule_of(found)


def disable_after(endpoint: WebhookEndpointPolicy) -> float | None:
    """Seconds of continuous failure after which the endpoint is disabled; None: never."""
    return parse_duration(endpoint.disable_after) if endpoint.disable_after is not None else None


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


class WebhookPoster:
    """Makes attempts: signs, posts through the right client, and says what the answer means."""

    def __init__(
        self, policies: PolicyHolder, session: aiohttp.ClientSession, clock: Clock, signer: signing.Ed25519Signer, *, timeout: float
    ) -> None:
        self._policies = policies
        self._private = session  # the gateway's shared client: for endpoints with allow_private
        self._public: aiohttp.ClientSession | None = None
        self._clock = clock
        self._signer = signer
        self.timeout = timeout

    async def aclose(self) -> None:
        if self._public is not None:
            await self._public.close()
            self._public = None

    def _session(self, endpoint: WebhookEndpointPolicy) -> aiohttp.ClientSession:
        if endpoint.allow_private:
            return self._private
        if self._public is None:
            self._public = aiohttp.ClientSession(connector=public_connector(), headers=self._private.headers)
        return self._public

    async def send(self, item: ClaimedWebhook) -> WebhookResult:
        """One attempt at one delivery, and what it means for the delivery and its endpoint; never raises."""
        policy = self._policies.current
        endpoint = policy.document.webhooks.get(item.tenant, {}).get(item.endpoint)
        if endpoint is None:
            return WebhookResult(item.id, item.tenant, item.endpoint, DEAD, last_error="endpoint no longer in policy")
        try:
            result = await self._attempt(item, policy, endpoint)
        except Exception as err:  # noqa: BLE001 - one delivery's bug is that delivery's failure, not its lane's
            log.exception("event webhook %s to %s/%s failed unexpectedly", item.id, item.tenant, item.endpoint)
            result = self._retry(item, policy, None, f"internal error: {type(err).__name__}", None)
        return replace(result, url=endpoint.url, disable_after=disable_after(endpoint))

    async def _attempt(self, item: ClaimedWebhook, policy: PolicySet, endpoint: WebhookEndpointPolicy) -> WebhookResult:
        try:
            status, wait = await self._post(endpoint, item.event)
        except TimeoutError:
            return self._retry(item, policy, None, NO_ANSWER, None)
        except (aiohttp.ClientError, OSError) as err:
            if refused_as_private(err):
                log.warning("event webhook %s/%s refused: its url is not on a public address", item.tenant, item.endpoint)
                return WebhookResult(item.id, item.tenant, item.endpoint, DEAD, last_error=REFUSED_PRIVATE)
            return self._retry(item, policy, None, UNREACHABLE, None)
        return self._judge(item, policy, status, wait)

    async def _post(self, endpoint: WebhookEndpointPolicy, event: StoredEvent) -> tuple[int, float | None]:
        body = event_body(event)
        headers = signed_headers(endpoint, event, int(self._clock.now()), body, self._signer)
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with self._session(endpoint).post(endpoint.url, data=body, headers=headers, allow_redirects=False, timeout=timeout) as response:
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
