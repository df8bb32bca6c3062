"""Twilio: SMS and WhatsApp through the Messages API, voice calls that read the message aloud.

Sends ``POST {base_url}/2010-04-01/Accounts/{account_sid}/Messages.json`` (SMS, WhatsApp) or
``…/Calls.json`` (voice) as form fields, with HTTP basic auth: the account SID and auth token,
or an API key SID and secret. The answer's ``sid`` (``SM…``/``MM…`` for messages, ``CA…`` for
calls) is the provider message id. Status callbacks, inbound messages and opt-outs come back on
``POST /api/v1/webhooks/{instance}``, signed with ``X-Twilio-Signature``.

Vendor quirks handled here:

- **Sender.** ``From`` is the tenant's sender for the channel (policy ``senders:``) when it has
  one, else ``whatsapp_from`` (WhatsApp) or ``from``; ``MessagingServiceSid`` is sent too when
  configured, and alone when there is no ``From`` (the service picks a sender). Voice needs a
  ``From`` number: a Messaging Service cannot place calls.
- **WhatsApp** addresses are ``whatsapp:+E164`` on both ends; the prefix is added on send and
  removed from inbound senders so opt-outs match the recipient's phone. A message with a
  ``provider_template`` is sent as a Content Template: ``ContentSid`` plus ``ContentVariables``
  (``{"1": first parameter, "2": …}``). The ContentSid is looked up in ``content_sids`` under
  ``"<name>:<language>"``, then ``"<name>"``; a template *named* by its ``HX…`` SID is used as
  is. Any other name is refused as ``template_not_found`` without calling Twilio. Since
  April 2025 Twilio refuses template text sent as ``Body`` outside the 24-hour window (63016).
- **Voice** sends inline TwiML ``<Response><Say>…</Say></Response>`` with the body XML-escaped
  (``voice`` and ``voice_language`` become the ``<Say>`` attributes when set).
- **No idempotency key.** Twilio has none, so a send whose answer was lost (a timeout after
  Twilio took it) is sent again on retry and the recipient may get it twice
  (``limits.idempotency`` is False). The delivery id rides along in the ``StatusCallback`` URL
  as ``?d=<delivery id>``: Twilio signs the full URL, so every callback names the delivery it
  belongs to (``StatusUpdate.delivery_id``). A receipt for the lost-answer message, whose SID
  the gateway never learned, settles its delivery all the same, before the retry comes round.
- **Errors** are JSON ``{"code", "message", "more_info", "status"}``; codes are classified in
  :data:`ERRORS` (``Retry-After`` honoured on 429 / 20429). Asynchronous delivery failures
  (``30003``…``30034``, WhatsApp ``63xxx``) arrive as ``ErrorCode`` in status callbacks and
  become ``failed`` receipts with the code's meaning as their error.
- **Status callbacks** (form-encoded): ``MessageStatus`` accepted / scheduled / queued /
  sending / sent → ``sent``, delivered → ``delivered``, read → ``read`` (WhatsApp),
  undelivered / failed / canceled → ``failed``; ``CallStatus`` queued / initiated / ringing /
  in-progress → ``sent``, completed → ``delivered``, busy / no-answer / canceled / failed →
  ``failed``. An inbound message (``SmsStatus`` received) becomes an :class:`InboundReply`;
  with Advanced Opt-Out its ``OptOutType`` STOP / START sets ``detail["opt_out"]``.
- **Signatures**: base64 HMAC-SHA1, keyed with the auth token, of the full URL Twilio called
  followed by every POST parameter name and value in name order (repeated names: each value,
  sorted). A JSON body is signed through a ``bodySHA256`` query parameter (hex SHA-256 of the
  raw bytes), checked here too. Behind a proxy the URL the gateway sees is not the one Twilio
  signed (TLS terminated, another host or port), so the public ``webhook_url`` (else
  ``status_callback_url``) is tried first with the request's own query string, then the URL
  as seen; each with and without the port, as Twilio's ``RequestValidator`` does. Webhooks
  signed with a SharedKey (``X-Twilio-Webhooks-Signature-Settings``, public beta) are checked
  with ``webhook_shared_key`` and the algorithm the header names. Twilio's signature carries
  no timestamp, so a replayed genuine callback cannot be told from the first one; receipts
  never move a delivery backwards, so a replay changes nothing.

Docs:

- https://www.twilio.com/docs/messaging/api/message-resource
- https://www.twilio.com/docs/voice/api/call-resource
- https://www.twilio.com/docs/usage/webhooks/webhooks-security
- https://www.twilio.com/docs/usage/webhooks/webhook-shared-keys
- https://www.twilio.com/docs/messaging/guides/outbound-message-status-in-status-callbacks
- https://www.twilio.com/docs/messaging/guides/webhook-request
- https://www.twilio.com/docs/messaging/tutorials/advanced-opt-out
- https://www.twilio.com/docs/whatsapp/tutorial/send-whatsapp-notification-messages-templates
- https://www.twilio.com/docs/api/errors (each code: https://www.twilio.com/docs/api/errors/<code>)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, Final
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit
from xml.sax.saxutils import escape, quoteattr

import aiohttp

from gateway import (
    OPTED_OUT,
    CredentialsRejectedError,
    DeliveryError,
    InboundReply,
    InboundRequest,
    InboundResponse,
    OutboundMessage,
    PermanentDeliveryError,
    Provider,
    ProviderLimits,
    ProviderTemplate,
    SendReceipt,
    StatusUpdate,
    TransientDeliveryError,
    WebhookVerificationError,
)
from gateway.provider_kit import (
    TIMEOUT_PROPERTY, VendorError, failure, form_value, json_answer, retry_after_seconds, same_secret, timeout_of, utc_time, vendor_call,
)

VENDOR: Final = "Twilio"
DEFAULT_BASE_URL: Final = "https://api.twilio.com"
API_VERSION: Final = "2010-04-01"
WHATSAPP_PREFIX: Final = "whatsapp:"
SIGNATURE_HEADER: Final = "x-twilio-signature"
SIGNATURE_SETTINGS_HEADER: Final = "x-twilio-webhooks-signature-settings"
BODY_HASH_PARAM: Final = "bodySHA256"
DELIVERY_PARAM: Final = "d"
MAX_BODY_CHARS: Final = 1600
_HASHES: Final = {"HMAC_SHA1": hashlib.sha1, "HMAC_SHA256": hashlib.sha256}

ERRORS: Final[Mapping[int, VendorError]] = {
    # Account and API
    20003: VendorError(transient=False, meaning="authentication failed: check account_sid and auth_token (or the API key)", credentials=True),
    20005: VendorError(transient=False, meaning="the account is not active (suspended or closed)", credentials=True),
    20404: VendorError(transient=False, meaning="resource not found: check account_sid and base_url"),
    20429: VendorError(transient=True, meaning="too many concurrent requests", code="rate_limited"),
    20500: VendorError(transient=True, meaning="Twilio internal error"),
    20503: VendorError(transient=True, meaning="Twilio is temporarily unavailable"),
    # Messages: recipients
    21211: VendorError(transient=False, meaning="invalid 'To' phone number", code="invalid_recipient"),
    21408: VendorError(transient=False, meaning="sending to this region is not enabled (Geo Permissions)", code="region_not_enabled"),
    21608: VendorError(transient=False, meaning="trial account: the 'To' number is not verified", code="unverified_recipient"),
    21610: VendorError(transient=False, meaning="the recipient replied STOP to this sender", code=OPTED_OUT),
    21612: VendorError(transient=False, meaning="the 'To' number cannot be reached from this 'From' (unroutable combination)", code="invalid_recipient"),
    21614: VendorError(transient=False, meaning="the 'To' number is not a mobile number", code="invalid_recipient"),
    63024: VendorError(transient=False, meaning="invalid WhatsApp recipient", code="invalid_recipient"),
    # Messages: senders and content
    21212: VendorError(transient=False, meaning="invalid 'From' number", code="invalid_sender"),
    21602: VendorError(transient=False, meaning="message body is required", code="invalid_message"),
    21603: VendorError(transient=False, meaning="a 'From' number is required", code="invalid_sender"),
    21604: VendorError(transient=False, meaning="a 'To' number is required", code="invalid_recipient"),
    21606: VendorError(transient=False, meaning="the 'From' number cannot send messages to this destination", code="invalid_sender"),
    21611: VendorError(transient=True, meaning="the 'From' number's message queue is full (over 10 hours of messages)", code="rate_limited"),
    21617: VendorError(transient=False, meaning="the message body exceeds 1600 characters", code="body_too_long"),
    21654: VendorError(transient=False, meaning="ContentVariables given without a ContentSid", code="invalid_message"),
    21655: VendorError(transient=False, meaning="the ContentSid is invalid", code="template_not_found"),
    21656: VendorError(transient=False, meaning="the ContentVariables are invalid (not JSON, or an empty value)", code="invalid_template_parameters"),
    21701: VendorError(transient=False, meaning="the Messaging Service does not exist in this account", code="invalid_sender"),
    21705: VendorError(transient=False, meaning="the MessagingServiceSid is invalid", code="invalid_sender"),
    21910: VendorError(transient=False, meaning="'From' and 'To' are on different channels", code="invalid_sender"),
    63007: VendorError(transient=False, meaning="no WhatsApp sender (Channel) with this 'From' address", code="invalid_sender"),
    63016: VendorError(transient=False, meaning="outside the WhatsApp 24-hour window: send an approved template (ContentSid)", code="outside_session_window"),
    63017: VendorError(transient=True, meaning="account message rate limit exceeded", code="rate_limited"),
    63018: VendorError(transient=True, meaning="rate limit exceeded for the channel (WhatsApp sender limit)", code="rate_limited"),
    63038: VendorError(transient=True, meaning="the account exceeded its daily message limit", code="rate_limited"),
    # Calls
    13224: VendorError(transient=False, meaning="Twilio cannot call this number, or it is invalid", code="invalid_recipient"),
    21210: VendorError(transient=False, meaning="the caller id ('From') is not verified for this account", code="invalid_sender"),
    21215: VendorError(transient=False, meaning="calling this region is not enabled (Geo Permissions)", code="region_not_enabled"),
    21216: VendorError(transient=False, meaning="calls to this number are blocked by Twilio", code="invalid_recipient"),
    21217: VendorError(transient=False, meaning="the phone number does not appear to be valid", code="invalid_recipient"),
    21219: VendorError(transient=False, meaning="trial account: the 'To' number is not verified", code="unverified_recipient"),
    # Asynchronous delivery failures (status callbacks' ErrorCode)
    30001: VendorError(transient=True, meaning="queue overflow: sent too fast for the sender's rate", code="rate_limited"),
    30002: VendorError(transient=False, meaning="account suspended", credentials=True),
    30003: VendorError(transient=False, meaning="unreachable destination handset", code="unreachable_recipient"),
    30004: VendorError(transient=False, meaning="message blocked (the recipient or carrier blocks it)", code="blocked"),
    30005: VendorError(transient=False, meaning="unknown destination handset", code="invalid_recipient"),
    30006: VendorError(transient=False, meaning="landline or unreachable carrier", code="invalid_recipient"),
    30007: VendorError(transient=False, meaning="message filtered by the carrier", code="filtered"),
    30008: VendorError(transient=False, meaning="unknown delivery error"),
    30032: VendorError(transient=False, meaning="toll-free number not verified", code="invalid_sender"),
    30034: VendorError(transient=False, meaning="message from an unregistered US A2P 10DLC number", code="invalid_sender"),
    63003: VendorError(transient=False, meaning="WhatsApp: the channel could not find the recipient", code="invalid_recipient"),
    63014: VendorError(transient=False, meaning="the recipient blocked this sender on the channel", code=OPTED_OUT),
}
"""Twilio error codes, from the send answer's ``code`` or a status callback's ``ErrorCode``."""

MESSAGE_STATUSES: Final[Mapping[str, str]] = {
    "accepted": "sent",
    "scheduled": "sent",
    "queued": "sent",
    "sending": "sent",
    "sent": "sent",
    "delivered": "delivered",
    "read": "read",
    "undelivered": "failed",
    "failed": "failed",
    "canceled": "failed",
}
CALL_STATUSES: Final[Mapping[str, str]] = {
    "queued": "sent",
    "initiated": "sent",
    "ringing": "sent",
    "in-progress": "sent",
    "completed": "delivered",
    "busy": "failed",
    "no-answer": "failed",
    "canceled": "failed",
    "failed": "failed",
}
INBOUND_STATUSES: Final = frozenset({"received", "receiving"})
OPT_OUT_TYPES: Final[Mapping[str, bool]] = {"STOP": True, "START": False}

_SID = "^{}[0-9a-fA-F]{{32}}$"
_PUBLIC_URL: Final[Mapping[str, Any]] = {"type": "string", "pattern": "^https?://[^\\s]+$"}


class TwilioProvider(Provider):
    """SMS, WhatsApp and voice through one Twilio account (or subaccount)."""

    channels = frozenset({"sms", "whatsapp", "voice"})
    config_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "required": ["account_sid"],
        "anyOf": [{"required": ["auth_token"]}, {"required": ["api_key_sid", "api_key_secret"]}],
        "dependentRequired": {"api_key_sid": ["api_key_secret"], "api_key_secret": ["api_key_sid"]},
        "properties": {
            "account_sid": {"type": "string", "pattern": _SID.format("AC"), "description": "The account (or subaccount) SID, AC…"},
            "auth_token": {
                "type": "string", "minLength": 1, "x-secret": True,
                "description": "The account's auth token: authenticates sends (unless an API key is set) and verifies webhook signatures.",
            },
            "api_key_sid": {"type": "string", "pattern": _SID.format("SK"), "description": "An API key SID (SK…) to send with instead of the auth token."},
            "api_key_secret": {"type": "string", "minLength": 1, "x-secret": True},
            "from": {"type": "string", "minLength": 1, "description": "Default sender: an E.164 Twilio number, short code or alphanumeric sender id."},
            "whatsapp_from": {"type": "string", "pattern": "^(whatsapp:)?\\+[1-9][0-9]{1,14}$", "description": "Default WhatsApp sender number (E.164)."},
            "messaging_service_sid": {"type": "string", "pattern": _SID.format("MG"), "description": "A Messaging Service (MG…) to send SMS and WhatsApp through."},
            "status_callback_url": {
                **_PUBLIC_URL,
                "description": "Public URL of this instance's /api/v1/webhooks/<instance>, sent as StatusCallback; no receipts when unset.",
            },
            "webhook_url": {
                **_PUBLIC_URL,
                "description": "The public URL Twilio calls (it signs that URL); defaults to status_callback_url. Set it behind a proxy.",
            },
            "webhook_shared_key": {
                "type": "string", "minLength": 1, "x-secret": True,
                "description": "Secret of a Twilio SharedKey, for webhooks signed with one (X-Twilio-Webhooks-Signature-Settings).",
            },
            "content_sids": {
                "type": "object",
                "description": "WhatsApp template name (or 'name:language') → Content Template SID (HX…).",
                "additionalProperties": {"type": "string", "pattern": _SID.format("HX")},
            },
            "voice": {"type": "string", "minLength": 1, "description": "TwiML <Say> voice, e.g. Polly.Joanna."},
            "voice_language": {"type": "string", "minLength": 2, "description": "TwiML <Say> language, e.g. en-US."},
            "base_url": {"type": "string", "pattern": "^https?://[^\\s/]+[^\\s]*$", "default": DEFAULT_BASE_URL},
            "timeout_seconds": TIMEOUT_PROPERTY,
        },
        "additionalProperties": False,
    }
    limits = ProviderLimits(max_body_chars=MAX_BODY_CHARS, receipts=True, replies=True, idempotency=False)

    # -- sending ---------------------------------------------------------------------------

    async def send(self, message: OutboundMessage) -> SendReceipt:
        if message.channel == "voice":
            resource, form = "Calls.json", self._call_form(message)
        else:
            resource, form = "Messages.json", self._message_form(message)
        async with vendor_call(
            self.context.session, "POST", self._account_url(resource), timeout=timeout_of(self.config), vendor=VENDOR,
            data=form, headers=self._auth(),
        ) as response:
            answer = await json_answer(response)
            if not 200 <= response.status < 300:
                raise _refusal(response, answer)
        sid = answer.get("sid")
        if not isinstance(sid, str) or not sid:
            raise TransientDeliveryError(f"Twilio answered {response.status} without a sid", code="no_message_id")
        detail: dict[str, Any] = {"http_status": response.status}
        for key in ("status", "num_segments"):
            if answer.get(key) is not None:
                detail[key] = answer[key]
        return SendReceipt(provider_message_id=sid, detail=detail)

    def _message_form(self, message: OutboundMessage) -> list[tuple[str, str]]:
        whatsapp = message.channel == "whatsapp"
        form = [("To", _whatsapp(message.to) if whatsapp else message.to)]
        sender = message.sender.address if message.sender is not None else None
        sender = sender or (self.config.get("whatsapp_from") if whatsapp else None) or self.config.get("from")
        if sender:
            form.append(("From", _whatsapp(sender) if whatsapp else sender))
        service = self.config.get("messaging_service_sid")
        if service:
            form.append(("MessagingServiceSid", service))
        if not sender and not service:
            raise PermanentDeliveryError(
                f"no sender for {message.channel}: set `from` (or `whatsapp_from`, `messaging_service_sid`) or the tenant's sender",
                code="no_sender",
            )
        if message.provider_template is not None:
            form.append(("ContentSid", self._content_sid(message.provider_template)))
            if message.provider_template.parameters:
                variables = {str(number): value for number, value in enumerate(message.provider_template.parameters, start=1)}
                form.append(("ContentVariables", json.dumps(variables, ensure_ascii=False)))
        elif message.body:
            form.append(("Body", message.body))
        else:
            raise PermanentDeliveryError("the message has neither a body nor a provider template", code="invalid_message")
        return form + self._callback(message)

    def _call_form(self, message: OutboundMessage) -> list[tuple[str, str]]:
        sender = (message.sender.address if message.sender is not None else None) or self.config.get("from")
        if not sender:
            raise PermanentDeliveryError("no caller id for voice: set `from` or the tenant's voice sender", code="no_sender")
        if not message.body:
            raise PermanentDeliveryError("a voice call needs a body to read", code="invalid_message")
        return [("To", message.to), ("From", sender), ("Twiml", self._twiml(message.body))] + self._callback(message)

    def _twiml(self, text: str) -> str:
        attributes = "".join(
            f" {name}={quoteattr(str(self.config[key]))}" for name, key in (("voice", "voice"), ("language", "voice_language")) if self.config.get(key)
        )
        return f"<Response><Say{attributes}>{escape(text)}</Say></Response>"

    def _callback(self, message: OutboundMessage) -> list[tuple[str, str]]:
        url = self.config.get("status_callback_url")
        return [("StatusCallback", _with_param(url, DELIVERY_PARAM, message.delivery_id))] if url else []

    def _content_sid(self, template: ProviderTemplate) -> str:
        sids: Mapping[str, str] = self.config.get("content_sids", {})
        for key in (f"{template.name}:{template.language}", template.name):
            if key in sids:
                return sids[key]
        if template.name.startswith("HX"):
            return template.name
        raise PermanentDeliveryError(
            f"no Content Template SID for template {template.name!r} ({template.language}): "
            "map it under content_sids, or name the template by its HX… SID",
            code="template_not_found",
        )

    def _account_url(self, resource: str = "") -> str:
        base = str(self.config.get("base_url", DEFAULT_BASE_URL)).rstrip("/")
        account = quote(self.config["account_sid"], safe="")
        return f"{base}/{API_VERSION}/Accounts/{account}{'/' + resource if resource else '.json'}"

    def _auth(self) -> dict[str, str]:
        """The ``Authorization`` header: the API key when one is set, else the account SID and auth token."""
        if self.config.get("api_key_sid"):
            return {"Authorization": aiohttp.encode_basic_auth(self.config["api_key_sid"], self.config["api_key_secret"])}
        return {"Authorization": aiohttp.encode_basic_auth(self.config["account_sid"], self.config["auth_token"])}

    # -- credentials ---------------------------------------------------------------------------

    async def check_credentials(self) -> str | None:
        """``GET /2010-04-01/Accounts/{sid}.json``: the account's friendly name, status and type.

        A Standard API key may not read the Account resource, so with an API key the check lists
        one message instead (``Messages.json?PageSize=1``): what the key is used for anyway.
        """
        sid = self.config["account_sid"]
        api_key = self.config.get("api_key_sid")
        url = self._account_url("Messages.json?PageSize=1") if api_key else self._account_url()
        async with vendor_call(
            self.context.session, "GET", url, timeout=timeout_of(self.config), vendor=VENDOR, headers=self._auth()
        ) as response:
            answer = await json_answer(response)
            if not 200 <= response.status < 300:
                raise _refusal(response, answer)
        if api_key:
            return f"Twilio API key {api_key} accepted for account {sid}"
        status = str(answer.get("status", "unknown"))
        if status in {"suspended", "closed"}:
            raise CredentialsRejectedError(f"Twilio account {sid} is {status}", code="account_inactive")
        name = answer.get("friendly_name") or "unnamed"
        kind = f", {answer['type']}" if answer.get("type") else ""
        return f"Twilio account {sid} ({name}): {status}{kind}"

    # -- webhooks ------------------------------------------------------------------------------

    async def verify_webhook(self, request: InboundRequest) -> None:
        headers = {name.lower(): value for name, value in request.headers.items()}
        signature = headers.get(SIGNATURE_HEADER, "")
        if not signature:
            raise WebhookVerificationError("X-Twilio-Signature is missing")
        key, algorithm = self._signing_key(headers.get(SIGNATURE_SETTINGS_HEADER))
        params = self._signed_params(request, headers)
        for url in self._signed_urls(request.url):
            if same_secret(compute_signature(key, url, params, algorithm), signature):
                return
        raise WebhookVerificationError("X-Twilio-Signature does not match (check auth_token and webhook_url)")

    def _signing_key(self, settings: str | None) -> tuple[str, str]:
        if settings:
            algorithm = _settings_algorithm(settings)
            key = self.config.get("webhook_shared_key")
            if not key:
                raise WebhookVerificationError("the callback is signed with a SharedKey but webhook_shared_key is not configured")
            if algorithm not in _HASHES:
                raise WebhookVerificationError(f"unsupported webhook signature algorithm {algorithm!r}")
            return str(key), algorithm
        token = self.config.get("auth_token")
        if not token:
            raise WebhookVerificationError("auth_token is not configured: Twilio callbacks cannot be verified")
        return str(token), "HMAC_SHA1"

    def _signed_params(self, request: InboundRequest, headers: Mapping[str, str]) -> list[tuple[str, str]]:
        """The POST parameters in signing order; [] for a JSON body, which is checked against ``bodySHA256``."""
        body_hash = _query_params(request.url).get(BODY_HASH_PARAM)
        if body_hash is not None or _is_json(headers):
            if body_hash is None:
                raise WebhookVerificationError("a JSON callback without a bodySHA256 query parameter")
            if not same_secret(hashlib.sha256(request.body).hexdigest(), body_hash.lower()):
                raise WebhookVerificationError("the body does not match its bodySHA256 (altered on the way?)")
            return []
        try:
            pairs = parse_qsl(request.body.decode("utf-8"), keep_blank_values=True)
        except (UnicodeDecodeError, ValueError):
            raise WebhookVerificationError("the callback body is not form-encoded UTF-8") from None
        grouped: dict[str, set[str]] = {}
        for name, value in pairs:
            grouped.setdefault(name, set()).add(value)
        return [(name, value) for name in sorted(grouped) for value in sorted(grouped[name])]

    def _signed_urls(self, request_url: str) -> list[str]:
        """The URLs Twilio may have signed: the configured public URL with the request's query, then the URL as seen."""
        query = urlsplit(request_url).query
        candidates: list[str] = []
        for key in ("webhook_url", "status_callback_url"):
            configured = self.config.get(key)
            if configured:
                parts = urlsplit(str(configured))
                candidates.append(urlunsplit((parts.scheme, parts.netloc, parts.path, query, "")))
        candidates.append(request_url)
        urls: list[str] = []
        for url in candidates:
            for variant in (_without_port(url), _with_port(url)):
                if variant not in urls:
                    urls.append(variant)
        return urls

    async def answer_webhook(self, request: InboundRequest) -> InboundResponse | None:
        """Empty TwiML: Twilio reads the answer to an inbound message as instructions (reply nothing)."""
        return InboundResponse(status=200, body=b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response/>", content_type="text/xml")

    async def parse_webhook(self, request: InboundRequest) -> list[StatusUpdate | InboundReply]:
        params = _callback_params(request)
        delivery = _query_params(request.url).get(DELIVERY_PARAM)
        if params.get("CallSid") and params.get("CallStatus") and not params.get("MessageSid"):
            update = _call_update(params, delivery)
            return [update] if update is not None else []
        sid = params.get("MessageSid") or params.get("SmsSid")
        if not sid:
            return []
        status = (params.get("MessageStatus") or params.get("SmsStatus") or "").lower()
        if status in INBOUND_STATUSES or (not status and "Body" in params):
            return [_inbound(params, sid)]
        update = _message_update(params, sid, status, delivery)
        return [update] if update is not None else []


# -- answers -----------------------------------------------------------------------------------


def _refusal(response: aiohttp.ClientResponse, answer: Mapping[str, Any]) -> DeliveryError:
    code = answer.get("code")
    vendor_code = code if isinstance(code, int) else _int(code)
    message = answer.get("message")
    error = failure(
        ERRORS, vendor_code, message if isinstance(message, str) else None, http_status=response.status,
        retry_after=retry_after_seconds(response.headers.get("Retry-After")), vendor=VENDOR,
    )
    if isinstance(answer.get("more_info"), str):
        error.detail["more_info"] = answer["more_info"]
    return error


# -- callbacks ---------------------------------------------------------------------------------


def _callback_params(request: InboundRequest) -> dict[str, str]:
    headers = {name.lower(): value for name, value in request.headers.items()}
    if _is_json(headers):
        payload = json.loads(request.body)
        if not isinstance(payload, dict):
            return {}
        return {str(key): form_value(value) for key, value in payload.items() if value is not None}
    return dict(parse_qsl(request.body.decode("utf-8"), keep_blank_values=True))


def _message_update(params: Mapping[str, str], sid: str, vendor_status: str, delivery: str | None) -> StatusUpdate | None:
    status = MESSAGE_STATUSES.get(vendor_status)
    if status is None:
        return None
    detail: dict[str, Any] = {"vendor_status": vendor_status}
    error = None
    code = params.get("ErrorCode")
    if code:
        detail["error_code"] = code
        row = ERRORS.get(_int(code) or -1)
        if row is not None and row.code:
            detail["code"] = row.code
        if status == "failed":
            meaning = row.meaning if row is not None else params.get("ErrorMessage") or f"see https://www.twilio.com/docs/api/errors/{code}"
            error = f"Twilio error {code}: {meaning}"
    elif status == "failed":
        error = f"Twilio reported the message {vendor_status}"
    for key, name in (("ChannelPrefix", "channel"), ("To", "to")):
        if params.get(key):
            detail[name] = params[key]
    return StatusUpdate(sid, status, occurred_at=_dlr_time(params.get("RawDlrDoneDate")), detail=detail, error=error, delivery_id=delivery)


def _call_update(params: Mapping[str, str], delivery: str | None) -> StatusUpdate | None:
    vendor_status = params["CallStatus"].lower()
    status = CALL_STATUSES.get(vendor_status)
    if status is None:
        return None
    detail: dict[str, Any] = {"vendor_status": vendor_status}
    for key, name in (("CallDuration", "duration_seconds"), ("SipResponseCode", "sip_response_code"), ("ErrorCode", "error_code")):
        if params.get(key):
            detail[name] = params[key]
    error = f"the call ended {vendor_status}" if status == "failed" else None
    return StatusUpdate(
        params["CallSid"], status, occurred_at=_rfc2822(params.get("Timestamp")), detail=detail, error=error, delivery_id=delivery
    )


def _inbound(params: Mapping[str, str], sid: str) -> InboundReply:
    sender = params.get("From", "")
    channel = "whatsapp" if sender.startswith(WHATSAPP_PREFIX) else "sms"
    detail: dict[str, Any] = {"to": params.get("To", "").removeprefix(WHATSAPP_PREFIX)}
    opt_out_type = params.get("OptOutType", "").upper()
    if opt_out_type:
        detail["opt_out_type"] = opt_out_type
        if opt_out_type in OPT_OUT_TYPES:
            detail["opt_out"] = OPT_OUT_TYPES[opt_out_type]
    if params.get("NumMedia", "0") not in {"", "0"}:
        detail["num_media"] = params["NumMedia"]
    return InboundReply(
        sender=sender.removeprefix(WHATSAPP_PREFIX), body=params.get("Body", ""), channel=channel,
        in_reply_to=params.get("OriginalRepliedMessageSid") or None, provider_message_id=sid, detail=detail,
    )


# -- helpers -----------------------------------------------------------------------------------


def compute_signature(key: str, url: str, params: list[tuple[str, str]], algorithm: str = "HMAC_SHA1") -> str:
    """Twilio's signature: base64 HMAC of the URL followed by each (name, value) pair, in the order given."""
    content = url + "".join(name + value for name, value in params)
    return base64.b64encode(hmac.new(key.encode(), content.encode(), _HASHES[algorithm]).digest()).decode()


def _settings_algorithm(settings: str) -> str:
    for part in settings.split(","):
        name, separator, value = part.partition("=")
        if separator and name.strip() == "algorithm" and value.strip():
            return value.strip().upper()
    return "HMAC_SHA1"


def _without_port(url: str) -> str:
    parts = urlsplit(url)
    if parts.port is None:
        return url
    userinfo, at, hostport = parts.netloc.rpartition("@")
    host = hostport.rsplit(":", 1)[0]
    return urlunsplit((parts.scheme, f"{userinfo}{at}{host}", parts.path, parts.query, parts.fragment))


def _with_port(url: str) -> str:
    parts = urlsplit(url)
    if parts.port is not None:
        return url
    port = 443 if parts.scheme == "https" else 80
    return urlunsplit((parts.scheme, f"{parts.netloc}:{port}", parts.path, parts.query, parts.fragment))


def _with_param(url: str, name: str, value: str) -> str:
    parts = urlsplit(url)
    query = f"{parts.query}&" if parts.query else ""
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query + urlencode({name: value}), parts.fragment))


def _query_params(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


def _is_json(headers: Mapping[str, str]) -> bool:
    return headers.get("content-type", "").split(";", 1)[0].strip().lower() == "application/json"


def _whatsapp(address: str) -> str:
    return address if address.startswith(WHATSAPP_PREFIX) else WHATSAPP_PREFIX + address


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _dlr_time(value: str | None) -> float | None:
    """``RawDlrDoneDate`` (``YYMMDDhhmm``, UTC) as epoch seconds."""
    return utc_time(value, "%y%m%d%H%M")


def _rfc2822(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
