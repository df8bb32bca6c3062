"""The webhook provider: POSTs each message as signed JSON to the recipient's ``url``.

Signed the Standard Webhooks way (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``)
with the instance's ``whsec_`` secret; ``webhook-id`` is the delivery id, the same on every
retry, so receivers can drop duplicates. 2xx is success; 408, 429 (honouring Retry-After) and
5xx are retried; redirects are not followed; any other answer is a permanent failure.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, ClassVar, Final

import aiohttp
import orjson

from gateway import OutboundMessage, PermanentDeliveryError, Provider, ProviderLimits, SendReceipt, TransientDeliveryError
from gateway.provider_kit import isoformat, retry_after_seconds, signature_headers

TRANSIENT_STATUSES: Final = frozenset({408, 425, 429})


class WebhookProvider(Provider):
    channels = frozenset({"webhook"})
    config_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "required": ["secret"],
        "properties": {
            "secret": {"type": "string", "pattern": "^whsec_[A-Za-z0-9+/=]{16,}$", "x-secret": True},
            "timeout_seconds": {"type": "number", "exclusiveMinimum": 0, "default": 10},
        },
        "additionalProperties": False,
    }
    limits = ProviderLimits(idempotency=True)

    async def send(self, message: OutboundMessage) -> SendReceipt:
        now = self.context.clock.now()
        body = orjson.dumps(
            {
                "type": "notification",
                "delivery_id": message.delivery_id,
                "notification_id": message.notification_id,
                "channel": message.channel,
                "subject": message.subject,
                "body": message.body,
                "template_id": message.template_id,
                "metadata": dict(message.metadata),
                "attempt": message.attempt,
                "sent_at": isoformat(now),
            }
        )
        headers = signature_headers([self.config["secret"]], message.delivery_id, int(now), body)
        headers |= {"Content-Type": "application/json", "Idempotency-Key": message.idempotency_key}
        timeout = aiohttp.ClientTimeout(total=float(self.config.get("timeout_seconds", 10)))
        try:
            async with self.context.session.post(
                message.to, data=body, headers=headers, timeout=timeout, allow_redirects=False
            ) as response:
                await response.read()
                return self._classify(message, response.status, response.headers)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as err:
            raise TransientDeliveryError(f"could not reach {message.to}: {type(err).__name__}: {err}") from err

    def _classify(self, message: OutboundMessage, status: int, headers: Mapping[str, str]) -> SendReceipt:
        if 200 <= status < 300:
            return SendReceipt(provider_message_id=message.delivery_id, detail={"http_status": status})
        if status in TRANSIENT_STATUSES or status >= 500:
            raise TransientDeliveryError(
                f"endpoint answered {status}", retry_after=retry_after_seconds(headers.get("Retry-After"), now=self.context.clock.now()), detail={"http_status": status}
            )
        if 300 <= status < 400:
            raise PermanentDeliveryError(f"endpoint answered a redirect ({status}); redirects are not followed", detail={"http_status": status})
        raise PermanentDeliveryError(f"endpoint refused the message ({status})", detail={"http_status": status})
