"""Telegram: messages through a bot of the Bot API, replies and opt-outs from its webhook.

Sending is ``POST {base_url}/bot{token}/sendMessage`` with ``{chat_id, text, parse_mode?}``; the
chat id is the recipient's ``telegram_chat_id``. Telegram has no delivery receipts: ``ok: true``
means the message is in the chat, so the plugin reports ``delivered`` through the context as
soon as the answer is in. The provider message id is ``{chat_id}:{message_id}`` (a message id
is only unique within its chat), the same form replies name in ``in_reply_to``.

Vendor quirks handled here:

- **The bot token is in the URL path.** No URL ever reaches an error message, a log line or a
  detail: network failures are worded by :func:`~gateway.provider_kit.vendor_call` without the
  URL, and the aiohttp exception they wrap (whose text may hold the URL) is dropped from the
  chain before the error leaves this module.
- **Errors are described, not coded.** ``error_code`` is just the HTTP status; the
  ``description`` ("Forbidden: bot was blocked by the user", "Bad Request: chat not found") is
  what tells them apart, so :data:`DESCRIPTIONS` maps fragments of it to the rows of
  :data:`ERRORS`. A 403 is about the chat (blocked, kicked, deactivated), never the token: only
  401 (and 404, what Telegram answers for a malformed token) is a credentials failure.
- **Blocked bots.** 403 "bot was blocked by the user" (and "bot was kicked from the … chat") is
  the recipient's opt-out: permanent, code ``opted_out``, which the gateway records. The same
  signal arrives by webhook as a ``my_chat_member`` update with status ``kicked``.
- **Flood control**: 429 with ``parameters.retry_after`` (seconds) is transient and retried no
  sooner than that. **Group upgrades**: ``parameters.migrate_to_chat_id`` means the group became
  a supergroup with a new id; permanent, code ``chat_migrated``, the new id in the detail (the
  recipient's ``telegram_chat_id`` must be updated).
- **No idempotency key.** The Bot API has none: a send whose answer is lost (a timeout after
  Telegram took it) is retried and may show twice. Nothing a client can do prevents it.
- **A bot speaks only as itself**: the tenant's ``senders:`` entry cannot change who a message is
  from, so ``message.sender`` is not used.
- **Webhook authentication is a shared token, not a signature.** ``setWebhook(url,
  secret_token=…)`` makes Telegram send ``X-Telegram-Bot-Api-Secret-Token`` on every update; it
  is compared in constant time with ``webhook_secret``. Nothing covers the body or a time, so a
  re-serialised or replayed body cannot be told from a genuine one by its authentication;
  replays of a recent ``update_id`` (Telegram redelivers updates it got no 2xx for) are dropped.
- **Opt-out commands.** In a private chat, ``/stop`` opts the chat out and ``/start`` (the
  button every user presses to open a bot, and to come back after blocking it) opts it back in,
  through ``detail["opt_out"]``. In groups they are left alone: one member must not mute a group
  for everyone. ``my_chat_member`` updates say when the bot was blocked (``kicked``) or removed
  from a group (``left``), an :class:`~gateway.OptOut` of the chat, and when it was unblocked or
  re-added, which opts it back in.

Vendor documentation:

- https://core.telegram.org/bots/api#making-requests (the response object: ok, result,
  description, error_code, parameters)
- https://core.telegram.org/bots/api#sendmessage (text: 1-4096 characters after entities parsing)
- https://core.telegram.org/bots/api#formatting-options (parse_mode HTML, MarkdownV2)
- https://core.telegram.org/bots/api#responseparameters (migrate_to_chat_id, retry_after)
- https://core.telegram.org/bots/api#setwebhook (secret_token, X-Telegram-Bot-Api-Secret-Token)
- https://core.telegram.org/bots/api#update, #message, #chatmemberupdated, #chatmember
- https://core.telegram.org/bots/api#getme
- https://core.telegram.org/bots/faq#my-bot-is-hitting-limits-how-do-i-avoid-this (about 30
  messages per second overall, one per second per chat)
- https://core.telegram.org/bots/features#global-commands (/start)
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, ClassVar, Final

from gateway import (
    OPTED_OUT,
    CredentialsRejectedError,
    DeliveryError,
    InboundReply,
    InboundRequest,
    OptOut,
    OutboundMessage,
    PermanentDeliveryError,
    Provider,
    ProviderContext,
    ProviderLimits,
    SendReceipt,
    StatusUpdate,
    TransientDeliveryError,
    WebhookVerificationError,
)
from gateway.provider_kit import TIMEOUT_PROPERTY, VendorError, failure, json_object, retry_after_seconds, same_secret, timeout_of, vendor_call

VENDOR: Final = "Telegram"
CHANNEL: Final = "telegram"
DEFAULT_BASE_URL: Final = "https://api.telegram.org"
SECRET_HEADER: Final = "X-Telegram-Bot-Api-Secret-Token"
MAX_TEXT: Final = 4096
PARSE_MODES: Final = ("none", "HTML", "MarkdownV2")
SEEN_UPDATES: Final = 2048
"""How many recent ``update_id``s an instance remembers to drop Telegram's redeliveries."""

ERRORS: Final[Mapping[str, VendorError]] = {
    "bot_blocked": VendorError(transient=False, meaning="the user blocked the bot", code=OPTED_OUT),
    "bot_kicked": VendorError(transient=False, meaning="the bot was removed from the group or channel", code=OPTED_OUT),
    "user_deactivated": VendorError(transient=False, meaning="the user's account is deleted", code="invalid_recipient"),
    "not_started": VendorError(transient=False, meaning="the user never started a chat with the bot", code="invalid_recipient"),
    "bot_recipient": VendorError(transient=False, meaning="bots cannot message other bots", code="invalid_recipient"),
    "not_member": VendorError(transient=False, meaning="the bot is not a member of the chat", code="invalid_recipient"),
    "chat_not_found": VendorError(transient=False, meaning="no chat with this id that the bot can reach", code="invalid_recipient"),
    "chat_migrated": VendorError(transient=False, meaning="the group is now a supergroup with a new id (see detail)", code="chat_migrated"),
    "message_too_long": VendorError(transient=False, meaning="the text is longer than 4096 characters", code="body_too_long"),
    "message_empty": VendorError(transient=False, meaning="the text is empty", code="empty_body"),
    "bad_markup": VendorError(transient=False, meaning="the text is not valid in the configured parse_mode", code="invalid_content"),
    "forbidden": VendorError(transient=False, meaning="the bot may not write to this chat", code="forbidden"),
    "unauthorized": VendorError(transient=False, meaning="the bot token was refused (revoked or wrong): check bot_token", credentials=True),
    "not_found": VendorError(transient=False, meaning="no bot has this token (Telegram answers 404): check bot_token", credentials=True),
    "flood": VendorError(transient=True, meaning="flood control: too many messages", code="rate_limited"),
}
"""Telegram's refusals, under names of ours: the Bot API distinguishes them only by description."""

DESCRIPTIONS: Final[tuple[tuple[str, str], ...]] = (
    ("bot was blocked by the user", "bot_blocked"),
    ("bot was kicked from", "bot_kicked"),
    ("user is deactivated", "user_deactivated"),
    ("bot can't initiate conversation", "not_started"),
    ("bot can't send messages to bots", "bot_recipient"),
    ("bot is not a member", "not_member"),
    ("chat not found", "chat_not_found"),
    ("peer_id_invalid", "chat_not_found"),
    ("chat_id is empty", "chat_not_found"),
    ("group chat was upgraded to a supergroup", "chat_migrated"),
    ("message is too long", "message_too_long"),
    ("message text is empty", "message_empty"),
    ("can't parse entities", "bad_markup"),
    ("too many requests", "flood"),
)
"""Lower-case fragments of ``description``, first match wins; then :data:`BY_ERROR_CODE`."""

BY_ERROR_CODE: Final[Mapping[int, str]] = {401: "unauthorized", 403: "forbidden", 404: "not_found", 429: "flood"}
LEFT_STATUSES: Final = frozenset({"kicked", "left"})
BACK_STATUSES: Final = frozenset({"member", "administrator", "creator"})
_COMMAND: Final = re.compile(r"^/(start|stop)(?:@[A-Za-z0-9_]+)?(?:\s|$)", re.IGNORECASE)
_NUMERIC_CHAT: Final = re.compile(r"-?[0-9]+")  # fullmatch: int() would also take "١٢" or "12\n"


class TelegramProvider(Provider):
    channels = frozenset({CHANNEL})
    config_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "required": ["bot_token"],
        "properties": {
            "bot_token": {
                "type": "string",
                "pattern": "^[0-9]+:[A-Za-z0-9_-]+$",
                "x-secret": True,
                "description": "The bot's token from @BotFather, such as 123456:ABC-DEF… (it goes in the URL path).",
            },
            "webhook_secret": {
                "type": "string",
                "pattern": "^[A-Za-z0-9_-]{1,256}$",
                "x-secret": True,
                "description": "The secret_token given to setWebhook; without it the instance accepts no updates.",
            },
            "parse_mode": {"enum": list(PARSE_MODES), "default": "none", "description": "How Telegram reads markup in the text."},
            "base_url": {"type": "string", "pattern": "^https?://[^/?#\\s]+(/[^?#\\s]*)?$", "default": DEFAULT_BASE_URL},
            "timeout_seconds": TIMEOUT_PROPERTY,
        },
        "additionalProperties": False,
    }
    # receipts: no vendor receipts, but ok means delivered and the plugin reports it at once.
    limits = ProviderLimits(max_body_chars=MAX_TEXT, rate_per_second=30, receipts=True, replies=True, idempotency=False)

    def __init__(self, name: str, config: Mapping[str, Any], context: ProviderContext) -> None:
        super().__init__(name, config, context)
        self._seen: OrderedDict[int, None] = OrderedDict()

    # -- sending ------------------------------------------------------------------------------

    async def send(self, message: OutboundMessage) -> SendReceipt:
        text = message.body or ""
        if not text.strip():
            raise PermanentDeliveryError("Telegram messages need a text body; this one has none", code="empty_body")
        payload: dict[str, Any] = {"chat_id": _chat_id(message.to), "text": text}
        parse_mode = self.config.get("parse_mode", "none")
        if parse_mode != "none":
            payload["parse_mode"] = parse_mode
        status, retry_after, answer = await self._call("sendMessage", payload)
        if not (200 <= status < 300 and answer.get("ok") is True):
            raise _refusal(status, retry_after, answer)
        chat_id, message_id, date = _sent(answer.get("result"))
        provider_id = f"{chat_id}:{message_id}"
        occurred = float(date) if date is not None else self.context.clock.now()
        # Telegram has no receipts: ok means the message is in the chat.
        self.context.report([StatusUpdate(provider_id, "delivered", occurred_at=occurred, detail={"vendor_status": "ok"})])
        return SendReceipt(provider_message_id=provider_id, detail={"chat_id": chat_id, "message_id": message_id})

    async def check_credentials(self) -> str | None:
        """``getMe``: the bot's username, as Telegram knows it."""
        status, retry_after, answer = await self._call("getMe", None)
        if not (200 <= status < 300 and answer.get("ok") is True):
            raise _refusal(status, retry_after, answer)
        bot = answer.get("result")
        if not isinstance(bot, dict):
            raise TransientDeliveryError("Telegram answered getMe without a bot", code="unexpected_answer")
        return f"bot @{bot.get('username')} (id {bot.get('id')})"

    async def _call(self, method: str, payload: Mapping[str, Any] | None) -> tuple[int, float | None, dict[str, Any]]:
        """One Bot API call: (HTTP status, Retry-After, the JSON answer or {}).

        Every failure leaves this method worded without the URL and with no cause attached:
        the exception aiohttp raised may quote the URL, and with it the token.
        """
        url = f"{self.config.get('base_url', DEFAULT_BASE_URL).rstrip('/')}/bot{self.config['bot_token']}/{method}"
        try:
            async with vendor_call(
                self.context.session, "POST", url, timeout=timeout_of(self.config), vendor=VENDOR,
                **({"json": dict(payload)} if payload is not None else {}),
            ) as response:
                status = response.status
                retry_after = retry_after_seconds(response.headers.get("Retry-After"))
                raw = await response.read()
        except DeliveryError as err:
            raise err from None
        except Exception as err:  # noqa: BLE001 - anything else (a malformed URL) may quote the token
            raise TransientDeliveryError(f"could not call {VENDOR}: {type(err).__name__}", code="unreachable") from None
        return status, retry_after, json_object(raw)

    # -- webhooks -----------------------------------------------------------------------------

    async def verify_webhook(self, request: InboundRequest) -> None:
        expected = self.config.get("webhook_secret")
        if not expected:
            raise WebhookVerificationError("this instance has no webhook_secret, so it accepts no updates")
        offered = request.headers.get(SECRET_HEADER)
        if offered is None:
            raise WebhookVerificationError(f"the {SECRET_HEADER} header is missing")
        if not same_secret(expected, offered):
            raise WebhookVerificationError(f"the {SECRET_HEADER} header does not match this instance's webhook_secret")

    async def parse_webhook(self, request: InboundRequest) -> list[InboundReply | OptOut]:
        update = json.loads(request.body)
        if not isinstance(update, dict):
            raise ValueError("a Telegram update is a JSON object")
        update_id = update.get("update_id")
        if isinstance(update_id, int):
            if update_id in self._seen:
                return []  # Telegram redelivered an update already taken
            self._seen[update_id] = None
            while len(self._seen) > SEEN_UPDATES:
                self._seen.popitem(last=False)
        message = update.get("message")
        if isinstance(message, dict):
            return list(_reply(update_id, message))
        member = update.get("my_chat_member")
        if isinstance(member, dict):
            return list(_membership(member))
        return []  # edited messages, channel posts, callback queries: nothing Tidings keeps


def _chat_id(to: str) -> int | str:
    """A numeric chat id as the integer Telegram uses; ``@channelusername`` as it is."""
    return int(to) if _NUMERIC_CHAT.fullmatch(to) else to


def _sent(result: Any) -> tuple[int, int, int | None]:
    """(chat id, message id, date) of the Message Telegram returned."""
    chat = result.get("chat") if isinstance(result, dict) else None
    chat_id = chat.get("id") if isinstance(chat, dict) else None
    message_id = result.get("message_id") if isinstance(result, dict) else None
    if not isinstance(chat_id, int) or not isinstance(message_id, int):
        # It was accepted: retrying could show it twice, so this is not worth another attempt.
        raise PermanentDeliveryError("Telegram accepted the message but answered without its chat and message id", code="unexpected_answer")
    date = result.get("date")
    return chat_id, message_id, date if isinstance(date, int) else None


def vendor_code(error_code: int | None, description: str, parameters: Mapping[str, Any]) -> str | None:
    """The :data:`ERRORS` row for a refusal: by ``migrate_to_chat_id``, the description, then the code."""
    if parameters.get("migrate_to_chat_id") is not None:
        return "chat_migrated"
    lowered = description.lower()
    for fragment, code in DESCRIPTIONS:
        if fragment in lowered:
            return code
    return BY_ERROR_CODE.get(error_code) if error_code is not None else None


def _refusal(status: int, retry_after: float | None, answer: Mapping[str, Any]) -> DeliveryError:
    """The delivery error for an answer without ``ok: true``."""
    error_code = answer.get("error_code")
    error_code = error_code if isinstance(error_code, int) else (status if status >= 300 else None)
    description = answer.get("description")
    description = description if isinstance(description, str) else ""
    parameters = answer.get("parameters")
    parameters = parameters if isinstance(parameters, dict) else {}
    if error_code is None:
        # HTTP 2xx without ok: true is not an answer the Bot API gives.
        return TransientDeliveryError(f"{VENDOR} answered HTTP {status} without a result", code="unexpected_answer")
    code = vendor_code(error_code, description, parameters)
    wait = retry_after_seconds(parameters.get("retry_after"))
    new_chat = parameters.get("migrate_to_chat_id")
    reason = (description or f"HTTP {status}") + (f" (its new chat id is {new_chat})" if new_chat is not None else "")
    error = failure(ERRORS, code, reason, http_status=error_code, retry_after=wait if wait is not None else retry_after, vendor=VENDOR)
    if description:
        error.detail["description"] = description
    if new_chat is not None:
        error.detail["migrate_to_chat_id"] = new_chat
    if isinstance(error, CredentialsRejectedError):
        error.detail.pop("description", None)  # "Unauthorized" / "Not Found": nothing to add
    return error


def _reply(update_id: Any, message: Mapping[str, Any]) -> list[InboundReply]:
    chat = message.get("chat")
    chat_id = chat.get("id") if isinstance(chat, dict) else None
    text = message.get("text", message.get("caption"))
    if not isinstance(chat_id, int) or not isinstance(text, str):
        return []  # service messages (members joining, pins) and media without a caption
    chat_type = chat.get("type") if isinstance(chat, dict) else None
    sender = message.get("from")
    detail: dict[str, Any] = {"update_id": update_id, "chat_type": chat_type}
    if isinstance(sender, dict):
        detail["from_id"] = sender.get("id")
    command = _COMMAND.match(text.strip())
    if command is not None and chat_type == "private":
        detail["opt_out"] = command.group(1).lower() == "stop"
        detail["command"] = f"/{command.group(1).lower()}"
    answered = message.get("reply_to_message")
    answered_id = answered.get("message_id") if isinstance(answered, dict) else None
    message_id = message.get("message_id")
    date = message.get("date")
    return [
        InboundReply(
            sender=str(chat_id), body=text, channel=CHANNEL,
            in_reply_to=f"{chat_id}:{answered_id}" if isinstance(answered_id, int) else None,
            provider_message_id=f"{chat_id}:{message_id}" if isinstance(message_id, int) else None,
            occurred_at=float(date) if isinstance(date, int) else None,
            detail=detail,
        )
    ]


def _membership(member: Mapping[str, Any]) -> list[OptOut]:
    """The bot's own membership changed: blocked or removed (opt-out), unblocked or re-added (opt-in)."""
    chat = member.get("chat")
    chat_id = chat.get("id") if isinstance(chat, dict) else None
    new = _status(member.get("new_chat_member"))
    old = _status(member.get("old_chat_member"))
    if not isinstance(chat_id, int):
        return []
    if new in LEFT_STATUSES:
        opt_out = True
    elif new in BACK_STATUSES and old in LEFT_STATUSES:
        opt_out = False
    else:
        return []
    date = member.get("date")
    reason = f"the bot's membership went from {old or 'unknown'} to {new}"
    return [OptOut(CHANNEL, str(chat_id), opted_out=opt_out, reason=reason, occurred_at=float(date) if isinstance(date, int) else None)]


def _status(chat_member: Any) -> str | None:
    status = chat_member.get("status") if isinstance(chat_member, dict) else None
    return status if isinstance(status, str) else None


