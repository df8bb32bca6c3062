"""Brevo (formerly Sendinblue): transactional email and SMS, with receipts and opt-outs by webhook.

Vendor documentation:

- Email: https://developers.brevo.com/docs/send-a-transactional-email and
  https://developers.brevo.com/reference/sendtransacemail; idempotency:
  https://developers.brevo.com/changelog/email-api-now-supports-idempotency
- SMS: https://developers.brevo.com/docs/transactional-sms-endpoints and
  https://developers.brevo.com/changelog/deprecated-endpoint-post-v3transactionalsmssms
- Errors: https://developers.brevo.com/docs/how-it-works; rate limits:
  https://developers.brevo.com/docs/api-limits and https://developers.brevo.com/docs/limit-headers
- Webhooks: https://developers.brevo.com/docs/transactional-webhooks and (securing them)
  https://developers.brevo.com/docs/username-and-password-authentication
- Account: https://developers.brevo.com/reference/get-account

Email is ``POST {base_url}/v3/smtp/email`` with the ``api-key`` header and a JSON body (``sender``,
``to``, ``subject``, ``htmlContent``, ``textContent``, ``replyTo``, ``headers``); Brevo answers
``201 {"messageId": "<…@smtp-relay.mailin.fr>"}``. SMS is ``POST {base_url}/v3/transactionalSMS/send``
(``sender``, ``recipient``, ``content``, ``type: transactional``), answering ``{"messageId": <int>}``,
kept as a string; the older ``/v3/transactionalSMS/sms`` is deprecated and not used.

Vendor quirks handled here:

- Our delivery id goes in the message's custom headers twice: ``X-Mailin-custom`` (Brevo echoes
  it in every email webhook) and ``idempotencyKey`` (Brevo sends a message once per key within
  15 minutes, so a retry after a timeout does not send twice). SMS has neither.
- Message ids are stored without angle brackets and webhook ids are read the same way, so they
  match whichever form Brevo uses where.
- Errors are ``{"code", "message"}`` with string codes, several of them about the account rather
  than the message (``unauthorized``, ``permission_denied``, ``not_enough_credits``…): those are
  credential failures, so the breaker opens and failover moves on. A 429 is transient, honouring
  ``Retry-After`` or else ``x-sib-ratelimit-reset`` (seconds until the window resets).
- Brevo's recipients are phone numbers without ``+`` (``33612345678``); ours are E.164. The ``+``
  is dropped on send and restored on what webhooks report.
- Brevo webhooks are **not signed**. An instance accepts a callback only with its own secrets:
  ``webhook_token`` (the callback URL's ``?token=``, or an ``Authorization: Bearer`` header,
  Brevo's ``auth: {type: bearer}``) and/or ``webhook_username`` + ``webhook_password`` (HTTP
  basic auth, Brevo's ``https://user:pass@host/…`` webhook URL). Every mechanism configured must
  pass; with none configured every callback is refused. ``allowed_source_ranges`` (CIDRs, e.g.
  Brevo's published webhook ranges) further refuses callbacks from elsewhere with 403; it checks
  the connection's address, so behind a reverse proxy list the proxy's range instead.
- Email events, matched on ``message-id``: ``request`` → sent; ``delivered`` → delivered;
  ``deferred`` and ``soft_bounce`` → sent (Brevo keeps trying); ``hard_bounce``,
  ``invalid_email`` and ``blocked`` → bounced; ``error`` → failed; ``opened`` and
  ``unique_opened`` → opened; ``proxy_open`` (a mail proxy fetched the images: Apple Mail Privacy
  Protection and the like) → delivered only; ``click`` → clicked. ``unsubscribed`` and ``spam``
  (a complaint) → the recipient's :class:`~gateway.OptOut`, and ``delivered``. Our delivery id
  goes out in the ``X-Mailin-custom`` header and comes back in every event, so a receipt finds
  its delivery even when the send's answer was lost.
- SMS events (``msg_status``), matched on ``messageId``: ``sent``/``accepted`` → sent,
  ``delivered``, ``soft_bounce`` → failed (the carrier gave up for now; Brevo does not resend),
  ``hard_bounce`` → bounced, ``rejected``/``skip`` → failed; a ``reply`` text is an inbound SMS
  and an ``unsubscribe`` (``subscribe``) the recipient's :class:`~gateway.OptOut` (opting back in).
- Timestamps: ``ts_epoch`` (UTC milliseconds, though some samples show seconds), else
  ``ts_event``/``ts`` (UTC seconds); ``date`` is in the account's time zone and is not used.
- Rate limits are per endpoint (1000/s for email, 150/s for SMS on standard plans), so no single
  ``rate_per_second`` is declared.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Final

import aiohttp

from gateway import (
    DeliveryError,
    InboundReply,
    InboundRequest,
    OptOut,
    OutboundMessage,
    PermanentDeliveryError,
    Provider,
    ProviderContext,
    ProviderLimits,
    ProviderReport,
    SendReceipt,
    StatusUpdate,
    TransientDeliveryError,
    WebhookVerificationError,
)
from gateway.provider_kit import TIMEOUT_PROPERTY, VendorError, failure, json_answer, retry_after_seconds, same_secret, timeout_of, vendor_call

VENDOR: Final = "Brevo"
DEFAULT_BASE_URL: Final = "https://api.brevo.com"
EMAIL_PATH: Final = "/v3/smtp/email"
SMS_PATH: Final = "/v3/transactionalSMS/send"
ACCOUNT_PATH: Final = "/v3/account"
CUSTOM_HEADER: Final = "X-Mailin-custom"
IDEMPOTENCY_HEADER: Final = "idempotencyKey"
INVALID_RECIPIENT: Final = "invalid_recipient"
"""Our key for an ``invalid_parameter`` whose message is about the recipient's address or number."""
RATE_LIMITED: Final = "too_many_requests"
"""Our key for a 429 whose body names no code of the table."""

ERRORS: Final[Mapping[str, VendorError]] = {
    INVALID_RECIPIENT: VendorError(transient=False, meaning="Brevo says the recipient's address or number is not valid", code="invalid_recipient"),
    "invalid_parameter": VendorError(transient=False, meaning="a parameter's value is not valid (format or type)"),
    "missing_parameter": VendorError(transient=False, meaning="a required parameter is missing (a sender, content)"),
    "out_of_range": VendorError(transient=False, meaning="a parameter's value is outside the authorised range"),
    "bad_request": VendorError(transient=False, meaning="Brevo refused the request as malformed"),
    "not_acceptable": VendorError(transient=False, meaning="Brevo cannot answer in the format asked"),
    "method_not_allowed": VendorError(transient=False, meaning="the API path does not take this method"),
    "document_not_found": VendorError(transient=False, meaning="something the request names (a sender, a template) does not exist"),
    "campaign_processing": VendorError(transient=False, meaning="a campaign is being processed (not a transactional message)"),
    "campaign_sent": VendorError(transient=False, meaning="a campaign was already sent (not a transactional message)"),
    "duplicate_parameter": VendorError(transient=False, meaning="a parameter is given twice"),
    "duplicate_request": VendorError(transient=True, meaning="the very same request came too often: try later", code="rate_limited"),
    RATE_LIMITED: VendorError(transient=True, meaning="Brevo is throttling this account (HTTP 429)", code="rate_limited"),
    "unauthorized": VendorError(transient=False, meaning="check this instance's `api_key` (and Brevo's authorised IPs)", credentials=True),
    "permission_denied": VendorError(transient=False, meaning="the API key may not do this (or the sender is not validated)", credentials=True),
    "reseller_permission_denied": VendorError(transient=False, meaning="this call needs a reseller plan", credentials=True),
    "not_enough_credits": VendorError(transient=False, meaning="the account has run out of credits: top it up", credentials=True),
    "account_under_validation": VendorError(transient=False, meaning="Brevo is still validating the account", credentials=True),
}
_EMAIL: Final = r"^[^@\s]+@[^@\s]+$"
_RECIPIENT_PROBLEM: Final = re.compile(r"not valid in to\b|recipient|(phone|mobile) number", re.IGNORECASE)

EMAIL_STATUSES: Final[Mapping[str, str]] = {
    "request": "sent",
    "deferred": "sent",
    "soft_bounce": "sent",
    "delivered": "delivered",
    "proxy_open": "delivered",
    "unique_proxy_open": "delivered",
    "opened": "opened",
    "unique_opened": "opened",
    "click": "clicked",
    "hard_bounce": "bounced",
    "invalid_email": "bounced",
    "invalid": "bounced",
    "blocked": "bounced",
    "error": "failed",
    "spam": "delivered",
    "unsubscribed": "delivered",
    "unsubscribe": "delivered",
}
"""Email webhook ``event`` → Tidings receipt status (complaints and unsubscribes prove delivery)."""
EMAIL_OPT_OUTS: Final = frozenset({"spam", "unsubscribed", "unsubscribe"})
EMAIL_FAILURES: Final = frozenset({"hard_bounce", "invalid_email", "invalid", "blocked", "error"})

SMS_STATUSES: Final[Mapping[str, str]] = {
    "accepted": "sent",
    "sent": "sent",
    "delivered": "delivered",
    "soft_bounce": "failed",
    "hard_bounce": "bounced",
    "rejected": "failed",
    "skip": "failed",
}
"""SMS webhook ``msg_status`` → Tidings receipt status."""
SMS_REPLIES: Final = frozenset({"reply", "replied"})
SMS_OPT_OUTS: Final = frozenset({"unsubscribe", "unsubscribed"})
SMS_OPT_INS: Final = frozenset({"subscribe", "subscribed"})


class BrevoProvider(Provider):
    """Transactional email and SMS through one Brevo account."""

    channels = frozenset({"email", "sms"})
    config_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "required": ["api_key"],
        "properties": {
            "api_key": {"type": "string", "minLength": 1, "x-secret": True, "description": "A Brevo v3 API key (xkeysib-…)."},
            "base_url": {"type": "string", "pattern": "^https?://", "default": DEFAULT_BASE_URL},
            "from": {"type": "string", "pattern": _EMAIL, "description": "Default email sender, validated in Brevo (a tenant's email sender wins)."},
            "from_name": {"type": "string", "description": "Display name for `from`."},
            "reply_to": {"type": "string", "pattern": _EMAIL, "description": "Reply-To for messages sent from `from`."},
            "sms_sender": {
                "type": "string",
                "pattern": "^([A-Za-z0-9 ]{1,11}|\\+?[0-9]{1,15})$",
                "description": "Default SMS sender: up to 11 letters and digits, or a number of up to 15 digits.",
            },
            "webhook_token": {
                "type": "string",
                "minLength": 16,
                "x-secret": True,
                "description": "Callbacks must carry it as ?token=… in the callback URL or as a Bearer token.",
            },
            "webhook_username": {"type": "string", "minLength": 1, "description": "Basic-auth user callbacks must carry."},
            "webhook_password": {"type": "string", "minLength": 8, "x-secret": True, "description": "Basic-auth password callbacks must carry."},
            "allowed_source_ranges": {
                "type": "array",
                "items": {"type": "string", "pattern": "^[0-9A-Fa-f:.]+(/[0-9]{1,3})?$"},
                "description": "If set, callbacks from any other address (CIDR ranges) are refused with 403.",
            },
            "timeout_seconds": TIMEOUT_PROPERTY,
        },
        "dependentRequired": {"webhook_username": ["webhook_password"], "webhook_password": ["webhook_username"]},
        "additionalProperties": False,
    }
    limits = ProviderLimits(receipts=True, replies=True, idempotency=True)

    def __init__(self, name: str, config: Mapping[str, Any], context: ProviderContext) -> None:
        super().__init__(name, config, context)
        self._ranges = _networks(self.config.get("allowed_source_ranges", ()))

    @property
    def base_url(self) -> str:
        return str(self.config.get("base_url") or DEFAULT_BASE_URL).rstrip("/")

    # -- sending -------------------------------------------------------------------------------

    async def send(self, message: OutboundMessage) -> SendReceipt:
        if message.channel == "sms":
            return await self._post(SMS_PATH, self._sms(message))
        return await self._post(EMAIL_PATH, self._email(message))

    async def _post(self, path: str, payload: Mapping[str, Any]) -> SendReceipt:
        async with vendor_call(
            self.context.session, "POST", self.base_url + path, timeout=timeout_of(self.config), vendor=VENDOR,
            json=payload, headers=self._headers(),
        ) as response:
            answer = await json_answer(response, text_key="message")
            if response.status >= 300:
                raise _refusal(response, answer)
        message_id = answer.get("messageId")
        if isinstance(message_id, int) and not isinstance(message_id, bool):
            message_id = str(message_id)
        if not isinstance(message_id, str) or not message_id.strip("<> "):
            raise TransientDeliveryError(f"{VENDOR} answered {response.status} without a message id")
        return SendReceipt(provider_message_id=bare_message_id(message_id), detail={"http_status": response.status})

    def _headers(self) -> dict[str, str]:
        return {"api-key": self.config["api_key"], "Accept": "application/json"}

    def _email(self, message: OutboundMessage) -> dict[str, Any]:
        address, name, reply_to = self._email_sender(message)
        payload: dict[str, Any] = {
            "sender": _contact(address, name),
            "to": [{"email": message.to}],
            "subject": message.subject or "",
            "headers": {CUSTOM_HEADER: message.idempotency_key, IDEMPOTENCY_HEADER: message.idempotency_key},
        }
        if message.html is not None:
            payload["htmlContent"] = message.html
        if message.body is not None:
            payload["textContent"] = message.body
        if reply_to:
            payload["replyTo"] = {"email": reply_to}
        return payload

    def _email_sender(self, message: OutboundMessage) -> tuple[str, str | None, str | None]:
        """The tenant's sender as a whole, else the instance's own (a tenant's From never gets the instance's Reply-To)."""
        if message.sender is not None:
            return message.sender.address, message.sender.name, message.sender.reply_to
        address = self.config.get("from")
        if not address:
            raise _no_sender(self.name, "from", "email")
        return address, self.config.get("from_name"), self.config.get("reply_to")

    def _sms(self, message: OutboundMessage) -> dict[str, Any]:
        sender = message.sender.address if message.sender is not None else self.config.get("sms_sender")
        if not sender:
            raise _no_sender(self.name, "sms_sender", "sms")
        return {"sender": sender, "recipient": message.to.removeprefix("+"), "content": message.body or "", "type": "transactional"}

    async def check_credentials(self) -> str | None:
        async with vendor_call(
            self.context.session, "GET", self.base_url + ACCOUNT_PATH, timeout=timeout_of(self.config), vendor=VENDOR, headers=self._headers()
        ) as response:
            answer = await json_answer(response, text_key="message")
            if response.status >= 300:
                raise _refusal(response, answer)
        who = answer.get("companyName") or answer.get("email") or "unnamed"
        return f"Brevo account {who}" + (f" ({answer['email']})" if answer.get("companyName") and answer.get("email") else "")

    # -- webhooks ------------------------------------------------------------------------------

    async def verify_webhook(self, request: InboundRequest) -> None:
        if self._ranges:
            self._check_source(request.remote)
        token, username = self.config.get("webhook_token"), self.config.get("webhook_username")
        if not token and not username:
            raise WebhookVerificationError(
                f"provider instance {self.name!r} has no webhook_token or webhook_username/password: it takes no callbacks"
            )
        authorization = request.headers.get("Authorization", "")
        if token and not same_secret(token, _offered_token(request.query, authorization)):
            raise WebhookVerificationError("the callback's token is missing or wrong")
        if username and not _basic_auth_matches(authorization, username, self.config.get("webhook_password", "")):
            raise WebhookVerificationError("the callback's basic-auth credentials are missing or wrong")

    def _check_source(self, remote: str | None) -> None:
        address = _ip(remote)
        if address is None or not any(address in network for network in self._ranges):
            raise WebhookVerificationError(f"callbacks from {remote or 'an unknown address'} are not allowed", status=403)

    async def parse_webhook(self, request: InboundRequest) -> list[ProviderReport]:
        payload = json.loads(request.body)
        events = payload if isinstance(payload, list) else [payload]  # batched webhooks send a list
        found: list[ProviderReport] = []
        for event in events:
            if isinstance(event, dict):
                found += parse_sms_event(event) if "msg_status" in event else parse_email_event(event)
        return found


def bare_message_id(message_id: str) -> str:
    """A Message-ID without angle brackets."""
    return message_id.strip().removeprefix("<").removesuffix(">")


def parse_email_event(event: Mapping[str, Any]) -> list[StatusUpdate | OptOut]:
    """One transactional email webhook event as status updates and opt-outs."""
    name = str(event.get("event", ""))
    raw_id = event.get("message-id")
    message_id = bare_message_id(raw_id) if isinstance(raw_id, str) and raw_id.strip("<> ") else None
    occurred_at = _occurred_at(event)
    detail = _email_detail(event, name)
    found: list[StatusUpdate | OptOut] = []
    status = EMAIL_STATUSES.get(name)
    if status is not None and message_id is not None:
        error = (str(event.get("reason") or name)) if name in EMAIL_FAILURES else None
        delivery_id = event.get(CUSTOM_HEADER)
        found.append(
            StatusUpdate(
                message_id, status, occurred_at=occurred_at, detail=detail, error=error,
                delivery_id=delivery_id if isinstance(delivery_id, str) else None,
            )
        )
    if name in EMAIL_OPT_OUTS and isinstance(event.get("email"), str):
        found.append(OptOut("email", event["email"], reason=name, about=message_id, occurred_at=occurred_at))
    return found


def parse_sms_event(event: Mapping[str, Any]) -> list[ProviderReport]:
    """One transactional SMS webhook event as a status update, a reply or an opt-out."""
    name = str(event.get("msg_status", ""))
    raw_id = event.get("messageId")
    message_id = str(raw_id) if isinstance(raw_id, (int, str)) and not isinstance(raw_id, bool) and str(raw_id) else None
    phone = _e164(event.get("to"))
    occurred_at = _occurred_at(event)
    detail = {key: event[key] for key in ("reference", "tag", "description", "sms_count") if event.get(key) is not None}
    detail["vendor_status"] = name
    if isinstance(event.get("reply"), str) and (name in SMS_REPLIES or not name) and phone is not None:
        return [InboundReply(sender=phone, body=event["reply"], channel="sms", in_reply_to=message_id, occurred_at=occurred_at, detail=detail)]
    if (name in SMS_OPT_OUTS or name in SMS_OPT_INS) and phone is not None:
        return [OptOut("sms", phone, opted_out=name in SMS_OPT_OUTS, reason=name, about=message_id, occurred_at=occurred_at)]
    status = SMS_STATUSES.get(name)
    if status is None or message_id is None:
        return []
    error = str(event.get("description") or name) if status in ("failed", "bounced") else None
    return [StatusUpdate(message_id, status, occurred_at=occurred_at, detail=detail, error=error)]


def _email_detail(event: Mapping[str, Any], name: str) -> dict[str, Any]:
    detail: dict[str, Any] = {"vendor_status": name}
    for key, label in (("reason", "reason"), ("link", "url"), ("tag", "tag")):
        if event.get(key) is not None:
            detail[label] = event[key]
    return detail


def _occurred_at(event: Mapping[str, Any]) -> float | None:
    epoch = event.get("ts_epoch")
    if isinstance(epoch, (int, float)) and not isinstance(epoch, bool):
        return epoch / 1000.0 if epoch > 1e11 else float(epoch)
    for key in ("ts_event", "ts"):
        value = event.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


def _e164(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        return None
    digits = value.strip()
    return digits if digits.startswith("+") else f"+{digits}"


def _contact(address: str, name: str | None) -> dict[str, str]:
    return {"email": address, "name": name} if name else {"email": address}


def _no_sender(instance: str, setting: str, channel: str) -> PermanentDeliveryError:
    return PermanentDeliveryError(
        f"no sender: set `{setting}` on provider instance {instance!r} or an {channel} sender in the tenant's policy", code="sender_missing"
    )


def _networks(ranges: Iterable[str]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    networks = []
    for cidr in ranges:
        try:
            networks.append(ipaddress.ip_network(cidr, strict=False))
        except ValueError as err:
            raise ValueError(f"allowed_source_ranges: {cidr!r} is not an IP range ({err})") from None
    return tuple(networks)


def _ip(remote: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not remote:
        return None
    try:
        address = ipaddress.ip_address(remote.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _offered_token(query: Mapping[str, str], authorization: str) -> str:
    if authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return query.get("token", "")


def _basic_auth_matches(authorization: str, username: str, password: str) -> bool:
    if authorization[:6].lower() != "basic ":
        return False
    try:
        decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return False
    offered_user, _, offered_password = decoded.partition(":")
    user_ok = same_secret(username, offered_user)
    password_ok = same_secret(password, offered_password)
    return user_ok and password_ok


def _refusal(response: aiohttp.ClientResponse, answer: Mapping[str, Any]) -> DeliveryError:
    vendor_code = answer.get("code") if isinstance(answer.get("code"), str) else None
    message = answer.get("message") if isinstance(answer.get("message"), str) else None
    code = vendor_code
    if code == "invalid_parameter" and message is not None and _RECIPIENT_PROBLEM.search(message):
        code = INVALID_RECIPIENT
    if response.status == 429 and code not in ERRORS:
        code = RATE_LIMITED
    retry_after = response.headers.get("Retry-After") or response.headers.get("x-sib-ratelimit-reset")
    error = failure(ERRORS, code, message, http_status=response.status, retry_after=retry_after_seconds(retry_after), vendor=VENDOR)
    if vendor_code is None:  # a key of our own picked the row: record only what Brevo said
        error.detail.pop("vendor_code", None)
    else:
        error.detail["vendor_code"] = vendor_code
    return error
