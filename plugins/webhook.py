"""The webhook provider: POSTs each message as signed JSON to the recipient's ``url``.

Signed the Standard Webhooks way (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``)
with the instance's ``whsec_`` secret; ``webhook-id`` is the delivery id, the same on every
retry, so receivers can drop duplicates. 2xx is success; 408, 429 (honouring Retry-After) and
5xx are retried; redirects are not followed; any other answer is a permanent failure.

The url is the tenant's to choose, so it is held to public addresses (SSRF): the connection
is made through the kit's :func:`~gateway.provider_kit.public_connector`, which refuses
loopback, link-local, private and other non-public addresses on the socket itself, whatever
the url's name resolves to. Such a url fails for good (code ``address_not_allowed``) unless the
instance sets ``allow_private: true``. A url that cannot be reached fails in the same words
whatever the reason (refused, reset, unresolvable), so attempts do not map a network.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, ClassVar, Final

import aiohttp
import orjson

from gateway import RECIPIENT_UNAVAILABLE, OutboundMessage, PermanentDeliveryError, Provider, ProviderLimits, SendReceipt, TransientDeliveryError
from gateway.provider_kit import isoformat, public_connector, refused_as_private, retry_after_seconds, signature_headers

TRANSIENT_STATUSES: Final = frozenset({408, 425, 429})
ADDRESS_NOT_ALLOWED: Final = "address_not_allowed"


class WebhookProvider(Provider):
    channels = frozenset({"webhook"})
    config_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "required": ["secret"],
        "properties": {
            "secret": {
                "type": "string",
                # whsec_ and base64 that decodes (length a multiple of 4, padding only at the end), 12 bytes or more
                "pattern": "^whsec_(?=.{16})(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$",
                "description": "must be whsec_ then the key in base64 (at least 12 bytes), such as whsec_ followed by `openssl rand -base64 32`",
                "x-secret": True,
            },
            "timeout_seconds": {"type": "number", "exclusiveMinimum": 0, "default": 10},
            "allow_private": {
                "type": "boolean",
                "default": False,
                "description": "Also send to urls on loopback, link-local and private addresses (refused otherwise: SSRF).",
            },
        },
        "additionalProperties": False,
    }
    limits = ProviderLimits(idempotency=True)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._public: aiohttp.ClientSession | None = None

    def _session(self) -> aiohttp.ClientSession:
        """The gateway's shared client with ``allow_private``; otherwise this instance's own, public addresses only."""
        if self.config.get("allow_private", False):
            return self.context.session
        if self._public is None:
            self._public = aiohttp.ClientSession(connector=public_connector(), headers=self.context.session.headers)
        return self._public

    async def aclose(self) -> None:
        if self._public is not None:
            await self._public.close()

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
            async with self._session().post(message.to, data=body, headers=headers, timeout=timeout, allow_redirects=False) as response:
                await response.read()
                return self._classify(message, response.status, response.headers)
        except asyncio.TimeoutError as err:
            raise TransientDeliveryError("the endpoint did not answer in time", code=RECIPIENT_UNAVAILABLE) from err
        except (aiohttp.ClientError, OSError) as err:
            if refused_as_private(err):
                raise PermanentDeliveryError(
                    "the url is not on a public address; only an instance with allow_private: true sends there", code=ADDRESS_NOT_ALLOWED
                ) from err
            raise TransientDeliveryError("could not connect to the endpoint", code=RECIPIENT_UNAVAILABLE) from err

    def _classify(self, message: OutboundMessage, status: int, headers: Mapping[str, str]) -> SendReceipt:
        if 200 <= status < 300:
            return SendReceipt(provider_message_id=message.delivery_id, detail={"http_status": status})
        if status in TRANSIENT_STATUSES or status >= 500:
            raise TransientDeliveryError(
                f"endpoint answered {status}", retry_after=retry_after_seconds(headers.get("Retry-After"), now=self.context.clock.now()),
                code=RECIPIENT_UNAVAILABLE, detail={"http_status": status},
            )
        if 300 <= status < 400:
            raise PermanentDeliveryError(f"endpoint answered a redirect ({status}); redirects are not followed", detail={"http_status": status})
        raise PermanentDeliveryError(f"endpoint refused the message ({status})", detail={"http_status": status})
