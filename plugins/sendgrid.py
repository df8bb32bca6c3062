"""The SendGrid provider: email through the v3 Mail Send API, receipts from the signed Event Webhook.

Docs relied on:

- Mail Send: https://www.twilio.com/docs/sendgrid/api-reference/mail-send/mail-send
  (and the overview, base URLs https://api.sendgrid.com / https://api.eu.sendgrid.com:
  https://www.twilio.com/docs/sendgrid/api-reference/mail-send)
- Mail Send errors (all HTTP 400): https://www.twilio.com/docs/sendgrid/api-reference/mail-send/errors
- v3 API status codes and the ``{"errors": [{"message", "field", "help"}]}`` shape:
  https://www.twilio.com/docs/sendgrid/api-reference/how-to-use-the-sendgrid-v3-api/errors
- Sender identity (403 "The from address does not match a verified Sender Identity"):
  https://www.twilio.com/docs/api/errors/60222
- Event Webhook reference (events and their fields):
  https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/event
- Signed Event Webhook (ECDSA, ``X-Twilio-Email-Event-Webhook-Signature`` / ``-Timestamp``):
  https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/getting-started-event-webhook-security-features
- API key scopes (``GET /v3/scopes``):
  https://www.twilio.com/docs/sendgrid/api-reference/api-key-permissions/retrieve-a-list-of-scopes-for-which-this-user-has-access

Send: ``POST {base_url}/v3/mail/send`` with ``Authorization: Bearer <api_key>`` and one
personalization for the one recipient; ``content`` is text/plain then text/html (SendGrid wants
text/plain first); From / Reply-To are the tenant's sender or the configured ``from``,
``from_name``, ``reply_to``. Our delivery id goes in ``custom_args`` (``tidings_delivery_id``),
which SendGrid echoes in every event. SendGrid answers ``202`` with an empty body and the
message id in ``X-Message-Id``: that is the provider message id. SendGrid has no idempotency
key: a retry after a lost 202 sends again (each event still names our delivery id).

Errors are JSON ``{"errors": [{"message", "field", "help"}]}`` without codes, so the ``ERRORS``
table is keyed by HTTP status and, for a 400 or 403, by the offending ``field`` (indices
dropped): an invalid ``personalizations.to.email`` is ``invalid_recipient``, a From that is not
a verified Sender Identity (403, field ``from``) is the instance's (or tenant's) setup. 401 and
403 are ``CredentialsRejectedError``; 429 is transient, honouring ``Retry-After`` or, as SendGrid
sends it, ``X-RateLimit-Reset`` (a unix time); 413 and other 4xx are permanent; 5xx transient.
SendGrid does not refuse an unknown mailbox or a suppressed address at send time: those come
back as ``bounce`` and ``dropped`` events.

Event Webhook: a JSON array of events, signed with ECDSA P-256 over SHA-256 of the timestamp
header's value followed by the raw body; the signature header is base64 DER; the verification
key (``webhook_public_key``) is the base64 DER SubjectPublicKeyInfo shown in the SendGrid
console (PEM framing is accepted too). Timestamps more than five minutes from our clock are
refused (SendGrid documents no tolerance; five minutes as everywhere else in Tidings). Each
event's ``sg_message_id`` is the ``X-Message-Id`` plus ``.`` and a suffix: we match on the part
before the first dot. Mapping (``STATUS_OF``): processed and deferred → sent (in progress),
delivered → delivered, open → opened (but an open with ``sg_machine_open: true``, made by a mail
privacy proxy such as Apple's rather than by the recipient, → delivered, as Brevo's
``proxy_open``), click → clicked, bounce (``type`` bounce or blocked: the
receiving server refused it) → bounced, dropped → failed. A drop is SendGrid's own refusal
before any delivery attempt (the address is on a suppression list, invalid, or the content
was refused), not a bounce from the recipient's server, so it is ``failed`` with SendGrid's
``reason`` as the error. ``spamreport`` and ``unsubscribe`` (a global unsubscribe) are the
recipient's :class:`~gateway.OptOut`, so Tidings refuses further sends to the address (SendGrid
would drop them anyway). ``group_unsubscribe`` and ``group_resubscribe`` concern one of the
account's unsubscribe groups, which Tidings does not know, and produce nothing: SendGrid
applies them itself, and a later send in that group comes back as ``dropped``.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any, ClassVar, Final

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

from gateway import (
    CredentialsRejectedError,
    DeliveryError,
    InboundRequest,
    OptOut,
    OutboundMessage,
    Provider,
    ProviderContext,
    ProviderLimits,
    SendReceipt,
    StatusUpdate,
    WebhookVerificationError,
)
from gateway.provider_kit import TIMEOUT_PROPERTY, VendorError, failure, retry_after_seconds, timeout_of, vendor_call

VENDOR: Final = "SendGrid"
DEFAULT_BASE_URL: Final = "https://api.sendgrid.com"
DELIVERY_ID_ARG: Final = "tidings_delivery_id"
MESSAGE_ID_HEADER: Final = "X-Message-Id"
SIGNATURE_HEADER: Final = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER: Final = "X-Twilio-Email-Event-Webhook-Timestamp"
SIGNATURE_TOLERANCE: Final = 300.0

# Keyed by HTTP status, or by a 400/403's ``field`` with the array indices dropped.
ERRORS: Final[Mapping[int | str, VendorError]] = {
    400: VendorError(transient=False, meaning="the request was malformed or invalid", code="bad_request"),
    401: VendorError(transient=False, meaning="the API key is invalid, expired or revoked (check api_key)", code="credentials_rejected", credentials=True),
    403: VendorError(transient=False, meaning="the API key may not do this (mail.send needs the mail.send scope)", code="credentials_rejected", credentials=True),
    413: VendorError(transient=False, meaning="the message is too large", code="message_too_large"),
    429: VendorError(transient=True, meaning="SendGrid rate limit exceeded", code="rate_limited"),
    "personalizations.to.email": VendorError(transient=False, meaning="not a valid recipient address", code="invalid_recipient"),
    "personalizations.to": VendorError(transient=False, meaning="not a valid recipient", code="invalid_recipient"),
    "from.email": VendorError(transient=False, meaning="not a valid From address", code="invalid_sender"),
    "reply_to.email": VendorError(transient=False, meaning="not a valid Reply-To address", code="invalid_sender"),
    "from": VendorError(
        transient=False, meaning="the From address is not a verified Sender Identity in this SendGrid account", code="sender_not_verified",
        credentials=True,
    ),
    "subject": VendorError(transient=False, meaning="a subject is required", code="missing_content"),
    "content": VendorError(transient=False, meaning="the content is missing or invalid", code="missing_content"),
    "content.value": VendorError(transient=False, meaning="the content is missing or invalid", code="missing_content"),
}
STATUS_OF: Final[Mapping[str, str]] = {
    "processed": "sent",
    "deferred": "sent",
    "delivered": "delivered",
    "open": "opened",
    "click": "clicked",
    "bounce": "bounced",
    "dropped": "failed",
}
# Event fields worth keeping with a status (beyond the event name, id and time).
OPT_OUT_EVENTS: Final = frozenset({"spamreport", "unsubscribe"})
DETAIL_FIELDS: Final = ("sg_event_id", "reason", "response", "status", "type", "bounce_classification", "attempt", "url", "sg_machine_open")
_INDEX: Final = re.compile(r"\.\d+(?=\.|$)")
_EMAIL: Final = r"^[^@\s<>]+@[^@\s<>]+$"


class SendGridProvider(Provider):
    channels = frozenset({"email"})
    config_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "required": ["api_key", "from"],
        "properties": {
            "api_key": {"type": "string", "minLength": 1, "x-secret": True},
            "from": {"type": "string", "pattern": _EMAIL, "description": "Default From address, a verified Sender Identity (a tenant's sender wins)."},
            "from_name": {"type": "string"},
            "reply_to": {"type": "string", "pattern": _EMAIL},
            "webhook_public_key": {
                "type": "string", "minLength": 1,
                "description": "Event Webhook verification key (base64, from Mail Settings); without it every callback is refused.",
            },
            "base_url": {"type": "string", "pattern": "^https?://", "default": DEFAULT_BASE_URL, "description": "EU subusers: https://api.eu.sendgrid.com"},
            "timeout_seconds": TIMEOUT_PROPERTY,
        },
        "additionalProperties": False,
    }
    limits = ProviderLimits(receipts=True, replies=False, idempotency=False)

    def __init__(self, name: str, config: Mapping[str, Any], context: ProviderContext) -> None:
        super().__init__(name, config, context)
        self._verification_key: ec.EllipticCurvePublicKey | None = None

    @property
    def base_url(self) -> str:
        return str(self.config.get("base_url", DEFAULT_BASE_URL)).rstrip("/")

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.config['api_key']}", "Accept": "application/json"}

    async def send(self, message: OutboundMessage) -> SendReceipt:
        async with vendor_call(
            self.context.session, "POST", f"{self.base_url}/v3/mail/send", timeout=timeout_of(self.config), vendor=VENDOR,
            data=orjson.dumps(self.payload(message)), headers=self._headers() | {"Content-Type": "application/json"},
        ) as response:
            body = await response.read()
            if 200 <= response.status < 300:
                message_id = response.headers.get(MESSAGE_ID_HEADER)
                # Accepted without an id (not seen in practice): never send again; receipts cannot match it.
                return SendReceipt(
                    provider_message_id=message_id or message.delivery_id, detail={"http_status": response.status, "x_message_id": message_id}
                )
            raise self._failure(response.status, response.headers, body)

    def payload(self, message: OutboundMessage) -> dict[str, Any]:
        """The v3 Mail Send body for ``message``."""
        sender = message.sender
        from_: dict[str, str] = {"email": sender.address if sender is not None else str(self.config["from"])}
        name = sender.name if sender is not None else self.config.get("from_name")
        if name:
            from_["name"] = name
        reply_to = (sender.reply_to if sender is not None else None) or self.config.get("reply_to")
        content = [{"type": "text/plain", "value": message.body}] if message.body else []
        if message.html:
            content.append({"type": "text/html", "value": message.html})
        payload: dict[str, Any] = {"personalizations": [{"to": [{"email": message.to}]}], "from": from_}
        if reply_to:
            payload["reply_to"] = {"email": reply_to}
        if message.subject is not None:
            payload["subject"] = message.subject
        payload["content"] = content
        payload["custom_args"] = {DELIVERY_ID_ARG: message.idempotency_key}
        return payload

    def _failure(self, status: int, headers: Mapping[str, str], body: bytes) -> DeliveryError:
        errors = _errors(body)
        first = errors[0] if errors else {}
        field = first.get("field")
        field = field if isinstance(field, str) and field not in ("", "null") else None  # SendGrid's own examples say "null"
        key: int | str | None = None
        if status in (400, 403) and field is not None:
            key = _INDEX.sub("", field)
        if key not in ERRORS:
            key = status if status in ERRORS else None
        text = "; ".join(
            f"{error.get('message', 'no message')}" + (f" ({error['field']})" if error.get("field") not in (None, "", "null") else "")
            for error in errors
        ) or f"HTTP {status}"
        retry_after = retry_after_seconds(headers.get("Retry-After"))
        if retry_after is None and status == 429:
            retry_after = self._until_reset(headers.get("X-RateLimit-Reset"))
        error = failure(ERRORS, key, text, http_status=status, retry_after=retry_after, vendor=VENDOR)
        if field is not None:
            error.detail["field"] = field
        return error

    def _until_reset(self, reset: str | None) -> float | None:
        """Seconds until ``X-RateLimit-Reset`` (a unix time), capped as any Retry-After."""
        try:
            at = float(reset) if reset is not None else None
        except ValueError:
            return None
        return None if at is None else retry_after_seconds(at - self.context.clock.now())

    async def check_credentials(self) -> str | None:
        """``GET /v3/scopes``: the key works; it must also hold the ``mail.send`` scope."""
        async with vendor_call(
            self.context.session, "GET", f"{self.base_url}/v3/scopes", timeout=timeout_of(self.config), vendor=VENDOR, headers=self._headers()
        ) as response:
            body = await response.read()
            if response.status != 200:
                raise self._failure(response.status, response.headers, body)
        try:
            scopes = orjson.loads(body).get("scopes", [])
        except (orjson.JSONDecodeError, AttributeError):
            scopes = []
        if "mail.send" not in scopes:
            raise CredentialsRejectedError("the SendGrid API key works but lacks the mail.send scope", code="missing_scope")
        return f"SendGrid API key with {len(scopes)} scopes, mail.send included"

    # -- the Event Webhook ------------------------------------------------------------------

    def _public_key(self) -> ec.EllipticCurvePublicKey:
        if self._verification_key is None:
            self._verification_key = self._load_public_key()
        return self._verification_key

    def _load_public_key(self) -> ec.EllipticCurvePublicKey:
        configured = self.config.get("webhook_public_key")
        if not configured:
            raise WebhookVerificationError("no webhook_public_key is configured for this instance: callbacks cannot be verified")
        lines = [line.strip() for line in str(configured).strip().splitlines() if not line.startswith("-----")]
        try:
            key = load_der_public_key(base64.b64decode("".join(lines), validate=True))
        except (ValueError, binascii.Error, TypeError) as err:
            raise WebhookVerificationError("webhook_public_key is not a base64 DER public key") from err
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
            raise WebhookVerificationError("webhook_public_key is not an ECDSA P-256 key")
        return key

    async def verify_webhook(self, request: InboundRequest) -> None:
        key = self._public_key()
        headers = {name.lower(): value for name, value in request.headers.items()}
        timestamp = headers.get(TIMESTAMP_HEADER.lower(), "").strip()
        signature = headers.get(SIGNATURE_HEADER.lower(), "").strip()
        if not timestamp or not signature:
            raise WebhookVerificationError("the Event Webhook signature or timestamp header is missing")
        try:
            sent_at = int(timestamp)
        except ValueError:
            raise WebhookVerificationError("the Event Webhook timestamp is malformed") from None
        if abs(self.context.clock.now() - sent_at) > SIGNATURE_TOLERANCE:
            raise WebhookVerificationError("the Event Webhook timestamp is outside the tolerance (a replay?)")
        try:
            der = base64.b64decode(signature, validate=True)
            key.verify(der, timestamp.encode() + request.body, ec.ECDSA(hashes.SHA256()))
        except (binascii.Error, ValueError, InvalidSignature):
            raise WebhookVerificationError("the Event Webhook signature does not match") from None

    async def parse_webhook(self, request: InboundRequest) -> list[StatusUpdate | OptOut]:
        events = orjson.loads(request.body)
        if not isinstance(events, list):
            raise ValueError("an Event Webhook body is a JSON array of events")
        updates: list[StatusUpdate | OptOut] = []
        for event in events:
            update = _read_event(event) if isinstance(event, dict) else None
            if update is not None:
                updates.append(update)
        return updates


def _read_event(event: Mapping[str, Any]) -> StatusUpdate | OptOut | None:
    name = event.get("event")
    sg_message_id = event.get("sg_message_id")
    message_id = sg_message_id.split(".", 1)[0] if isinstance(sg_message_id, str) and sg_message_id else None
    timestamp = event.get("timestamp")
    occurred_at = float(timestamp) if isinstance(timestamp, (int, float)) and not isinstance(timestamp, bool) else None
    if name in OPT_OUT_EVENTS and isinstance(event.get("email"), str):
        return OptOut("email", event["email"], reason=str(name), about=message_id, occurred_at=occurred_at)
    status = STATUS_OF.get(name) if isinstance(name, str) else None
    if status == "opened" and event.get("sg_machine_open") is True:
        status = "delivered"  # a privacy proxy fetched it; nobody opened it
    if status is None or message_id is None:
        return None  # group_unsubscribe…; or an event that names no message
    detail: dict[str, Any] = {"vendor_status": name, "sg_message_id": sg_message_id}
    detail |= {field: event[field] for field in DETAIL_FIELDS if field in event}
    error = None
    if status in ("bounced", "failed"):
        error = str(event.get("reason") or event.get("response") or name)
    delivery_id = event.get(DELIVERY_ID_ARG)
    return StatusUpdate(
        message_id, status, occurred_at=occurred_at, detail=detail, error=error, delivery_id=delivery_id if isinstance(delivery_id, str) else None
    )


def _errors(body: bytes) -> list[dict[str, Any]]:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return []  # a 413 from SendGrid's front proxy is an HTML page
    errors = parsed.get("errors") if isinstance(parsed, dict) else None
    return [error for error in errors if isinstance(error, dict)] if isinstance(errors, list) else []
