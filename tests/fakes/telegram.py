"""A fake Telegram Bot API on loopback, and the telegram plugin's conformance kit.

It answers ``POST /bot<token>/<method>`` the way api.telegram.org does, in the Bot API's own
response object (``{"ok": true, "result": …}`` or ``{"ok": false, "error_code", "description",
"parameters"?}``):

- a token that is not this bot's gets 401 ``Unauthorized``; a path that cannot be a token gets
  404 ``Not Found`` (what Telegram answers for a malformed token);
- ``sendMessage`` (JSON or form body) checks ``chat_id``, ``text`` (1-4096 characters) and
  ``parse_mode`` as Telegram does (400 ``Bad Request: …``), refuses chats that blocked the bot
  (:meth:`FakeTelegram.block`: 403), and answers the sent Message with a per-chat message id;
- ``getMe`` answers the bot; ``setWebhook`` records ``url`` and ``secret_token``, after which
  :meth:`FakeTelegram.deliver` POSTs an update there with ``X-Telegram-Bot-Api-Secret-Token``,
  as Telegram does.

``fail_next(fault)`` makes the next ``sendMessage`` fail: the conformance faults ``timeout``
(held until the client gives up or the fake stops), ``5xx`` and ``reject_recipient`` (400 chat
not found), and every answer in :data:`FAULTS`. The update builders (:func:`text_update`,
:func:`member_update`) make updates in the shape Telegram sends them.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
from aiohttp import web

from fakes.loopback import LoopbackFake
from gateway import InboundRequest
from gateway.conformance import FAST_TIMEOUT, Kit, outbound
from plugins.telegram import SECRET_HEADER, TelegramProvider

TOKEN: Final = "7012345678:AAHfakeTokenForTidingsTests_0123456789"
OTHER_TOKEN: Final = "7012345678:AAHsomeoneElsesTokenNotThisBots_98765"
WEBHOOK_SECRET: Final = "tidings-telegram-hook_5eCr3t"
BOT_ID: Final = 7012345678
BOT_USERNAME: Final = "acme_alerts_bot"
CHAT: Final = "412345678"
NEW_SUPERGROUP: Final = -1001987654321
_TOKEN_SHAPE: Final = re.compile(r"^[0-9]+:[A-Za-z0-9_-]+$")
PARSE_MODES: Final = frozenset({"HTML", "MarkdownV2", "Markdown"})

FAULTS: Final[Mapping[str, tuple[int, dict[str, Any] | str]]] = {
    "5xx": (500, {"ok": False, "error_code": 500, "description": "Internal Server Error"}),
    "bad_gateway": (502, "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"),
    "reject_recipient": (400, {"ok": False, "error_code": 400, "description": "Bad Request: chat not found"}),
    "blocked": (403, {"ok": False, "error_code": 403, "description": "Forbidden: bot was blocked by the user"}),
    "kicked": (403, {"ok": False, "error_code": 403, "description": "Forbidden: bot was kicked from the group chat"}),
    "deactivated": (403, {"ok": False, "error_code": 403, "description": "Forbidden: user is deactivated"}),
    "not_started": (403, {"ok": False, "error_code": 403, "description": "Forbidden: bot can't initiate conversation with a user"}),
    "to_bot": (403, {"ok": False, "error_code": 403, "description": "Forbidden: bot can't send messages to bots"}),
    "flood": (429, {"ok": False, "error_code": 429, "description": "Too Many Requests: retry after 35", "parameters": {"retry_after": 35}}),
    "migrated": (400, {"ok": False, "error_code": 400, "description": "Bad Request: group chat was upgraded to a supergroup chat", "parameters": {"migrate_to_chat_id": NEW_SUPERGROUP}}),
    "bad_markup": (400, {"ok": False, "error_code": 400, "description": "Bad Request: can't parse entities: Unsupported start tag \"blink\" at byte offset 0"}),
    "unauthorized": (401, {"ok": False, "error_code": 401, "description": "Unauthorized"}),
}


@dataclass
class ApiCall:
    """One Bot API request as the fake saw it."""

    method: str
    token_ok: bool
    content_type: str
    params: dict[str, Any]
    status: int | None = None


@dataclass
class Chat:
    id: int
    type: str = "private"
    next_message_id: int = 1
    blocked: bool = False


@dataclass
class Delivered:
    """An update the fake POSTed to the webhook, and what the webhook answered."""

    update: dict[str, Any]
    status: int
    answer: Any = field(default=None)


class FakeTelegram(LoopbackFake):
    """The fake Bot API; ``async with FakeTelegram().serving() as telegram`` serves it on a free port."""

    def __init__(self, *, token: str = TOKEN, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.token = token
        self.clock = clock
        self.calls: list[ApiCall] = []
        self.sent: list[dict[str, Any]] = []
        self.chats: dict[int, Chat] = {}
        self.webhook_url: str | None = None
        self.webhook_secret: str | None = None
        self.delivered: list[Delivered] = []
        self._faults: list[str] = []

    # -- what tests call ---------------------------------------------------------------------

    def fail_next(self, fault: str) -> None:
        if fault != "timeout" and fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}")
        self._faults.append(fault)

    def block(self, chat_id: int | str) -> None:
        """The user of this private chat blocks the bot: every send to it is refused with 403."""
        self._chat(int(chat_id)).blocked = True

    def sends(self) -> list[ApiCall]:
        return [call for call in self.calls if call.method == "sendMessage"]

    async def deliver(self, update: dict[str, Any]) -> Delivered:
        """POST ``update`` to the webhook set with setWebhook, with its secret token, as Telegram does."""
        assert self.webhook_url is not None, "no webhook set: call setWebhook first"
        headers = {"Content-Type": "application/json"}
        if self.webhook_secret is not None:
            headers[SECRET_HEADER] = self.webhook_secret
        async with aiohttp.ClientSession() as session, session.post(
            self.webhook_url, data=json.dumps(update).encode(), headers=headers
        ) as response:
            answer = await response.json(content_type=None)
            record = Delivered(update, response.status, answer)
        self.delivered.append(record)
        return record

    # -- serving -----------------------------------------------------------------------------

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/{path:.*}", self._handle)

    # -- the Bot API -------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        match = re.fullmatch(r"bot([^/]*)/([A-Za-z]+)", request.match_info["path"])
        if match is None or not _TOKEN_SHAPE.match(match.group(1)):
            return _error(404, "Not Found")
        params = await _params(request)
        call = ApiCall(match.group(2), match.group(1) == self.token, request.content_type, params)
        self.calls.append(call)
        self._notify()
        response = await self._answer(call)
        call.status = response.status
        self._notify()
        return response

    async def _answer(self, call: ApiCall) -> web.StreamResponse:
        if not call.token_ok:
            return _error(401, "Unauthorized")
        if call.method.lower() == "getme":
            return _ok({"id": BOT_ID, "is_bot": True, "first_name": "Acme Alerts", "username": BOT_USERNAME,
                        "can_join_groups": True, "can_read_all_group_messages": False, "supports_inline_queries": False})
        if call.method.lower() == "setwebhook":
            return self._set_webhook(call.params)
        if call.method.lower() == "sendmessage":
            return await self._send_message(call.params)
        return _error(404, "Not Found")

    def _set_webhook(self, params: Mapping[str, Any]) -> web.Response:
        secret = params.get("secret_token")
        if secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", str(secret)):
            return _error(400, "Bad Request: secret token contains unallowed characters")
        self.webhook_url = str(params.get("url") or "") or None
        self.webhook_secret = str(secret) if secret is not None else None
        return web.json_response({"ok": True, "result": True, "description": "Webhook was set"})

    async def _send_message(self, params: Mapping[str, Any]) -> web.StreamResponse:
        chat_id, text, parse_mode = params.get("chat_id"), params.get("text"), params.get("parse_mode")
        if chat_id in (None, ""):
            return _error(400, "Bad Request: chat_id is empty")
        if not isinstance(text, str) or not text.strip():
            return _error(400, "Bad Request: message text is empty")
        if len(text) > 4096:
            return _error(400, "Bad Request: message is too long")
        if parse_mode not in (None, "") and parse_mode not in PARSE_MODES:
            return _error(400, f"Bad Request: unsupported parse_mode \"{parse_mode}\"")
        try:
            numeric = int(chat_id)
        except (TypeError, ValueError):
            return _error(400, "Bad Request: chat not found")  # an @username no bot can see
        if self._faults:
            fault = self._faults.pop(0)
            if fault == "timeout":
                await self.held()
                return _error(500, "Internal Server Error")  # the fake is stopping
            status, body = FAULTS[fault]
            if isinstance(body, str):
                return web.Response(status=status, text=body, content_type="text/html")
            return web.json_response(body, status=status)
        chat = self._chat(numeric)
        if chat.blocked:
            return web.json_response(FAULTS["blocked"][1], status=403)
        message_id, chat.next_message_id = chat.next_message_id, chat.next_message_id + 1
        message = {
            "message_id": message_id,
            "from": {"id": BOT_ID, "is_bot": True, "first_name": "Acme Alerts", "username": BOT_USERNAME},
            "chat": {"id": chat.id, "first_name": "Ada", "username": "ada_l", "type": chat.type},
            "date": int(self.clock()),
            "text": text,
        }
        self.sent.append(message | {"parse_mode": parse_mode})
        return _ok(message)

    def _chat(self, chat_id: int) -> Chat:
        return self.chats.setdefault(chat_id, Chat(chat_id, "private" if chat_id > 0 else "group"))


async def _params(request: web.Request) -> dict[str, Any]:
    """Parameters as the Bot API takes them: JSON, form-encoded or in the query string."""
    params: dict[str, Any] = dict(request.query)
    if request.content_type == "application/json":
        try:
            body = await request.json()
        except ValueError:
            body = {}
        if isinstance(body, dict):
            params |= body
    elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        params |= dict(await request.post())
    return params


def _ok(result: Any) -> web.Response:
    return web.json_response({"ok": True, "result": result})


def _error(status: int, description: str, parameters: Mapping[str, Any] | None = None) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if parameters:
        body["parameters"] = dict(parameters)
    return web.json_response(body, status=status)


# -- updates as Telegram sends them ----------------------------------------------------------------

_UPDATE_IDS = itertools.count(901_000_001)


_MESSAGE_IDS = itertools.count(77)


def text_update(
    chat_id: int | str, text: str, *, message_id: int | None = None, reply_to: int | None = None, chat_type: str = "private",
    from_id: int | None = None, date: int = 1_800_000_100, update_id: int | None = None,
) -> dict[str, Any]:
    """A ``message`` update: someone wrote ``text`` in the chat (answering our ``reply_to``, if given)."""
    chat_id = int(chat_id)
    user = {"id": from_id or chat_id, "is_bot": False, "first_name": "Ada", "username": "ada_l", "language_code": "en"}
    chat: dict[str, Any] = (
        {"id": chat_id, "first_name": "Ada", "username": "ada_l", "type": "private"}
        if chat_type == "private" else {"id": chat_id, "title": "Ops on call", "type": chat_type}
    )
    message: dict[str, Any] = {"message_id": message_id if message_id is not None else next(_MESSAGE_IDS), "from": user, "chat": chat, "date": date, "text": text}
    if text.startswith("/"):
        message["entities"] = [{"offset": 0, "length": len(text.split()[0]), "type": "bot_command"}]
    if reply_to is not None:
        message["reply_to_message"] = {
            "message_id": reply_to,
            "from": {"id": BOT_ID, "is_bot": True, "first_name": "Acme Alerts", "username": BOT_USERNAME},
            "chat": chat, "date": date - 60, "text": "Your parcel is out for delivery",
        }
    return {"update_id": update_id if update_id is not None else next(_UPDATE_IDS), "message": message}


def member_update(
    chat_id: int | str, new: str, old: str, *, chat_type: str = "private", date: int = 1_800_000_200, update_id: int | None = None
) -> dict[str, Any]:
    """A ``my_chat_member`` update: the bot's own status in the chat went from ``old`` to ``new``.

    In a private chat, ``member → kicked`` is the user blocking the bot, ``kicked → member``
    unblocking it.
    """
    chat_id = int(chat_id)
    user = {"id": chat_id, "is_bot": False, "first_name": "Ada", "username": "ada_l", "language_code": "en"}
    chat: dict[str, Any] = (
        {"id": chat_id, "first_name": "Ada", "username": "ada_l", "type": "private"}
        if chat_type == "private" else {"id": chat_id, "title": "Ops on call", "type": chat_type}
    )
    bot = {"id": BOT_ID, "is_bot": True, "first_name": "Acme Alerts", "username": BOT_USERNAME}

    def member(status: str) -> dict[str, Any]:
        return {"user": bot, "status": status} | ({"until_date": 0} if status == "kicked" else {})

    return {
        "update_id": update_id if update_id is not None else next(_UPDATE_IDS),
        "my_chat_member": {"chat": chat, "from": user, "date": date, "old_chat_member": member(old), "new_chat_member": member(new)},
    }


def webhook_request(update: dict[str, Any], secret: str | None = WEBHOOK_SECRET, *, body: bytes | None = None) -> InboundRequest:
    """An update as the gateway hands it to the plugin (``secret`` None: the header is absent)."""
    headers = {"Content-Type": "application/json", "Host": "tidings.example.com"}
    if secret is not None:
        headers[SECRET_HEADER] = secret
    return InboundRequest(
        method="POST", url="https://tidings.example.com/api/v1/webhooks/telegram", headers=headers, query={},
        body=body if body is not None else json.dumps(update).encode(), remote="149.154.167.220",
    )


KIT = Kit(
    plugin=TelegramProvider,
    serve=lambda: FakeTelegram().serving(),
    config=lambda fake: {"bot_token": TOKEN, "webhook_secret": WEBHOOK_SECRET, "base_url": fake.url, "timeout_seconds": FAST_TIMEOUT},
    message=outbound("telegram", CHAT, {"telegram_chat_id": CHAT}),
    secrets=(TOKEN, WEBHOOK_SECRET),
    genuine_webhook=lambda _fake, now: webhook_request(text_update(CHAT, "Thanks!", date=int(now))),
    forged_webhook=lambda _fake, now: webhook_request(text_update(CHAT, "Thanks!", date=int(now)), "not-the-webhook-secret"),
)
