"""Vonage (formerly Nexmo) SMS API: text messages, delivery receipts and inbound SMS.

Sends ``POST {base_url}/sms/json`` (default ``https://rest.nexmo.com``) as form fields
``api_key``, ``api_secret``, ``from``, ``to``, ``text``, ``client-ref`` and, when set,
``callback``. Delivery receipts and inbound messages come back on
``/api/v1/webhooks/{instance}``.

Vendor quirks handled here:

- **HTTP 200 even on failure.** The answer is ``{"message-count": "N", "messages": [{"status":
  "0", "message-id", …}, …]}``, one entry per SMS part; any non-zero ``status`` is a refusal,
  classified in :data:`ERRORS` ("1" throttled and "5" internal error are transient, "4" bad
  credentials opens the breaker, invalid numbers are permanent). HTTP 401/403, 429 and 5xx are
  classified as usual.
- **Long messages are split** by Vonage into parts, each with its own ``message-id`` and its
  own delivery receipt. Every part's receipt carries the ``client-ref`` we send, which is the
  delivery id, so the delivery id is the provider message id: every part's receipt (and a
  receipt for a send whose answer was lost) matches the delivery. Vonage's own ids are kept in
  the attempt's detail (``message_ids``). A receipt without a ``client-ref`` falls back to its
  ``messageId``. Any part failing fails the delivery.
- **No idempotency key**: ``client-ref`` is only echoed (``limits.idempotency`` is False). A send
  whose answer was lost is retried, unless its receipt (which names the delivery:
  ``StatusUpdate.delivery_id``) settles the delivery first; if both sends go out, both sends'
  receipts match the delivery.
- **Numbers without "+"**: ``to`` (and a numeric ``from``) are sent as digits; inbound
  ``msisdn`` gets its "+" back so opt-outs match the recipient's E.164 phone.
- **Encoding**: text outside the GSM 03.38 alphabet is sent with ``type=unicode`` (else Vonage
  would mangle it).
- **Signed requests** (optional, enabled on the account by Vonage support): with
  ``signature_secret``, webhooks must carry ``sig``: the parameters other than ``sig`` sorted by
  name, each as ``&name=value`` with ``&`` and ``=`` in values replaced by ``_``; then either
  the MD5 of that string followed by the secret (``md5hash``, the default) or its HMAC keyed
  with the secret (``md5``, ``sha1``, ``sha256``, ``sha512``), as hex in either case. The
  ``timestamp`` parameter (unix seconds) must be within ``signature_tolerance_seconds``. With
  ``sign_requests`` sends are signed the same way instead of carrying ``api_secret``.
  Without a signature secret, callbacks must carry ``?token=<webhook_token>`` (added to
  ``callback`` automatically; add it to the dashboard's webhook URLs yourself), compared in
  constant time. Neither configured: every callback is refused.
- **Webhook methods**: Vonage sends form fields (``POST``), JSON (``POST-JSON``) or query
  parameters (``GET``, its default) as the dashboard says; all three are read, and a ``GET``
  callback is stored, verified and processed like a posted one (``callbacks_by_get``).
- **Receipt statuses**: accepted / buffered / unknown → ``sent`` (intermediate; Vonage sends
  ``expired`` itself after 72 hours without a final one), delivered → ``delivered``, expired /
  failed / rejected / undelivered / deleted → ``failed`` with ``err-code`` and its meaning.
  A receipt whose ``api-key`` is another account's is ignored.

Docs:

- https://developer.vonage.com/en/messaging/sms/overview
- https://developer.vonage.com/en/api/sms (and https://github.com/Nexmo/api-specification/blob/master/definitions/sms.yml)
- https://developer.vonage.com/en/messaging/sms/guides/troubleshooting-sms (send status codes)
- https://developer.vonage.com/en/api-errors/sms
- https://developer.vonage.com/en/messaging/sms/guides/delivery-receipts
- https://api.support.vonage.com/hc/en-us/articles/204014733 (delivery receipt err-codes)
- https://developer.vonage.com/en/getting-started/concepts/signing-messages
- https://developer.vonage.com/en/messaging/sms/guides/concatenation-and-encoding
- https://developer.vonage.com/en/account/code-snippets/account-balance (GET /account/get-balance, basic auth)
- https://api.support.vonage.com/hc/en-us/articles/203993598 (30 requests/second per API key)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiohttp

from gateway import (
    InboundReply,
    InboundRequest,
    OutboundMessage,
    PermanentDeliveryError,
    Provider,
    ProviderLimits,
    SendReceipt,
    StatusUpdate,
    TransientDeliveryError,
    WebhookVerificationError,
)
from gateway.provider_kit import (
    TIMEOUT_PROPERTY, VendorError, failure, form_value, json_answer, retry_after_seconds, same_secret, timeout_of, utc_time, vendor_call,
)

VENDOR: Final = "Vonage"
DEFAULT_BASE_URL: Final = "https://rest.nexmo.com"
TOKEN_PARAM: Final = "token"
SIGNATURE_PARAM: Final = "sig"
DEFAULT_TOLERANCE: Final = 300.0
SIGNATURE_METHODS: Final[Mapping[str, Callable[..., Any] | None]] = {
    "md5hash": None,  # MD5 of the parameter string followed by the secret (Vonage's default)
    "md5": hashlib.md5,  # HMAC-MD5
    "sha1": hashlib.sha1,
    "sha256": hashlib.sha256,
    "sha512": hashlib.sha512,
}

ERRORS: Final[Mapping[str, VendorError]] = {
    "1": VendorError(transient=True, meaning="throttled: sending faster than the account limit", code="rate_limited"),
    "2": VendorError(transient=False, meaning="missing parameters (from, to, api_key, api_secret or text)", code="invalid_request"),
    "3": VendorError(transient=False, meaning="invalid parameters (often the 'to' number)", code="invalid_parameters"),
    "4": VendorError(transient=False, meaning="invalid credentials: check api_key and api_secret", credentials=True),
    "5": VendorError(transient=True, meaning="Vonage internal error"),
    "6": VendorError(transient=False, meaning="invalid message, e.g. an unrecognised number prefix", code="invalid_recipient"),
    "7": VendorError(transient=False, meaning="the number is barred and may not receive messages", code="recipient_barred"),
    "8": VendorError(transient=False, meaning="the Vonage account is suspended (partner account barred)", credentials=True),
    "9": VendorError(transient=True, meaning="partner quota violation: not enough credit; top up", code="quota_exceeded"),
    "10": VendorError(transient=True, meaning="too many existing binds (simultaneous connections)", code="rate_limited"),
    "11": VendorError(transient=False, meaning="the account is not enabled for the SMS API (HTTP); use SMPP", credentials=True),
    "12": VendorError(transient=False, meaning="message too long", code="body_too_long"),
    "14": VendorError(transient=False, meaning="invalid signature: check signature_secret and signature_method", credentials=True),
    "15": VendorError(transient=False, meaning="invalid sender address: this 'from' is not authorised for the destination", code="invalid_sender"),
    "22": VendorError(transient=False, meaning="invalid network code", code="invalid_parameters"),
    "23": VendorError(transient=False, meaning="invalid callback URL (too long or illegal characters): check callback_url", code="invalid_callback_url"),
    "29": VendorError(transient=False, meaning="non-whitelisted destination: the account is in demo mode", code="unverified_recipient"),
    "32": VendorError(transient=False, meaning="a signed request may not also carry api_secret", credentials=True),
    "33": VendorError(transient=False, meaning="the number is de-activated and may not receive messages", code="invalid_recipient"),
}
"""Status codes of the SMS API's ``messages[].status`` ("0" is success)."""

RECEIPT_ERRORS: Final[Mapping[str, str]] = {
    "0": "delivered",
    "1": "unknown: not delivered, no reason could be determined",
    "2": "absent subscriber (temporary)",
    "3": "absent subscriber (permanent): the number is no longer active",
    "4": "call barred by user",
    "5": "portability error",
    "6": "anti-spam rejection",
    "7": "handset busy",
    "8": "network error",
    "9": "illegal number: the user asked not to receive messages from this service",
    "10": "illegal message (e.g. a wrong encoding flag)",
    "11": "unroutable",
    "12": "destination unreachable",
    "13": "subscriber age restriction",
    "14": "number blocked by carrier",
    "15": "prepaid insufficient funds",
    "16": "gateway quota exceeded",
    "50": "entity filter",
    "51": "header filter",
    "52": "content filter",
    "53": "consent filter",
    "54": "regulation error",
    "99": "general error",
}
"""A delivery receipt's ``err-code`` and what it means (shown as the failed receipt's error)."""

RECEIPT_STATUSES: Final[Mapping[str, str]] = {
    "accepted": "sent",
    "buffered": "sent",
    "unknown": "sent",
    "delivered": "delivered",
    "expired": "failed",
    "failed": "failed",
    "rejected": "failed",
    "undelivered": "failed",
    "deleted": "failed",
}

# GSM 03.38: the basic alphabet and the extension table (each extension character takes two septets).
GSM_CHARACTERS: Final = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿"
    "abcdefghijklmnopqrstuvwxyzäöñüà" "\f^{}\\[~]|€"
)


class VonageProvider(Provider):
    """SMS through the Vonage SMS API (one API key)."""

    channels = frozenset({"sms"})
    config_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "required": ["api_key", "api_secret"],
        "properties": {
            "api_key": {"type": "string", "minLength": 1, "description": "The account's API key."},
            "api_secret": {"type": "string", "minLength": 1, "x-secret": True},
            "from": {"type": "string", "minLength": 1, "description": "Default sender: a Vonage number (E.164) or an alphanumeric sender id."},
            "callback_url": {
                "type": "string", "pattern": "^https?://[^\\s]+$",
                "description": "Public URL of this instance's /api/v1/webhooks/<instance>, sent as `callback` so receipts come here.",
            },
            "signature_secret": {
                "type": "string", "minLength": 1, "x-secret": True,
                "description": "The account's signature secret: callbacks must then be signed (sig).",
            },
            "signature_method": {"enum": list(SIGNATURE_METHODS), "default": "md5hash", "description": "As set in the Vonage dashboard."},
            "sign_requests": {"type": "boolean", "default": False, "description": "Sign sends with signature_secret instead of sending api_secret."},
            "signature_tolerance_seconds": {"type": "number", "exclusiveMinimum": 0, "default": DEFAULT_TOLERANCE},
            "webhook_token": {
                "type": "string", "minLength": 16, "x-secret": True,
                "description": "Without signature_secret: the ?token= callbacks must carry.",
            },
            "base_url": {"type": "string", "pattern": "^https?://[^\\s/]+[^\\s]*$", "default": DEFAULT_BASE_URL},
            "timeout_seconds": TIMEOUT_PROPERTY,
        },
        "if": {"properties": {"sign_requests": {"const": True}}, "required": ["sign_requests"]},
        "then": {"required": ["signature_secret"]},
        "additionalProperties": False,
    }
    limits = ProviderLimits(rate_per_second=30.0, receipts=True, replies=True, idempotency=False)
    callbacks_by_get = True  # the dashboard's default webhook method

    # -- sending ---------------------------------------------------------------------------

    async def send(self, message: OutboundMessage) -> SendReceipt:
        async with vendor_call(
            self.context.session, "POST", self._url("/sms/json"), timeout=timeout_of(self.config), vendor=VENDOR, data=self._form(message),
        ) as response:
            answer = await json_answer(response)
            if response.status != 200:
                raise failure(
                    ERRORS, None, _http_reason(answer), http_status=response.status,
                    retry_after=retry_after_seconds(response.headers.get("Retry-After")), vendor=VENDOR,
                )
        return _receipt(message, answer)

    def _form(self, message: OutboundMessage) -> dict[str, str]:
        sender = (message.sender.address if message.sender is not None else None) or self.config.get("from")
        if not sender:
            raise PermanentDeliveryError("no sender: set `from` or the tenant's sms sender", code="no_sender")
        if not message.body:
            raise PermanentDeliveryError("the message has no text", code="invalid_message")
        form = {
            "api_key": self.config["api_key"],
            "from": _number(sender),
            "to": _number(message.to),
            "text": message.body,
            "client-ref": message.delivery_id,
        }
        if not set(message.body) <= GSM_CHARACTERS:
            form["type"] = "unicode"
        if self.config.get("callback_url"):
            form["callback"] = self._callback_url()
        if self.config.get("sign_requests"):
            form["timestamp"] = str(int(self.context.clock.now()))
            form[SIGNATURE_PARAM] = sign(form, self.config["signature_secret"], self._method())
        else:
            form["api_secret"] = self.config["api_secret"]
        return form

    def _callback_url(self) -> str:
        url = str(self.config["callback_url"])
        if self.config.get("signature_secret") or not self.config.get("webhook_token"):
            return url
        parts = urlsplit(url)
        query = f"{parts.query}&" if parts.query else ""
        return urlunsplit((parts.scheme, parts.netloc, parts.path, query + urlencode({TOKEN_PARAM: self.config["webhook_token"]}), ""))

    def _url(self, path: str) -> str:
        return str(self.config.get("base_url", DEFAULT_BASE_URL)).rstrip("/") + path

    def _method(self) -> str:
        return str(self.config.get("signature_method", "md5hash"))

    # -- credentials ---------------------------------------------------------------------------

    async def check_credentials(self) -> str | None:
        """``GET /account/get-balance`` with basic auth (the secret stays out of the URL): the balance."""
        headers = {"Authorization": aiohttp.encode_basic_auth(self.config["api_key"], self.config["api_secret"])}
        async with vendor_call(
            self.context.session, "GET", self._url("/account/get-balance"), timeout=timeout_of(self.config), vendor=VENDOR, headers=headers,
        ) as response:
            answer = await json_answer(response)
            if response.status != 200:
                raise failure(ERRORS, None, _http_reason(answer), http_status=response.status, vendor=VENDOR)
        value = answer.get("value")
        balance = f"{value:.2f}" if isinstance(value, int | float) else "unknown"
        reload = ", auto-reload on" if answer.get("autoReload") else ""
        return f"Vonage account {self.config['api_key']}: balance {balance} EUR{reload}"  # Vonage accounts are billed in euros

    # -- webhooks ------------------------------------------------------------------------------

    async def verify_webhook(self, request: InboundRequest) -> None:
        secret = self.config.get("signature_secret")
        if secret:
            self._check_signature(_payload(request), str(secret))
            return
        token = self.config.get("webhook_token")
        if not token:
            raise WebhookVerificationError("configure signature_secret or webhook_token: unauthenticated Vonage callbacks are refused")
        offered = request.query.get(TOKEN_PARAM, "")
        if not offered or not same_secret(str(token), offered):
            raise WebhookVerificationError("the callback's ?token= is missing or wrong")

    def _check_signature(self, params: Mapping[str, str], secret: str) -> None:
        offered = params.get(SIGNATURE_PARAM, "")
        if not offered:
            raise WebhookVerificationError("the callback is not signed (no sig parameter)")
        try:
            timestamp = float(params.get("timestamp", ""))
        except ValueError:
            timestamp = math.nan
        if not math.isfinite(timestamp):
            raise WebhookVerificationError("the signed callback has no valid timestamp")
        tolerance = float(self.config.get("signature_tolerance_seconds", DEFAULT_TOLERANCE))
        if abs(self.context.clock.now() - timestamp) > tolerance:
            raise WebhookVerificationError("the callback's timestamp is outside the tolerance (a replay?)")
        expected = sign(params, secret, self._method())
        if not same_secret(expected.lower(), offered.lower()):
            raise WebhookVerificationError("the callback's sig does not match (check signature_secret and signature_method)")

    async def parse_webhook(self, request: InboundRequest) -> list[StatusUpdate | InboundReply]:
        return self._read(_payload(request))

    def _read(self, params: Mapping[str, str]) -> list[StatusUpdate | InboundReply]:
        api_key = params.get("api-key")
        if api_key and api_key != self.config["api_key"]:
            return []  # another account's callback on a shared endpoint
        if "status" in params and params.get("messageId"):
            update = _receipt_update(params)
            return [update] if update is not None else []
        if params.get("msisdn") and ("text" in params or "keyword" in params):
            return [_inbound(params)]
        return []


def sign(params: Mapping[str, str], secret: str, method: str = "md5hash") -> str:
    """Vonage's signature of ``params`` (``sig`` excluded), as lowercase hex.

    Sorted by name, each parameter as ``&name=value`` with ``&`` and ``=`` in the value replaced
    by ``_``; ``md5hash`` is the MD5 of that string followed by the secret, the others an HMAC
    of it keyed with the secret.
    """
    signed = "".join(
        f"&{name}={str(value).replace('&', '_').replace('=', '_')}" for name, value in sorted(params.items()) if name != SIGNATURE_PARAM
    ).encode()
    digest = SIGNATURE_METHODS[method]
    if digest is None:
        return hashlib.md5(signed + secret.encode()).hexdigest()
    return hmac.new(secret.encode(), signed, digest).hexdigest()


# -- answers -----------------------------------------------------------------------------------


def _http_reason(answer: Mapping[str, Any]) -> str | None:
    for key in ("error-code-label", "title", "error-text", "detail"):
        if isinstance(answer.get(key), str):
            return str(answer[key])
    return None


def _receipt(message: OutboundMessage, answer: Mapping[str, Any]) -> SendReceipt:
    parts = answer.get("messages")
    if not isinstance(parts, list) or not parts or not all(isinstance(part, dict) for part in parts):
        raise TransientDeliveryError("Vonage answered 200 without a messages list", code="no_message_id")
    accepted = [str(part["message-id"]) for part in parts if str(part.get("status")) == "0" and part.get("message-id")]
    refused = [part for part in parts if str(part.get("status")) != "0"]
    if refused:
        first = refused[0]
        error = failure(ERRORS, str(first.get("status")), first.get("error-text"), http_status=200, vendor=VENDOR)
        if accepted:
            error.detail["accepted_message_ids"] = accepted  # a long message only partly sent
        raise error
    detail: dict[str, Any] = {"message_ids": accepted, "message_count": answer.get("message-count", str(len(parts)))}
    last = parts[-1]
    for key, name in (("remaining-balance", "remaining_balance"), ("network", "network")):
        if last.get(key) is not None:
            detail[name] = last[key]
    prices = [str(part["message-price"]) for part in parts if part.get("message-price") is not None]
    if len(prices) == len(parts):
        try:
            detail["message_price"] = f"{sum(float(price) for price in prices):.8f}"
        except ValueError:
            pass
    return SendReceipt(provider_message_id=message.delivery_id, detail=detail)


# -- callbacks ---------------------------------------------------------------------------------


def _payload(request: InboundRequest) -> dict[str, str]:
    """The callback's parameters: the query for GET, else the form or JSON body (our ``token`` aside)."""
    if request.method.upper() == "GET":
        return {name: value for name, value in request.query.items() if name != TOKEN_PARAM}
    headers = {name.lower(): value for name, value in request.headers.items()}
    content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type == "application/json" or (not content_type and request.body.lstrip().startswith(b"{")):
        try:
            payload = json.loads(request.body)
        except (ValueError, RecursionError):
            raise WebhookVerificationError("the callback body is not valid JSON") from None
        if not isinstance(payload, dict):
            raise WebhookVerificationError("the callback body is not a JSON object")
        return {str(name): form_value(value) for name, value in payload.items() if value is not None}
    try:
        return dict(parse_qsl(request.body.decode("utf-8"), keep_blank_values=True))
    except (UnicodeDecodeError, ValueError):
        raise WebhookVerificationError("the callback body is not form-encoded UTF-8") from None


def _receipt_update(params: Mapping[str, str]) -> StatusUpdate | None:
    vendor_status = params["status"].lower()
    status = RECEIPT_STATUSES.get(vendor_status)
    if status is None:
        return None
    message_id = params["messageId"]
    detail: dict[str, Any] = {"vendor_status": vendor_status, "message_id": message_id}
    for key, name in (("err-code", "err_code"), ("network-code", "network_code"), ("price", "price"), ("msisdn", "msisdn")):
        if params.get(key):
            detail[name] = params[key]
    error = None
    if status == "failed":
        code = params.get("err-code", "")
        meaning = RECEIPT_ERRORS.get(code, "see Vonage's delivery receipt error codes")
        error = f"Vonage receipt {vendor_status}" + (f" (err-code {code}: {meaning})" if code else "")
    occurred = _scts(params.get("scts")) or _timestamp(params.get("message-timestamp"))
    delivery_id = params.get("client-ref") or None
    return StatusUpdate(delivery_id or message_id, status, occurred_at=occurred, detail=detail, error=error, delivery_id=delivery_id)


def _inbound(params: Mapping[str, str]) -> InboundReply:
    detail: dict[str, Any] = {"to": _plus(params.get("to", ""))}
    for key, name in (("keyword", "keyword"), ("type", "type"), ("concat-ref", "concat_ref"), ("concat-part", "concat_part"), ("concat-total", "concat_total")):
        if params.get(key):
            detail[name] = params[key]
    return InboundReply(
        sender=_plus(params["msisdn"]), body=params.get("text", ""), channel="sms", provider_message_id=params.get("messageId") or None,
        occurred_at=_timestamp(params.get("message-timestamp")), detail=detail,
    )


# -- helpers -----------------------------------------------------------------------------------


def _number(address: str) -> str:
    """An E.164 number as Vonage takes it (digits, no "+"); an alphanumeric sender id unchanged."""
    return address[1:] if address.startswith("+") and address[1:].isdigit() else address


def _plus(number: str) -> str:
    return f"+{number}" if number.isdigit() else number


def _scts(value: str | None) -> float | None:
    """``scts`` (``YYMMDDHHMM``, when the carrier reported) as epoch seconds, read as UTC."""
    return utc_time(value, "%y%m%d%H%M")


def _timestamp(value: str | None) -> float | None:
    """``message-timestamp`` (``YYYY-MM-DD HH:MM:SS``, UTC) as epoch seconds."""
    return utc_time(value, "%Y-%m-%d %H:%M:%S")
