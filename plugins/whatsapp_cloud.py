"""WhatsApp through Meta's WhatsApp Cloud API: approved templates, in-window text, receipts and replies.

Vendor docs:

- Sending messages: https://developers.facebook.com/docs/whatsapp/cloud-api/reference/messages
  and templates: https://developers.facebook.com/docs/whatsapp/cloud-api/guides/send-message-templates
- Error codes: https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes
  (moving to https://developers.facebook.com/documentation/business-messaging/whatsapp/support/error-codes)
  (Graph errors in general: https://developers.facebook.com/docs/graph-api/guides/error-handling)
- Webhooks, GET verification and ``X-Hub-Signature-256``:
  https://developers.facebook.com/docs/whatsapp/cloud-api/guides/set-up-webhooks and
  https://developers.facebook.com/docs/graph-api/webhooks/getting-started#validate-payloads
- Webhook payloads (``statuses``, ``messages``, ``user_preferences``):
  https://developers.facebook.com/docs/whatsapp/cloud-api/webhooks/components and
  https://developers.facebook.com/docs/whatsapp/cloud-api/webhooks/reference/user_preferences
- Phone number node (the credentials check):
  https://developers.facebook.com/docs/whatsapp/cloud-api/reference/phone-numbers
- Graph API versions: https://developers.facebook.com/docs/graph-api/changelog

What it does and the quirks it handles:

- ``POST {base_url}/{api_version}/{phone_number_id}/messages`` with ``Authorization: Bearer``.
  A message with a ``provider_template`` goes out as ``type: template`` (name, language code,
  the parameters as body text parameters); one without is free-form ``type: text``, which Meta
  accepts only inside the 24-hour customer service window (error 131047 otherwise: permanent,
  code ``outside_window``). Tidings requires templates on WhatsApp, so that path serves only
  deployments that declare their own raw-allowed channel on this plugin.
- ``to`` is sent as digits (the E.164 number without ``+``). The sender is a phone number ID:
  a tenant's ``senders: whatsapp: {from: <phone number id>}`` overrides ``phone_number_id``;
  anything but digits there is refused (permanent, ``invalid_sender``) rather than sent from
  the wrong number.
- Meta has **no idempotency key**: a retry after a timeout may send twice. The delivery id
  goes in ``biz_opaque_callback_data``, which Meta echoes in every status webhook
  (``StatusUpdate.delivery_id``), so a status settles its delivery even when the send's answer
  was lost, and the retry does not happen.
- Graph errors are ``{"error": {"message", "type", "code", "error_subcode", "error_data":
  {"details"}, "fbtrace_id"}}``; the ``code`` decides (see :data:`ERRORS`), the HTTP status only
  when the code is unknown. Codes 200-299 are all permission errors. Account-level refusals
  (locked, unpaid, unregistered number) are treated as credentials failures: every send of the
  instance would fail, so the breaker opens and failover tries the next instance.
- Webhooks: Meta's ``GET`` subscription check is answered by :meth:`handshake` (echo
  ``hub.challenge`` when ``hub.verify_token`` matches, in constant time; else 403). ``POST``
  callbacks are signed ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret, raw body)>``
  and verified over the exact bytes received. Meta's signature carries no timestamp, so a
  replayed callback cannot be told from a retried one: reconciliation ignores duplicates.
- Statuses ``sent`` / ``delivered`` / ``read`` / ``failed`` map one to one (``played``, for
  voice messages, counts as ``read``); a failed status carries Meta's ``errors[]`` code and
  title. Inbound ``messages[]`` become replies: text, template quick-reply buttons,
  interactive button and list replies, media captions and reactions; ``context.id`` is the
  wamid answered. The sender is reported in E.164 (``+`` and the WhatsApp ID). A user's
  "stop marketing messages" (``user_preferences``) becomes an :class:`~gateway.OptOut` only with
  ``marketing_stop_opts_out: true``: it stops marketing templates only, and Meta refuses those
  itself (131050, code ``marketing_opted_out``, which records no opt-out), while utility and
  authentication templates may still go out.
- ``check_credentials``: ``GET {base_url}/{api_version}/{phone_number_id}`` → the display
  phone number and verified name.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, Final

import aiohttp
import orjson

from gateway import (
    DeliveryError,
    InboundReply,
    InboundRequest,
    InboundResponse,
    OptOut,
    OutboundMessage,
    PermanentDeliveryError,
    Provider,
    ProviderLimits,
    ProviderReport,
    SendReceipt,
    StatusUpdate,
    TransientDeliveryError,
    WebhookVerificationError,
)
from gateway.provider_kit import TIMEOUT_PROPERTY, VendorError, failure, json_answer, retry_after_seconds, same_secret, timeout_of, vendor_call

VENDOR: Final = "WhatsApp Cloud API"
DEFAULT_BASE_URL: Final = "https://graph.facebook.com"
DEFAULT_API_VERSION: Final = "v24.0"
SIGNATURE_HEADER: Final = "x-hub-signature-256"
SIGNATURE_PREFIX: Final = "sha256="
PERMISSION_CODES: Final = range(200, 300)
"""Graph API permission errors: one row (200) stands for the whole range."""

ERRORS: Final[Mapping[int, VendorError]] = {
    # Authorization and permissions: the instance's token or account is the problem.
    0: VendorError(transient=False, meaning="authentication failed: check `access_token`", credentials=True),
    3: VendorError(transient=False, meaning="the app lacks the capability or permission for this call", credentials=True),
    10: VendorError(transient=False, meaning="permission not granted or removed", credentials=True),
    190: VendorError(transient=False, meaning="the access token has expired or was invalidated", credentials=True),
    200: VendorError(transient=False, meaning="API permission not granted or removed (200-299)", credentials=True),
    131005: VendorError(transient=False, meaning="access denied: permission not granted or removed", credentials=True),
    # Account-level refusals: every send through this instance fails until the business acts.
    368: VendorError(transient=False, meaning="the account is temporarily blocked for policy violations", credentials=True),
    131031: VendorError(transient=False, meaning="the business account is locked", credentials=True),
    131037: VendorError(transient=False, meaning="the phone number's display name needs approval", credentials=True),
    131042: VendorError(transient=False, meaning="business eligibility payment issue", credentials=True),
    131045: VendorError(transient=False, meaning="the phone number's certificate is incorrect", credentials=True),
    133010: VendorError(transient=False, meaning="the phone number is not registered on the Cloud API", credentials=True),
    # Throttling: retry later.
    4: VendorError(transient=True, meaning="the app reached its API call rate limit", code="rate_limited"),
    80007: VendorError(transient=True, meaning="the WhatsApp Business Account reached its rate limit", code="rate_limited"),
    130429: VendorError(transient=True, meaning="Cloud API throughput reached", code="rate_limited"),
    131048: VendorError(transient=True, meaning="spam rate limit: too many messages were blocked or flagged", code="rate_limited"),
    131056: VendorError(transient=True, meaning="too many messages to this recipient in a short time", code="rate_limited"),
    # Meta's side: retry later.
    1: VendorError(transient=True, meaning="unknown API error (possibly a server error)"),
    2: VendorError(transient=True, meaning="service temporarily unavailable"),
    131000: VendorError(transient=True, meaning="something went wrong at Meta"),
    131016: VendorError(transient=True, meaning="service temporarily overloaded"),
    131057: VendorError(transient=True, meaning="the business account is in maintenance mode"),
    133004: VendorError(transient=True, meaning="server temporarily unavailable"),
    # The recipient.
    131021: VendorError(transient=False, meaning="the recipient is the sender", code="invalid_recipient"),
    131026: VendorError(transient=False, meaning="message undeliverable (not on WhatsApp, blocked us, or an old app)", code="invalid_recipient"),
    131030: VendorError(transient=False, meaning="the recipient is not in the test number's allowed list", code="invalid_recipient"),
    131047: VendorError(transient=False, meaning="more than 24 hours since the user's last message: send a template", code="outside_window"),
    131049: VendorError(transient=False, meaning="Meta chose not to deliver (per-user marketing limit)", code="not_delivered_by_meta"),
    131050: VendorError(transient=False, meaning="the user stopped marketing messages from this business", code="marketing_opted_out"),
    130472: VendorError(transient=False, meaning="the user's number is part of a Meta experiment", code="not_delivered_by_meta"),
    130497: VendorError(transient=False, meaning="the business may not message users in this country", code="invalid_recipient"),
    # The request or the template.
    33: VendorError(transient=False, meaning="parameter value is not valid (the phone number ID may be deleted)"),
    100: VendorError(transient=False, meaning="invalid parameter"),
    131008: VendorError(transient=False, meaning="a required parameter is missing"),
    131009: VendorError(transient=False, meaning="a parameter value is not valid"),
    131051: VendorError(transient=False, meaning="unsupported message type"),
    131052: VendorError(transient=False, meaning="media download error"),
    131053: VendorError(transient=False, meaning="media upload error"),
    132000: VendorError(transient=False, meaning="template parameter count does not match", code="template_parameters_mismatch"),
    132001: VendorError(transient=False, meaning="template does not exist in that language", code="template_not_found"),
    132005: VendorError(transient=False, meaning="template text too long once filled in"),
    132007: VendorError(transient=False, meaning="template format character policy violated"),
    132012: VendorError(transient=False, meaning="template parameter format does not match", code="template_parameters_mismatch"),
    132015: VendorError(transient=False, meaning="template is paused for low quality", code="template_paused"),
    132016: VendorError(transient=False, meaning="template is disabled", code="template_disabled"),
    135000: VendorError(transient=False, meaning="generic user error"),
}
"""Graph / Cloud API error codes → what they mean for the delivery."""

RECEIPT_STATUSES: Final[Mapping[str, str]] = {
    "sent": "sent",
    "delivered": "delivered",
    "read": "read",
    "played": "read",
    "failed": "failed",
}
"""Meta's message statuses → Tidings receipt statuses (others, e.g. ``deleted``, are ignored)."""

_DIGITS: Final = re.compile(r"[0-9]+")  # fullmatch: ASCII digits only, no trailing newline


class WhatsAppCloudProvider(Provider):
    """WhatsApp Business messages through Meta's Cloud API (Graph API)."""

    channels = frozenset({"whatsapp"})
    config_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "required": ["access_token", "phone_number_id"],
        "properties": {
            "access_token": {
                "type": "string", "minLength": 1, "x-secret": True,
                "description": "System-user access token with whatsapp_business_messaging permission.",
            },
            "phone_number_id": {
                "type": ["string", "integer"], "pattern": "^[0-9]+$", "minimum": 0,
                "description": "The business phone number ID to send from (not the phone number).",
            },
            "app_secret": {
                "type": "string", "minLength": 1, "x-secret": True,
                "description": "The Meta app's secret; webhooks are verified with it (none: every callback is refused).",
            },
            "verify_token": {
                "type": "string", "minLength": 1, "x-secret": True,
                "description": "The Verify Token set with the callback URL in the App Dashboard (none: the GET check is refused).",
            },
            "base_url": {"type": "string", "pattern": "^https?://", "default": DEFAULT_BASE_URL},
            "api_version": {"type": "string", "pattern": r"^v[0-9]+\.[0-9]+$", "default": DEFAULT_API_VERSION},
            "marketing_stop_opts_out": {
                "type": "boolean", "default": False,
                "description": "Treat a user's 'stop marketing messages' as an opt-out from this tenant's WhatsApp messages.",
            },
            "timeout_seconds": TIMEOUT_PROPERTY,
        },
        "additionalProperties": False,
    }
    # 80 messages per second per business phone number is the Cloud API's default throughput;
    # 4096 characters is the text message body limit.
    limits = ProviderLimits(max_body_chars=4096, rate_per_second=80, receipts=True, replies=True, idempotency=False)

    async def send(self, message: OutboundMessage) -> SendReceipt:
        url = self._url(self._phone_number_id(message), "messages")
        async with vendor_call(
            self.context.session, "POST", url, timeout=timeout_of(self.config), vendor=VENDOR,
            data=orjson.dumps(payload_for(message)), headers=self._headers(json_body=True),
        ) as response:
            answer = await json_answer(response)
            if response.status >= 300:
                raise _refusal(response, answer)
        return _receipt(answer, response.status)

    async def check_credentials(self) -> str | None:
        url = self._url(str(self.config["phone_number_id"]))
        async with vendor_call(
            self.context.session, "GET", url, timeout=timeout_of(self.config), vendor=VENDOR,
            params={"fields": "display_phone_number,verified_name,quality_rating"}, headers=self._headers(),
        ) as response:
            answer = await json_answer(response)
            if response.status >= 300:
                raise _refusal(response, answer)
        number, name = answer.get("display_phone_number", "?"), answer.get("verified_name", "?")
        return f"WhatsApp number {number} ({name}), quality {answer.get('quality_rating', 'unknown')}"

    async def handshake(self, request: InboundRequest) -> InboundResponse | None:
        expected = self.config.get("verify_token")
        offered = request.query.get("hub.verify_token", "")
        challenge = request.query.get("hub.challenge")
        if request.query.get("hub.mode") == "subscribe" and expected and challenge is not None and same_secret(expected, offered):
            return InboundResponse(status=200, body=challenge.encode(), content_type="text/plain")
        return InboundResponse(status=403, body=b"verification failed", content_type="text/plain")

    async def verify_webhook(self, request: InboundRequest) -> None:
        secret = self.config.get("app_secret")
        if not secret:
            raise WebhookVerificationError("no app_secret is configured for this instance, so no callback can be verified")
        offered = request.headers.get(SIGNATURE_HEADER, "")
        if not offered:
            raise WebhookVerificationError("the X-Hub-Signature-256 header is missing")
        if not offered.startswith(SIGNATURE_PREFIX):
            raise WebhookVerificationError("the X-Hub-Signature-256 header is not a sha256= signature")
        if not same_secret(sign(secret, request.body), offered):
            raise WebhookVerificationError("the X-Hub-Signature-256 signature does not match the body")

    async def parse_webhook(self, request: InboundRequest) -> list[ProviderReport]:
        payload = orjson.loads(request.body)
        found: list[ProviderReport] = []
        for value in _values(payload):
            found += [update for status in _list(value.get("statuses")) if (update := status_update(status)) is not None]
            to = _business_number(value)
            found += [reply for item in _list(value.get("messages")) if (reply := inbound_reply(item, to)) is not None]
            if self.config.get("marketing_stop_opts_out", False):
                found += [change for item in _list(value.get("user_preferences")) if (change := preference_change(item)) is not None]
        return found

    def _phone_number_id(self, message: OutboundMessage) -> str:
        if message.sender is None:
            return str(self.config["phone_number_id"])
        if not _DIGITS.fullmatch(message.sender.address):
            raise PermanentDeliveryError(
                f"the tenant's WhatsApp sender {message.sender.address!r} is not a phone number ID (digits only)", code="invalid_sender"
            )
        return message.sender.address

    def _url(self, *path: str) -> str:
        base = str(self.config.get("base_url", DEFAULT_BASE_URL)).rstrip("/")
        return "/".join((base, str(self.config.get("api_version", DEFAULT_API_VERSION)), *path))

    def _headers(self, *, json_body: bool = False) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.config['access_token']}"}
        if json_body:
            headers["Content-Type"] = "application/json"
        return headers


def payload_for(message: OutboundMessage) -> dict[str, Any]:
    """The Cloud API request body for ``message``: a template if it has one, else in-window text."""
    payload: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": message.to.removeprefix("+"),
        # Echoed in every status webhook: how a receipt names the delivery it is about.
        "biz_opaque_callback_data": message.idempotency_key,
    }
    template = message.provider_template
    if template is not None:
        body: dict[str, Any] = {"name": template.name, "language": {"code": template.language}}
        if template.parameters:
            parameters = [{"type": "text", "text": value} for value in template.parameters]
            body["components"] = [{"type": "body", "parameters": parameters}]
        return payload | {"type": "template", "template": body}
    if not message.body:
        raise PermanentDeliveryError("a WhatsApp message needs a provider template or a text body", code="no_content")
    return payload | {"type": "text", "text": {"body": message.body}}


def sign(secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value Meta sends with ``body``."""
    return SIGNATURE_PREFIX + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def status_update(status: Mapping[str, Any]) -> StatusUpdate | None:
    """One ``statuses[]`` entry as a receipt; None for a status Tidings does not track."""
    vendor_status = status.get("status")
    mapped = RECEIPT_STATUSES.get(vendor_status) if isinstance(vendor_status, str) else None
    message_id = status.get("id")
    if mapped is None or not isinstance(message_id, str):
        return None
    detail: dict[str, Any] = {"vendor_status": vendor_status}
    if isinstance(status.get("recipient_id"), str):
        detail["recipient_id"] = status["recipient_id"]
    delivery_id = status.get("biz_opaque_callback_data")
    pricing = status.get("pricing")
    if isinstance(pricing, Mapping) and isinstance(pricing.get("category"), str):
        detail["category"] = pricing["category"]
    errors = [error for error in _list(status.get("errors")) if isinstance(error, Mapping)]
    if errors:
        detail["vendor_code"] = errors[0].get("code")
    return StatusUpdate(
        message_id, mapped, occurred_at=_seconds(status.get("timestamp")), detail=detail, error=_error_text(errors),
        delivery_id=delivery_id if isinstance(delivery_id, str) else None,
    )


def inbound_reply(item: Mapping[str, Any], to: str | None = None) -> InboundReply | None:
    """One ``messages[]`` entry (sent to business phone number ID ``to``) as a reply; None for system notices."""
    kind, sender = item.get("type"), item.get("from")
    if not isinstance(sender, str) or kind in {"system", "unsupported", "errors"}:
        return None
    body, answered = _content(item)
    context = item.get("context")
    if answered is None and isinstance(context, Mapping) and isinstance(context.get("id"), str):
        answered = context["id"]
    detail: dict[str, Any] = {"type": kind} | ({"phone_number_id": to} if to else {})
    if isinstance(item.get("button"), Mapping) and "payload" in item["button"]:
        detail["payload"] = item["button"]["payload"]
    return InboundReply(
        sender=_e164(sender), body=body, channel="whatsapp", in_reply_to=answered,
        provider_message_id=item.get("id") if isinstance(item.get("id"), str) else None,
        occurred_at=_seconds(item.get("timestamp")), detail=detail,
    )


def preference_change(item: Mapping[str, Any]) -> OptOut | None:
    """A ``user_preferences[]`` marketing stop/resume as an opt-out (or back in)."""
    value, who = item.get("value"), item.get("wa_id")
    if item.get("category") != "marketing_messages" or value not in {"stop", "resume"} or not isinstance(who, str):
        return None
    return OptOut(
        "whatsapp", _e164(who), opted_out=value == "stop", reason=f"marketing messages: {value}", occurred_at=_seconds(item.get("timestamp"))
    )


def _content(item: Mapping[str, Any]) -> tuple[str, str | None]:
    """What the user said, and (for a reaction) the message it is about."""
    kind = item.get("type")
    part = item.get(kind) if isinstance(kind, str) else None
    part = part if isinstance(part, Mapping) else {}
    if kind == "text":
        return str(part.get("body", "")), None
    if kind == "button":
        return str(part.get("text", "")), None
    if kind == "interactive":
        chosen = part.get(str(part.get("type")))
        return (str(chosen.get("title", "")) if isinstance(chosen, Mapping) else ""), None
    if kind == "reaction":
        answered = part.get("message_id")
        return str(part.get("emoji", "")), answered if isinstance(answered, str) else None
    return str(part.get("caption", "")), None


def _error_text(errors: list[Mapping[str, Any]]) -> str | None:
    if not errors:
        return None
    first = errors[0]
    data = first.get("error_data")
    details = data.get("details") if isinstance(data, Mapping) else None
    text = f"{first.get('title') or first.get('message') or 'failed'} (code {first.get('code')})"
    return f"{text}: {details}" if details else text


def _values(payload: Any) -> Iterator[Mapping[str, Any]]:
    for entry in _list(payload.get("entry") if isinstance(payload, Mapping) else None):
        for change in _list(entry.get("changes") if isinstance(entry, Mapping) else None):
            value = change.get("value") if isinstance(change, Mapping) else None
            if isinstance(value, Mapping):
                yield value


def _business_number(value: Mapping[str, Any]) -> str | None:
    metadata = value.get("metadata")
    number = metadata.get("phone_number_id") if isinstance(metadata, Mapping) else None
    return number if isinstance(number, str) else None


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _seconds(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _e164(wa_id: str) -> str:
    return wa_id if wa_id.startswith("+") else f"+{wa_id}"


def _refusal(response: aiohttp.ClientResponse, answer: Mapping[str, Any]) -> DeliveryError:
    error = answer.get("error")
    error = error if isinstance(error, Mapping) else {}
    code = error.get("code") if isinstance(error.get("code"), int) else None
    row_code = 200 if code in PERMISSION_CODES else code
    data = error.get("error_data")
    details = data.get("details") if isinstance(data, Mapping) else None
    reason = str(error.get("message") or f"HTTP {response.status}") + (f": {details}" if details else "")
    found = failure(
        ERRORS, row_code, reason, http_status=response.status,
        retry_after=retry_after_seconds(response.headers.get("Retry-After")), vendor=VENDOR,
    )
    if code is not None and code != row_code:
        found.detail["vendor_code"] = code
    if isinstance(error.get("fbtrace_id"), str):
        found.detail["fbtrace_id"] = error["fbtrace_id"]
    return found


def _receipt(answer: Mapping[str, Any], http_status: int) -> SendReceipt:
    messages = _list(answer.get("messages"))
    first = messages[0] if messages and isinstance(messages[0], Mapping) else {}
    message_id = first.get("id")
    if not isinstance(message_id, str) or not message_id:
        raise TransientDeliveryError(f"{VENDOR} answered {http_status} without a message id", code="no_message_id")
    detail: dict[str, Any] = {"http_status": http_status}
    if isinstance(first.get("message_status"), str):
        detail["message_status"] = first["message_status"]
    contacts = _list(answer.get("contacts"))
    if contacts and isinstance(contacts[0], Mapping) and isinstance(contacts[0].get("wa_id"), str):
        detail["wa_id"] = contacts[0]["wa_id"]
    return SendReceipt(provider_message_id=message_id, detail=detail)
