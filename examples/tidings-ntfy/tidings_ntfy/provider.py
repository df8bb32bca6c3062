"""The ntfy provider: adds the ``ntfy`` channel and publishes each message to an ntfy server.

A recipient is addressed by ``ntfy_topic``; the message's subject becomes the notification's
title. Each send is one ``POST {server}/`` in ntfy's JSON publish form::

    {"topic": "alerts-7f3a", "message": "Disk is 91% full", "title": "db-1",
     "priority": 4, "tags": ["warning"], "sequence_id": "dlv_01J…"}

and ntfy answers ``200 {"id": "sPs71M8A2T", "time": …, "event": "message", …}``: that ``id`` is
the provider message id. Failures answer ``{"code": 40101, "http": 401, "error": "unauthorized",
"link": …}``; the ``code`` is looked up in :data:`ERRORS`, else the HTTP status decides
(429 and 5xx transient, 401/403 credentials, anything else permanent).

Vendor quirks handled:

- The JSON form rather than ``POST {server}/{topic}`` with ``Title``/``Priority``/``Tags``
  headers: a title is free text, and non-ASCII in HTTP headers is not safe with every client or
  proxy (ntfy's docs say so); in a JSON body it always is. Priority is an integer 1-5 there, so
  names (``high``, ``urgent``) are translated.
- Topics are ``[-_A-Za-z0-9]{1,64}``; anything else is refused here as ``invalid_recipient``
  without a request (ntfy would answer 40009).
- ntfy does not deduplicate, but a message published with the same ``sequence_id`` replaces
  the earlier one on subscribed clients: the delivery id (stable across retries) is sent as
  ``sequence_id``, so a retry after a timeout that did get through shows once, not twice.
  Servers older than sequence IDs ignore the unknown field.
- Authentication: an access token (``Authorization: Bearer tk_…``) or a user and password
  (Basic), never both. Neither is needed for an open topic. The server URL may not carry
  credentials itself (``https://user:pw@…`` is refused by the config schema).
- Redirects are not followed (an ``http://`` server answering 301 to ``https://`` fails
  permanently, naming the status: fix the URL).

ntfy has no delivery receipts or replies, so this plugin takes no webhooks.

ntfy documentation relied on:

- publishing as JSON: https://docs.ntfy.sh/publish/#publish-as-json
- title, priority, tags: https://docs.ntfy.sh/publish/#message-title,
  https://docs.ntfy.sh/publish/#message-priority, https://docs.ntfy.sh/publish/#tags-emojis
- sequence IDs: https://docs.ntfy.sh/publish/#updating-deleting-notifications
- authentication: https://docs.ntfy.sh/publish/#authentication
- limits (4,096-byte messages, 1 KB titles, request rate): https://docs.ntfy.sh/publish/#limitations
- error codes: https://github.com/binwiederhier/ntfy/blob/main/server/errors.go
- ``GET /v1/account`` (allowed anonymously; 401 for bad credentials), used by
  :meth:`NtfyProvider.check_credentials`: https://github.com/binwiederhier/ntfy/blob/main/server/server.go
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from typing import Any, ClassVar, Final
from urllib.parse import urlsplit

import aiohttp

from gateway import ChannelSpec, DeliveryError, OutboundMessage, PermanentDeliveryError, Provider, ProviderLimits, SendReceipt
from gateway.provider_kit import TIMEOUT_PROPERTY, VendorError, failure, json_answer, retry_after_seconds, timeout_of, vendor_call

VENDOR: Final = "ntfy"
CHANNEL: Final = ChannelSpec("ntfy", ("ntfy_topic",), subject=True, description="ntfy push notification to a topic")
TOPIC: Final = re.compile(r"[-_A-Za-z0-9]{1,64}")
PRIORITIES: Final[Mapping[str, int]] = {"min": 1, "low": 2, "default": 3, "high": 4, "max": 5, "urgent": 5}
PRIORITY_SCHEMA: Final[Mapping[str, Any]] = {
    "description": "min, low, default, high, max (or urgent), or 1-5.",
    "anyOf": [{"enum": sorted(PRIORITIES)}, {"type": "integer", "minimum": 1, "maximum": 5}],
}
PRIORITY_KEY: Final = "ntfy_priority"
TAGS_KEY: Final = "ntfy_tags"
"""Request ``metadata`` keys that override the instance's priority and tags for one message."""

ERRORS: Final[Mapping[int, VendorError]] = {
    40007: VendorError(transient=False, meaning="invalid priority", code="invalid_request"),
    40009: VendorError(transient=False, meaning="topic invalid", code="invalid_recipient"),
    40010: VendorError(transient=False, meaning="topic name is disallowed", code="invalid_recipient"),
    40011: VendorError(transient=False, meaning="message must be UTF-8 encoded", code="invalid_request"),
    40017: VendorError(transient=False, meaning="request body must be message JSON", code="invalid_request"),
    40024: VendorError(transient=False, meaning="request body must be valid JSON", code="invalid_request"),
    40101: VendorError(transient=False, meaning="unauthorized (wrong token, user or password)", credentials=True),
    40301: VendorError(transient=False, meaning="forbidden (these credentials may not publish to the topic)", credentials=True),
    41303: VendorError(transient=False, meaning="JSON body too large", code="message_too_large"),
    42901: VendorError(transient=True, meaning="too many requests", code="rate_limited"),
    42904: VendorError(transient=True, meaning="the server's total number of topics is reached", code="rate_limited"),
    42908: VendorError(transient=True, meaning="message limit reached", code="rate_limited"),
    50001: VendorError(transient=True, meaning="internal server error"),
}
"""ntfy's own error codes (the ``code`` of its error answer); anything else falls back on the HTTP status."""


class NtfyProvider(Provider):
    """Publishes to topics on one ntfy server (ntfy.sh or your own)."""

    channels = frozenset({CHANNEL.name})
    new_channels = (CHANNEL,)
    config_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "required": ["server"],
        "properties": {
            "server": {
                "type": "string",
                "pattern": r"^https?://[^\s/?#@]+(/[^\s?#]*)?$",
                "description": "The ntfy server, such as https://ntfy.sh or https://ntfy.example.com (no credentials in it).",
            },
            "token": {"type": "string", "pattern": "^tk_[A-Za-z0-9]+$", "x-secret": True, "description": "An access token, tk_…"},
            "username": {"type": "string", "minLength": 1},
            "password": {"type": "string", "minLength": 1, "x-secret": True},
            "priority": {**PRIORITY_SCHEMA, "description": "Default priority: " + str(PRIORITY_SCHEMA["description"])},
            "tags": {"type": "array", "items": {"type": "string", "minLength": 1}, "description": "Tags (or emoji short codes) on every message."},
            "markdown": {"type": "boolean", "default": False, "description": "Render message bodies as Markdown."},
            "timeout_seconds": TIMEOUT_PROPERTY,
        },
        "dependentRequired": {"username": ["password"], "password": ["username"]},
        "not": {"required": ["token", "username"]},
        "additionalProperties": False,
    }
    limits = ProviderLimits(max_body_chars=4096, receipts=False, replies=False, idempotency=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._server = str(self.config["server"]).rstrip("/")

    async def send(self, message: OutboundMessage) -> SendReceipt:
        if not TOPIC.fullmatch(message.to):
            raise PermanentDeliveryError(
                "ntfy topics are 1-64 letters, digits, - or _ (the recipient's ntfy_topic is not one)", code="invalid_recipient"
            )
        if message.body is None:
            raise PermanentDeliveryError("ntfy takes a text body; this message has none (html is not sent)", code="missing_content")
        payload = self._payload(message)
        async with vendor_call(
            self.context.session, "POST", f"{self._server}/", timeout=timeout_of(self.config), vendor=VENDOR,
            json=payload, headers=self._headers(),
        ) as response:
            answer = await json_answer(response)
            if response.status >= 300:
                raise _refusal(response, answer)
        message_id = answer.get("id")
        if not isinstance(message_id, str) or not message_id:
            raise PermanentDeliveryError(
                f"the server answered {response.status} without an ntfy message id: is 'server' really an ntfy server?",
                code="unexpected_response", detail={"http_status": response.status},
            )
        return SendReceipt(provider_message_id=message_id, detail={"topic": message.to})

    async def check_credentials(self) -> str | None:
        """``GET /v1/account``: who the server takes these credentials for (anonymous without any)."""
        async with vendor_call(
            self.context.session, "GET", f"{self._server}/v1/account", timeout=timeout_of(self.config), vendor=VENDOR,
            headers=self._headers(),
        ) as response:
            answer = await json_answer(response)
            if response.status == 404:
                return f"ntfy server at {self._host()} has no /v1/account (older than ntfy 2.0?): credentials not checked"
            if response.status >= 300:
                raise _refusal(response, answer)
        username = answer.get("username")
        if not isinstance(username, str) or username in ("", "*"):
            return f"ntfy server at {self._host()}, publishing anonymously"
        role = answer.get("role")
        return f"ntfy user {username!r} ({role or 'user'}) at {self._host()}"

    def _payload(self, message: OutboundMessage) -> dict[str, Any]:
        payload: dict[str, Any] = {"topic": message.to, "message": message.body, "sequence_id": message.idempotency_key}
        if message.subject:
            payload["title"] = message.subject
        priority = message.metadata.get(PRIORITY_KEY, self.config.get("priority"))
        if priority is not None:
            payload["priority"] = _priority(priority)
        tags = message.metadata.get(TAGS_KEY)
        tag_list = [tag.strip() for tag in tags.split(",") if tag.strip()] if isinstance(tags, str) else list(self.config.get("tags", ()))
        if tag_list:
            payload["tags"] = tag_list
        if self.config.get("markdown"):
            payload["markdown"] = True
        return payload

    def _headers(self) -> dict[str, str]:
        """``Authorization`` for the configured token or user (Basic, UTF-8), or none for an open topic."""
        if token := self.config.get("token"):
            return {"Authorization": f"Bearer {token}"}
        if "username" in self.config:
            pair = f"{self.config['username']}:{self.config['password']}".encode()
            return {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}
        return {}

    def _host(self) -> str:
        return urlsplit(self._server).netloc


def _priority(value: object) -> int:
    """ntfy's 1-5 for a name or a number; a bad per-message value is the request's fault, so permanent."""
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 5:
        return value
    if isinstance(value, str) and value.strip().lower() in PRIORITIES:
        return PRIORITIES[value.strip().lower()]
    if isinstance(value, str) and value.strip() in {"1", "2", "3", "4", "5"}:
        return int(value)
    raise PermanentDeliveryError(f"{PRIORITY_KEY} must be {PRIORITY_SCHEMA['description']}", code="invalid_request")


def _refusal(response: aiohttp.ClientResponse, answer: Mapping[str, Any]) -> DeliveryError:
    """The error for ntfy's answer (``{}`` when it was not JSON: a proxy's error page): its ``code`` from :data:`ERRORS`, else the HTTP status's default."""
    code = answer.get("code") if isinstance(answer.get("code"), int) else None
    return failure(
        ERRORS, code, str(answer.get("error") or f"HTTP {response.status}"), http_status=response.status,
        retry_after=retry_after_seconds(response.headers.get("Retry-After")), vendor=VENDOR,
    )
