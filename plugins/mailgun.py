"""Mailgun: email through Mailgun's HTTP API, with signed event webhooks for receipts and opt-outs.

Vendor documentation:

- Sending: https://documentation.mailgun.com/docs/mailgun/api-reference/openapi-final/tag/Messages/
  and https://documentation.mailgun.com/docs/mailgun/user-manual/sending-messages/send-http
- Regions: https://documentation.mailgun.com/en/latest/api-sending.html (EU: ``api.eu.mailgun.net``)
- Webhook signatures: https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/securing-webhooks
- Events and failures: https://documentation.mailgun.com/docs/mailgun/user-manual/tracking-messages/
  and https://documentation.mailgun.com/docs/mailgun/user-manual/tracking-messages/tracking-failures
- Domain details: https://documentation.mailgun.com/docs/mailgun/api-reference/send/mailgun/domains/get-v4-domains--name-

Sending is ``POST {base_url}/v3/{domain}/messages`` as multipart form fields (``from``, ``to``,
``subject``, ``text``, ``html``, ``h:Reply-To``) with basic auth ``api:<api_key>``. The
``region`` picks the API host (``us`` or ``eu``: a domain lives in one region and the other
answers 404); ``base_url`` overrides both. Our delivery id rides along as the custom variable
``v:tidings-delivery-id``, which Mailgun echoes in every webhook under ``user-variables``.

Vendor quirks handled here:

- The answer is ``{"id": "<…@domain>", "message": "Queued. Thank you."}``: the id has angle
  brackets, webhooks carry it bare (``event-data.message.headers.message-id``), so it is stored bare.
- Mailgun has no error codes, only HTTP statuses and a ``message``; its 401 is plain text
  (``Forbidden``). The error table is keyed by status, plus ``invalid_address`` for a 400 whose
  message says an address is not valid (the recipient, as a rule).
- There is no idempotency key: a send that timed out after Mailgun queued it may go out twice.
- The webhook signature is hex HMAC-SHA256 of ``timestamp + token`` under the *webhook signing
  key* (not the API key). It does not cover ``event-data``: a body re-serialised by a proxy still
  verifies, and a captured signature could be replayed with another body, so each instance
  refuses timestamps more than five minutes off its clock and remembers the tokens it accepted
  (in memory, pruned by age) to refuse them a second time. A subaccount's event also carries a
  ``parent-signature`` (the primary account's key); either one matching is enough.
- Only JSON webhooks (Mailgun's current format) are accepted; the legacy form-encoded ones are not.
- ``failed`` events have a ``severity``: ``temporary`` means Mailgun is still trying (``sent``);
  ``permanent`` with a bounce ``reason`` (``bounce``, ``delayed-bounce``, ``suppress-bounce``) is
  ``bounced``, any other permanent failure ``failed``. A drop because the address is on the
  domain's unsubscribe or complaint list (``suppress-unsubscribe``, ``suppress-complaint``) is also
  reported as the recipient's opt-out, so Tidings stops sending to them.
- ``unsubscribed`` and ``complained`` become an :class:`~gateway.OptOut` of the recipient on the
  email channel, about the message it came from; both also prove the message was ``delivered``.
- Our delivery id rides along as the user variable ``tidings_delivery_id`` and comes back in
  every event, so a receipt finds its delivery even when the send's answer was lost.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections import OrderedDict
from collections.abc import Mapping
from email.utils import formataddr
from typing import Any, ClassVar, Final
from urllib.parse import quote

import aiohttp

from gateway import (
    DeliveryError,
    InboundRequest,
    OptOut,
    OutboundMessage,
    Provider,
    ProviderContext,
    ProviderLimits,
    SendReceipt,
    StatusUpdate,
    TransientDeliveryError,
    WebhookVerificationError,
)
from gateway.provider_kit import TIMEOUT_PROPERTY, VendorError, failure, json_answer, retry_after_seconds, same_secret, timeout_of, vendor_call

VENDOR: Final = "Mailgun"
REGIONS: Final[Mapping[str, str]] = {"us": "https://api.mailgun.net", "eu": "https://api.eu.mailgun.net"}
DELIVERY_ID_VARIABLE: Final = "tidings-delivery-id"
SIGNATURE_TOLERANCE: Final = 300.0
"""Seconds a webhook's signed timestamp may be off the instance's clock, either way."""
SEEN_TOKENS_CAPACITY: Final = 100_000
"""Accepted webhook tokens remembered per instance; past this the oldest are forgotten first."""
_EMAIL: Final = r"^[^@\s]+@[^@\s]+$"
INVALID_ADDRESS: Final = "invalid_address"
"""Our key for Mailgun's 400 "… parameter is not a valid address" (it has no codes of its own)."""

ERRORS: Final[Mapping[int | str, VendorError]] = {
    INVALID_ADDRESS: VendorError(transient=False, meaning="Mailgun says an address is not valid", code="invalid_recipient"),
    400: VendorError(transient=False, meaning="Mailgun refused the request as malformed"),
    401: VendorError(transient=False, meaning="check this instance's `api_key` (keys are per region)", credentials=True),
    402: VendorError(transient=False, meaning="Mailgun could not carry out a valid request"),
    403: VendorError(transient=False, meaning="Mailgun refused this account access (disabled or not verified?)", credentials=True),
    404: VendorError(transient=False, meaning="Mailgun does not know this `domain` in this `region`", credentials=True),
    413: VendorError(transient=False, meaning="the message is over Mailgun's 25 MB limit", code="message_too_large"),
    429: VendorError(transient=True, meaning="Mailgun is throttling this account", code="rate_limited"),
    500: VendorError(transient=True, meaning="Mailgun had an internal error"),
    502: VendorError(transient=True, meaning="Mailgun's gateway failed"),
    503: VendorError(transient=True, meaning="Mailgun is unavailable"),
    504: VendorError(transient=True, meaning="Mailgun's gateway timed out"),
}

BOUNCE_REASONS: Final = frozenset({"bounce", "delayed-bounce", "suppress-bounce"})
OPT_OUT_REASONS: Final = frozenset({"suppress-unsubscribe", "suppress-complaint"})
OPT_OUT_EVENTS: Final = frozenset({"unsubscribed", "complained"})
EVENT_STATUSES: Final[Mapping[str, str]] = {
    "accepted": "sent",
    "delivered": "delivered",
    "opened": "opened",
    "clicked": "clicked",
    "unsubscribed": "delivered",
    "complained": "delivered",
}
"""``event-data.event`` → Tidings receipt status; ``failed`` depends on its severity and reason."""


class MailgunProvider(Provider):
    """Email through one Mailgun sending domain."""

    channels = frozenset({"email"})
    config_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "required": ["api_key", "domain", "from"],
        "properties": {
            "api_key": {"type": "string", "minLength": 1, "x-secret": True, "description": "A Mailgun API key (private or domain sending key)."},
            "domain": {
                "type": "string",
                "pattern": "^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$",
                "description": "The sending domain as Mailgun knows it, e.g. mg.example.com.",
            },
            "region": {"enum": ["us", "eu"], "default": "us", "description": "Where the domain lives: us (api.mailgun.net) or eu (api.eu.mailgun.net)."},
            "base_url": {"type": "string", "pattern": "^https?://", "description": "Overrides the region's API host (tests, proxies)."},
            "from": {"type": "string", "pattern": _EMAIL, "description": "Default From address (a tenant's email sender wins)."},
            "from_name": {"type": "string", "description": "Display name for `from`."},
            "reply_to": {"type": "string", "pattern": _EMAIL, "description": "Reply-To for messages sent from `from`."},
            "webhook_signing_key": {
                "type": "string",
                "minLength": 1,
                "x-secret": True,
                "description": "The HTTP webhook signing key (Mailgun console → Webhooks); without it, callbacks are refused.",
            },
            "timeout_seconds": TIMEOUT_PROPERTY,
        },
        "additionalProperties": False,
    }
    limits = ProviderLimits(receipts=True)

    def __init__(self, name: str, config: Mapping[str, Any], context: ProviderContext) -> None:
        super().__init__(name, config, context)
        self._tokens = _SeenTokens(max_age=2 * SIGNATURE_TOLERANCE, capacity=SEEN_TOKENS_CAPACITY)

    @property
    def base_url(self) -> str:
        url = self.config.get("base_url") or REGIONS[self.config.get("region", "us")]
        return str(url).rstrip("/")

    def _domain_url(self, prefix: str, suffix: str = "") -> str:
        return f"{self.base_url}{prefix}/{quote(self.config['domain'], safe='')}{suffix}"

    def _auth(self) -> dict[str, str]:
        credentials = base64.b64encode(f"api:{self.config['api_key']}".encode()).decode()
        return {"Authorization": f"Basic {credentials}"}

    # -- sending -------------------------------------------------------------------------------

    async def send(self, message: OutboundMessage) -> SendReceipt:
        async with vendor_call(
            self.context.session, "POST", self._domain_url("/v3", "/messages"), timeout=timeout_of(self.config),
            vendor=VENDOR, data=self._form(message), headers=self._auth(),
        ) as response:
            answer = await json_answer(response, text_key="message")
            if response.status >= 300:
                raise _refusal(response, answer)
        message_id = answer.get("id")
        if not isinstance(message_id, str) or not message_id.strip("<> "):
            raise TransientDeliveryError(f"{VENDOR} answered {response.status} without a message id")
        return SendReceipt(provider_message_id=bare_message_id(message_id), detail={"http_status": response.status})

    def _form(self, message: OutboundMessage) -> aiohttp.FormData:
        address, name, reply_to = self._sender(message)
        fields: list[tuple[str, str]] = [("from", formataddr((name, address)) if name else address), ("to", message.to)]
        fields.append(("subject", message.subject or ""))
        if message.body is not None:
            fields.append(("text", message.body))
        if message.html is not None:
            fields.append(("html", message.html))
        if reply_to:
            fields.append(("h:Reply-To", reply_to))
        fields.append((f"v:{DELIVERY_ID_VARIABLE}", message.idempotency_key))
        form = aiohttp.FormData(default_to_multipart=True)
        for field, value in fields:
            form.add_field(field, value)
        return form

    def _sender(self, message: OutboundMessage) -> tuple[str, str | None, str | None]:
        """The tenant's sender as a whole, else the instance's own (a tenant's From never gets the instance's Reply-To)."""
        if message.sender is not None:
            return message.sender.address, message.sender.name, message.sender.reply_to
        return self.config["from"], self.config.get("from_name"), self.config.get("reply_to")

    async def check_credentials(self) -> str | None:
        async with vendor_call(
            self.context.session, "GET", self._domain_url("/v3/domains"), timeout=timeout_of(self.config), vendor=VENDOR, headers=self._auth()
        ) as response:
            answer = await json_answer(response, text_key="message")
            if response.status >= 300:
                raise _refusal(response, answer)
        domain = _object(answer.get("domain"))
        state = domain.get("state", "unknown state")
        return f"Mailgun domain {domain.get('name', self.config['domain'])} ({state}), region {self.config.get('region', 'us')}"

    # -- webhooks ------------------------------------------------------------------------------

    async def verify_webhook(self, request: InboundRequest) -> None:
        key = self.config.get("webhook_signing_key")
        if not key:
            raise WebhookVerificationError(f"provider instance {self.name!r} has no webhook_signing_key: it takes no callbacks")
        timestamp, token, signatures = _signature_block(request.body)
        try:
            signed_at = float(timestamp)
        except ValueError:
            raise WebhookVerificationError("the webhook's signature timestamp is not a number") from None
        now = self.context.clock.now()
        if abs(now - signed_at) > SIGNATURE_TOLERANCE:
            raise WebhookVerificationError("the webhook's signature timestamp is more than 5 minutes off (a replay?)")
        expected = sign(key, timestamp, token)
        if not any(same_secret(expected, offered) for offered in signatures):
            raise WebhookVerificationError("the webhook's signature does not match the signing key")
        if not self._tokens.accept(token, now):
            raise WebhookVerificationError("the webhook's token was already used (a replay?)")

    async def parse_webhook(self, request: InboundRequest) -> list[StatusUpdate | OptOut]:
        payload = json.loads(request.body)
        data = payload.get("event-data") if isinstance(payload, dict) else None
        return parse_event(data) if isinstance(data, dict) else []


def sign(key: str, timestamp: str, token: str) -> str:
    """Mailgun's webhook signature: hex HMAC-SHA256 of ``timestamp + token`` under the signing key."""
    return hmac.new(key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()


def bare_message_id(message_id: str) -> str:
    """A Message-ID without the angle brackets the send answer has and webhooks do not."""
    return message_id.strip().removeprefix("<").removesuffix(">")


def parse_event(data: Mapping[str, Any]) -> list[StatusUpdate | OptOut]:
    """One ``event-data`` object as Tidings status updates and opt-outs."""
    event = str(data.get("event", ""))
    message_id = _message_id(data)
    occurred_at = _number(data.get("timestamp"))
    detail = _detail(data, event)
    found: list[StatusUpdate | OptOut] = []
    status, error = _status(data, event)
    if status is not None and message_id is not None:
        found.append(
            StatusUpdate(message_id, status, occurred_at=occurred_at, detail=detail, error=error, delivery_id=_delivery_id(data))
        )
    if _opts_out(data, event) and isinstance(data.get("recipient"), str):
        found.append(
            OptOut("email", data["recipient"], reason=_opt_out_word(data, event), about=message_id, occurred_at=occurred_at)
        )
    return found


def _status(data: Mapping[str, Any], event: str) -> tuple[str | None, str | None]:
    if event != "failed":
        return EVENT_STATUSES.get(event), None
    if data.get("severity") == "temporary":
        return "sent", None  # Mailgun retries on its own schedule
    reason = data.get("reason")
    return ("bounced" if reason in BOUNCE_REASONS else "failed"), _failure_text(data)


def _opts_out(data: Mapping[str, Any], event: str) -> bool:
    return event in OPT_OUT_EVENTS or (event == "failed" and data.get("severity") == "permanent" and data.get("reason") in OPT_OUT_REASONS)


def _opt_out_word(data: Mapping[str, Any], event: str) -> str:
    return event if event in OPT_OUT_EVENTS else str(data.get("reason"))


def _delivery_id(data: Mapping[str, Any]) -> str | None:
    variables = data.get("user-variables")
    value = variables.get(DELIVERY_ID_VARIABLE) if isinstance(variables, dict) else None
    return value if isinstance(value, str) else None


def _failure_text(data: Mapping[str, Any]) -> str:
    status = _object(data.get("delivery-status"))
    parts = [str(status[key]) for key in ("code", "description", "message") if status.get(key)]
    return " ".join(parts) or f"Mailgun gave up ({data.get('reason') or 'no reason given'})"


def _detail(data: Mapping[str, Any], event: str) -> dict[str, Any]:
    detail: dict[str, Any] = {"vendor_status": event}
    for key in ("id", "severity", "reason", "url"):
        if data.get(key) is not None:
            detail["event_id" if key == "id" else key] = data[key]
    status = data.get("delivery-status")
    if isinstance(status, dict) and status.get("code") is not None:
        detail["smtp_code"] = status["code"]
    return detail


def _message_id(data: Mapping[str, Any]) -> str | None:
    message = data.get("message")
    headers = message.get("headers") if isinstance(message, dict) else None
    value = headers.get("message-id") if isinstance(headers, dict) else None
    return bare_message_id(value) if isinstance(value, str) and value.strip("<> ") else None


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _signature_block(body: bytes) -> tuple[str, str, list[str]]:
    """(timestamp, token, signatures offered) of a JSON webhook, or WebhookVerificationError."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        raise WebhookVerificationError("the webhook is not JSON (legacy form-encoded Mailgun webhooks are not supported)") from None
    block = payload.get("signature") if isinstance(payload, dict) else None
    if not isinstance(block, dict):
        raise WebhookVerificationError("the webhook has no signature block")
    timestamp, token = block.get("timestamp"), block.get("token")
    if isinstance(timestamp, int) and not isinstance(timestamp, bool):
        timestamp = str(timestamp)
    if not isinstance(timestamp, str) or not isinstance(token, str) or not token:
        raise WebhookVerificationError("the webhook's signature block lacks a timestamp or token")
    signatures = [block[key] for key in ("signature", "parent-signature") if isinstance(block.get(key), str)]
    if not signatures:
        raise WebhookVerificationError("the webhook's signature block has no signature")
    return timestamp, token, signatures


class _SeenTokens:
    """Webhook tokens an instance accepted lately, to refuse a replay; forgotten by age (or when full)."""

    def __init__(self, *, max_age: float, capacity: int) -> None:
        self._max_age = max_age
        self._capacity = capacity
        self._seen: OrderedDict[str, float] = OrderedDict()

    def accept(self, token: str, now: float) -> bool:
        """Remember ``token``; False if it was already seen."""
        self._forget_older_than(now - self._max_age)
        if token in self._seen:
            return False
        self._seen[token] = now
        while len(self._seen) > self._capacity:
            self._seen.popitem(last=False)
        return True

    def _forget_older_than(self, cutoff: float) -> None:
        while self._seen and next(iter(self._seen.values())) < cutoff:
            self._seen.popitem(last=False)

    def __len__(self) -> int:
        return len(self._seen)


def _refusal(response: aiohttp.ClientResponse, answer: Mapping[str, Any]) -> DeliveryError:
    message = answer.get("message") if isinstance(answer.get("message"), str) else None
    code: int | str = response.status
    if response.status == 400 and message is not None and "not a valid address" in message:
        code = INVALID_ADDRESS
    return failure(
        ERRORS, code, message, http_status=response.status,
        retry_after=retry_after_seconds(response.headers.get("Retry-After")), vendor=VENDOR,
    )
