"""Slack messages from a bot: ``chat.postMessage``, delivered on ``ok``, replies through the Events API.

Vendor docs:

- chat.postMessage: https://docs.slack.dev/reference/methods/chat.postMessage
  (errors listed there; older copy: https://api.slack.com/methods/chat.postMessage)
- auth.test (the credentials check): https://docs.slack.dev/reference/methods/auth.test
- Web API errors, HTTP 200 with ``ok: false``: https://docs.slack.dev/apis/web-api/#responses
- Rate limits, HTTP 429 and ``Retry-After``: https://docs.slack.dev/apis/web-api/rate-limits
- Verifying requests (``X-Slack-Signature``): https://docs.slack.dev/authentication/verifying-requests-from-slack
- Events API, ``url_verification`` and ``event_callback``: https://docs.slack.dev/apis/events-api/
  and the message event: https://docs.slack.dev/reference/events/message
- Block Kit: https://docs.slack.dev/block-kit/

What it does and the quirks it handles:

- ``POST {base_url}/api/chat.postMessage`` with ``Authorization: Bearer <bot token>`` and a
  JSON body ``{channel, text, blocks?, username?}``. ``channel`` is the recipient's address
  (``slack_user_id`` or ``slack_channel``): a user id posts to the app's DM with that user.
- Blocks: the notification's ``metadata["slack_blocks"]`` — a JSON array of Block Kit blocks,
  given as a JSON string (API metadata values are scalars) or a list — is sent as ``blocks``;
  the rendered body is always sent as ``text``, the fallback Slack shows in notifications and
  to clients that cannot render blocks. Blocks that are not a JSON array are refused before
  sending (permanent, ``invalid_blocks``).
- A tenant's sender (``senders: slack: {from: …, name: …}``) or the instance's ``username``
  sets the bot's display name; Slack honours it only with the ``chat:write.customize`` scope.
- Slack answers **HTTP 200** with ``{"ok": false, "error": "<code>"}`` on failure; the error
  string decides (see :data:`ERRORS`). Rate limiting is HTTP 429 with ``Retry-After``
  (seconds), honoured; other 5xx are transient.
- ``ok: true`` means Slack posted the message: there are no delivery receipts, so the plugin
  reports ``delivered`` itself right away (through ``context.report``). The provider message
  id is ``{channel}:{ts}`` with the channel Slack answers (the DM's ``D…`` id for a user).
- Slack has **no idempotency key**: a retry after a timeout may post twice.
- Events API requests are signed ``X-Slack-Signature: v0=<hex HMAC-SHA256(signing secret,
  "v0:" + X-Slack-Request-Timestamp + ":" + raw body)>``; verified over the exact bytes, in
  constant time, refusing timestamps more than five minutes from the gateway's clock.
- ``url_verification``: Slack checks the Request URL with a signed POST whose answer must be
  the ``challenge``; :meth:`SlackProvider.answer_webhook` gives the gateway that answer once the
  request has verified.
- ``event_callback`` with a ``message`` event from a person (no ``bot_id``; plain, threaded
  broadcast and file-share messages only, not edits or deletions) becomes a reply; in a thread
  its ``in_reply_to`` is ``{channel}:{thread_ts}``, the id of the message that opened it.
- ``check_credentials``: ``POST {base_url}/api/auth.test`` → the workspace and the bot user.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Final

import aiohttp
import orjson

from gateway import (
    DeliveryError,
    InboundReply,
    InboundRequest,
    InboundResponse,
    OutboundMessage,
    PermanentDeliveryError,
    Provider,
    ProviderLimits,
    SendReceipt,
    StatusUpdate,
    TransientDeliveryError,
    WebhookVerificationError,
)
from gateway.provider_kit import TIMEOUT_PROPERTY, VendorError, failure, json_answer, retry_after_seconds, same_secret, timeout_of, vendor_call

VENDOR: Final = "Slack"
DEFAULT_BASE_URL: Final = "https://slack.com"
SIGNATURE_HEADER: Final = "x-slack-signature"
TIMESTAMP_HEADER: Final = "x-slack-request-timestamp"
SIGNATURE_VERSION: Final = "v0"
SIGNATURE_TOLERANCE: Final = 300.0
BLOCKS_KEY: Final = "slack_blocks"
REPLY_SUBTYPES: Final = frozenset({None, "thread_broadcast", "file_share"})
"""Message event subtypes a person's new message has; edits, deletions, joins and the like are skipped."""

ERRORS: Final[Mapping[str, VendorError]] = {
    # Where the message was going.
    "channel_not_found": VendorError(transient=False, meaning="no such channel, or the bot cannot see it", code="invalid_recipient"),
    "not_in_channel": VendorError(transient=False, meaning="the bot is not a member of the channel", code="invalid_recipient"),
    "is_archived": VendorError(transient=False, meaning="the channel is archived", code="invalid_recipient"),
    "user_not_found": VendorError(transient=False, meaning="no such user", code="invalid_recipient"),
    "cannot_dm_bot": VendorError(transient=False, meaning="the recipient is a bot, which cannot be sent a DM", code="invalid_recipient"),
    "messages_tab_disabled": VendorError(transient=False, meaning="the app's Messages tab is off, so users cannot be DMed", code="invalid_recipient"),
    "restricted_action": VendorError(transient=False, meaning="a workspace preference prevents the bot from posting"),
    "restricted_action_read_only_channel": VendorError(transient=False, meaning="the channel is read-only"),
    "restricted_action_thread_only_channel": VendorError(transient=False, meaning="the channel takes thread replies only"),
    "ekm_access_denied": VendorError(transient=False, meaning="administrators suspended posting (EKM)"),
    "team_access_not_granted": VendorError(transient=False, meaning="the token has no access to that workspace"),
    # What the message was.
    "msg_too_long": VendorError(transient=False, meaning="message text is too long"),
    "msg_blocks_too_long": VendorError(transient=False, meaning="the blocks are too long"),
    "no_text": VendorError(transient=False, meaning="no message text"),
    "invalid_blocks": VendorError(transient=False, meaning="the blocks are not valid Block Kit", code="invalid_blocks"),
    "invalid_blocks_format": VendorError(transient=False, meaning="blocks must be a JSON array of objects", code="invalid_blocks"),
    "too_many_attachments": VendorError(transient=False, meaning="too many attachments"),
    "invalid_arguments": VendorError(transient=False, meaning="invalid arguments"),
    "invalid_arg_name": VendorError(transient=False, meaning="an argument name is invalid"),
    "invalid_form_data": VendorError(transient=False, meaning="the request body could not be read"),
    "invalid_post_type": VendorError(transient=False, meaning="unsupported Content-Type"),
    "missing_post_type": VendorError(transient=False, meaning="no Content-Type"),
    "invalid_charset": VendorError(transient=False, meaning="unsupported charset"),
    "as_user_not_supported": VendorError(transient=False, meaning="as_user does not work with this app type"),
    # The token: every send through this instance will fail.
    "not_authed": VendorError(transient=False, meaning="no token was sent", credentials=True),
    "invalid_auth": VendorError(transient=False, meaning="the bot token is not valid (or the IP is not allowed)", credentials=True),
    "account_inactive": VendorError(transient=False, meaning="the token belongs to a deleted user or workspace", credentials=True),
    "token_revoked": VendorError(transient=False, meaning="the token was revoked or the app uninstalled", credentials=True),
    "token_expired": VendorError(transient=False, meaning="the token has expired (token rotation is on)", credentials=True),
    "missing_scope": VendorError(transient=False, meaning="the token lacks the chat:write scope", credentials=True),
    "no_permission": VendorError(transient=False, meaning="the token lacks the permission to post here", credentials=True),
    "not_allowed_token_type": VendorError(transient=False, meaning="this method does not take this token type (use a bot token)", credentials=True),
    "access_denied": VendorError(transient=False, meaning="access to the resource was denied", credentials=True),
    "org_login_required": VendorError(transient=False, meaning="the workspace is migrating to an Enterprise org", credentials=True),
    "two_factor_setup_required": VendorError(transient=False, meaning="two-factor setup is required", credentials=True),
    # Slack's side, or throttling: retry later.
    "ratelimited": VendorError(transient=True, meaning="rate limited", code="rate_limited"),
    "rate_limited": VendorError(transient=True, meaning="the app posted too many messages", code="rate_limited"),
    "message_limit_exceeded": VendorError(transient=True, meaning="the workspace's message limit was reached", code="rate_limited"),
    "service_unavailable": VendorError(transient=True, meaning="the service is temporarily unavailable"),
    "internal_error": VendorError(transient=True, meaning="Slack had an internal error"),
    "fatal_error": VendorError(transient=True, meaning="Slack had a fatal error (part of the operation may have succeeded)"),
    "request_timeout": VendorError(transient=True, meaning="Slack got the request body missing or truncated"),
    "team_added_to_org": VendorError(transient=True, meaning="the workspace is being migrated to an Enterprise org"),
}
"""Slack Web API ``error`` strings → what they mean for the delivery."""


class SlackProvider(Provider):
    """Slack messages posted by a bot user (``xoxb-`` token) with ``chat:write``."""

    channels = frozenset({"slack"})
    config_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "required": ["bot_token"],
        "properties": {
            "bot_token": {
                "type": "string", "pattern": "^xox", "x-secret": True,
                "description": "The app's bot token (xoxb-…), with the chat:write scope.",
            },
            "signing_secret": {
                "type": "string", "minLength": 1, "x-secret": True,
                "description": "The app's Signing Secret; Events API requests are verified with it (none: every callback is refused).",
            },
            "username": {
                "type": "string", "minLength": 1,
                "description": "Display name for the bot's messages unless the tenant sets a sender (needs chat:write.customize).",
            },
            "base_url": {"type": "string", "pattern": "^https?://", "default": DEFAULT_BASE_URL},
            "timeout_seconds": TIMEOUT_PROPERTY,
        },
        "additionalProperties": False,
    }
    # Slack truncates text past 40,000 characters. chat.postMessage is limited to about one
    # message per second per channel (bursts allowed): a per-channel limit, so none is declared.
    limits = ProviderLimits(max_body_chars=40000, receipts=True, replies=True, idempotency=False)

    async def send(self, message: OutboundMessage) -> SendReceipt:
        answer = await self._call("chat.postMessage", payload_for(message, self.config.get("username")))
        channel, ts = answer.get("channel"), answer.get("ts")
        if not isinstance(channel, str) or not isinstance(ts, str):
            raise TransientDeliveryError(f"{VENDOR} answered ok without a channel and ts", code="no_message_id")
        message_id = f"{channel}:{ts}"
        detail: dict[str, Any] = {"channel": channel, "ts": ts}
        if isinstance(answer.get("warning"), str):
            detail["warning"] = answer["warning"]
        # No receipts from Slack: posted is delivered.
        self.context.report([StatusUpdate(message_id, "delivered", occurred_at=_seconds(ts), detail={"vendor_status": "ok"})])
        return SendReceipt(provider_message_id=message_id, detail=detail)

    async def check_credentials(self) -> str | None:
        answer = await self._call("auth.test", None)
        return (
            f"Slack workspace {answer.get('team', '?')} ({answer.get('team_id', '?')}), "
            f"bot user {answer.get('user', '?')} ({answer.get('user_id', '?')})"
        )

    async def verify_webhook(self, request: InboundRequest) -> None:
        secret = self.config.get("signing_secret")
        if not secret:
            raise WebhookVerificationError("no signing_secret is configured for this instance, so no callback can be verified")
        stamp, offered = request.headers.get(TIMESTAMP_HEADER, ""), request.headers.get(SIGNATURE_HEADER, "")
        if not stamp or not offered:
            raise WebhookVerificationError("the X-Slack-Request-Timestamp or X-Slack-Signature header is missing")
        try:
            timestamp = int(stamp)
        except ValueError:
            raise WebhookVerificationError("the X-Slack-Request-Timestamp header is not a unix time") from None
        if abs(self.context.clock.now() - timestamp) > SIGNATURE_TOLERANCE:
            raise WebhookVerificationError("the request timestamp is more than five minutes off (a replay?)")
        if not same_secret(sign(secret, stamp, request.body), offered):
            raise WebhookVerificationError("the X-Slack-Signature signature does not match the body")

    async def parse_webhook(self, request: InboundRequest) -> list[StatusUpdate | InboundReply]:
        payload = orjson.loads(request.body)
        if not isinstance(payload, dict) or payload.get("type") != "event_callback":
            return []  # url_verification (answered by answer_webhook), app_rate_limited notices
        reply = inbound_reply(payload)
        return [reply] if reply is not None else []

    async def answer_webhook(self, request: InboundRequest) -> InboundResponse | None:
        """The body a verified POST must be answered with: Slack's ``url_verification`` challenge.

        None for every other callback (the gateway's usual acknowledgement will do).
        """
        try:
            payload = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(payload, dict) or payload.get("type") != "url_verification" or not isinstance(payload.get("challenge"), str):
            return None
        return InboundResponse(status=200, body=payload["challenge"].encode(), content_type="text/plain")

    async def _call(self, method: str, body: Mapping[str, Any] | None) -> dict[str, Any]:
        """POST a Web API method (a JSON body, or an empty form); its answer when ``ok``, else the classified failure."""
        url = f"{str(self.config.get('base_url', DEFAULT_BASE_URL)).rstrip('/')}/api/{method}"
        content_type = "application/json; charset=utf-8" if body is not None else "application/x-www-form-urlencoded"
        headers = {"Authorization": f"Bearer {self.config['bot_token']}", "Content-Type": content_type}
        data = orjson.dumps(body) if body is not None else b""
        async with vendor_call(
            self.context.session, "POST", url, timeout=timeout_of(self.config), vendor=VENDOR, data=data, headers=headers
        ) as response:
            answer = await json_answer(response)
            if response.status < 300 and answer.get("ok") is True:
                return answer
            raise _refusal(response, answer)


def payload_for(message: OutboundMessage, username: str | None = None) -> dict[str, Any]:
    """The chat.postMessage body for ``message``."""
    channel = message.to or message.recipient.get("slack_channel") or message.recipient.get("slack_user_id")
    payload: dict[str, Any] = {"channel": channel, "text": message.body or ""}
    blocks = _blocks(message.metadata.get(BLOCKS_KEY))
    if blocks is not None:
        payload["blocks"] = blocks
    name = (message.sender.name or message.sender.address) if message.sender is not None else username
    if name:
        payload["username"] = name
    return payload


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Slack-Signature`` value for ``body`` sent at ``timestamp``."""
    base = f"{SIGNATURE_VERSION}:{timestamp}:".encode() + body
    return f"{SIGNATURE_VERSION}=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def inbound_reply(callback: Mapping[str, Any]) -> InboundReply | None:
    """An ``event_callback``'s message event as a reply; None for bots, edits and other events."""
    event = callback.get("event")
    if not isinstance(event, Mapping) or event.get("type") != "message" or event.get("subtype") not in REPLY_SUBTYPES:
        return None
    user, channel, ts = event.get("user"), event.get("channel"), event.get("ts")
    if event.get("bot_id") or not isinstance(user, str) or not isinstance(channel, str) or not isinstance(ts, str):
        return None
    thread = event.get("thread_ts")
    in_reply_to = f"{channel}:{thread}" if isinstance(thread, str) and thread != ts else None
    detail = {key: callback[key] for key in ("team_id", "event_id") if isinstance(callback.get(key), str)}
    detail |= {"channel": channel} | ({"channel_type": event["channel_type"]} if isinstance(event.get("channel_type"), str) else {})
    return InboundReply(
        sender=user, body=str(event.get("text") or ""), channel="slack", in_reply_to=in_reply_to,
        provider_message_id=f"{channel}:{ts}", occurred_at=_seconds(ts), detail=detail,
    )


def _blocks(value: Any) -> list[Any] | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise PermanentDeliveryError(f"metadata.{BLOCKS_KEY} is not valid JSON", code="invalid_blocks") from None
    if not isinstance(value, Sequence) or isinstance(value, (str, bytes)) or not all(isinstance(block, Mapping) for block in value):
        raise PermanentDeliveryError(f"metadata.{BLOCKS_KEY} must be a JSON array of Block Kit blocks", code="invalid_blocks")
    return list(value)


def _seconds(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _refusal(response: aiohttp.ClientResponse, answer: Mapping[str, Any]) -> DeliveryError:
    error = answer.get("error") if isinstance(answer.get("error"), str) else None
    found = failure(
        ERRORS, error, error or f"HTTP {response.status}", http_status=response.status,
        retry_after=retry_after_seconds(response.headers.get("Retry-After")), vendor=VENDOR,
    )
    metadata = answer.get("response_metadata")
    messages = metadata.get("messages") if isinstance(metadata, Mapping) else None
    if isinstance(messages, list) and messages:
        found.detail["messages"] = [str(text) for text in messages[:5]]
    if isinstance(answer.get("needed"), str):
        found.detail["needed_scope"] = answer["needed"]
    return found
