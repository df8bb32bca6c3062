"""A fake Slack Web API on loopback, and the slack conformance kit.

It answers the way Slack does — HTTP 200 whether or not the call worked::

    POST /api/chat.postMessage   Authorization: Bearer xoxb-…   application/json; charset=utf-8
        {"ok": true, "channel": "C…" | "D…", "ts": "1800000000.000100", "message": {…}}
        {"ok": false, "error": "not_authed" | "invalid_auth" | "channel_not_found" | "not_in_channel"
                               | "no_text" | "msg_too_long" | "invalid_blocks" | …}
    POST /api/auth.test          {"ok": true, "url", "team", "user", "team_id", "user_id", "bot_id"}

A user id (``U…``/``W…``) as ``channel`` posts to the app's DM with that user, answered with the
DM's ``D…`` id. Channels the bot is in are :attr:`FakeSlack.member_of`; :attr:`FakeSlack.known`
it can see but is not in (``not_in_channel``); any other ``C…`` is ``channel_not_found``. A JSON
body without ``charset`` gets Slack's ``missing_charset`` warning.

On cue (:meth:`FakeSlack.fail_next`): ``timeout`` holds the request until the fake stops, ``5xx``
answers 503, ``reject_recipient`` ``channel_not_found``; :meth:`FakeSlack.refuse_next` scripts any
error string, HTTP status (429 for ``ratelimited``) and headers (``Retry-After``). Event builders
sign the way Slack does (``X-Slack-Signature: v0=<hex HMAC-SHA256(signing secret, "v0:" +
timestamp + ":" + body)>``).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from fakes.loopback import LoopbackFake
from gateway import InboundRequest
from gateway.conformance import FAST_TIMEOUT, Fault, Kit, outbound
from plugins.slack import SlackProvider

BOT_TOKEN = "xoxb-1234567890-0987654321-FakeBotTokenForTests"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
USER = "U0ADA12345"
BOT_USER = "U0TIDINGS1"
BOT_ID = "B0TIDINGS1"
TEAM_ID = "T0ACME0001"
_USER_ID = re.compile(r"^[UW][A-Z0-9]+$")
MAX_TEXT = 40000


@dataclass
class SlackCall:
    """One Web API call the fake received, and what it answered."""

    method: str
    headers: dict[str, str]
    body: Any
    status: int | None = None
    answer: Any = None


@dataclass(frozen=True)
class SlackError:
    """A scripted failure: Slack's error string, the HTTP status and headers it comes with."""

    error: str
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)


def slack_error(failure: SlackError) -> web.Response:
    return web.json_response({"ok": False, "error": failure.error}, status=failure.status, headers=dict(failure.headers))


class FakeSlack(LoopbackFake):
    """The fake Slack: state, recorded calls and the aiohttp app (serve with :meth:`serving`)."""

    def __init__(self, *, token: str = BOT_TOKEN, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.token = token
        self.clock = clock
        self.member_of = {"C0ALERTS01"}
        self.known = {"C0PRIVATE1"}
        self.calls: list[SlackCall] = []
        self.posted: list[dict[str, Any]] = []
        self._script: list[Fault | SlackError] = []
        self._seq = itertools.count(100)

    def fail_next(self, fault: Fault) -> None:
        self._script.append(fault)

    def refuse_next(self, failure: SlackError) -> None:
        self._script.append(failure)

    @property
    def posts(self) -> list[SlackCall]:
        return [call for call in self.calls if call.method == "chat.postMessage"]

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/api/chat.postMessage", self._post_message)
        router.add_post("/api/auth.test", self._auth_test)

    # -- the API ---------------------------------------------------------------------------

    async def _post_message(self, request: web.Request) -> web.Response:
        raw = await request.read()
        call = SlackCall("chat.postMessage", dict(request.headers), _json(raw))
        self.calls.append(call)
        response = await self._answer_post(request, call.body)
        call.status, call.answer = response.status, json.loads(response.text or "null")
        return response

    async def _answer_post(self, request: web.Request, body: Any) -> web.Response:
        problem = self._auth_problem(request) or _content_problem(request, body)
        if problem is not None:
            return slack_error(SlackError(problem))
        scripted = self._script.pop(0) if self._script else None
        if scripted == "timeout":
            await self.held()
        if isinstance(scripted, SlackError):
            return slack_error(scripted)
        if scripted == "5xx":
            return slack_error(SlackError("service_unavailable", status=503))
        if scripted == "reject_recipient":
            return slack_error(SlackError("channel_not_found"))
        return self._deliver(request, body)

    def _deliver(self, request: web.Request, body: dict[str, Any]) -> web.Response:
        target = body["channel"]
        if _USER_ID.match(target):
            channel = "D" + target[1:]
        elif target in self.member_of:
            channel = target
        else:
            return slack_error(SlackError("not_in_channel" if target in self.known else "channel_not_found"))
        ts = f"{int(self.clock())}.{next(self._seq):06d}"
        message = {"type": "message", "subtype": "bot_message", "text": body.get("text", ""), "ts": ts, "bot_id": BOT_ID}
        if "blocks" in body:
            message["blocks"] = body["blocks"]
        self.posted.append(body | {"posted_to": channel, "ts": ts})
        answer: dict[str, Any] = {"ok": True, "channel": channel, "ts": ts, "message": message}
        if "charset=" not in request.headers.get("Content-Type", ""):
            answer |= {"warning": "missing_charset", "response_metadata": {"warnings": ["missing_charset"]}}
        return web.json_response(answer)

    def _auth_problem(self, request: web.Request) -> str | None:
        given = request.headers.get("Authorization")
        if given is None:
            return "not_authed"
        return None if given == f"Bearer {self.token}" else "invalid_auth"

    async def _auth_test(self, request: web.Request) -> web.Response:
        self.calls.append(SlackCall("auth.test", dict(request.headers), _json(await request.read())))
        problem = self._auth_problem(request)
        if problem is not None:
            return slack_error(SlackError(problem))
        return web.json_response({
            "ok": True, "url": "https://acme.slack.com/", "team": "Acme", "user": "tidings", "team_id": TEAM_ID,
            "user_id": BOT_USER, "bot_id": BOT_ID, "is_enterprise_install": False,
        })


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw.decode(errors="replace")


def _content_problem(request: web.Request, body: Any) -> str | None:
    """Slack's answer to a chat.postMessage body it cannot take, if any."""
    if not request.headers.get("Content-Type", "").startswith("application/json"):
        return "invalid_post_type"  # this fake takes JSON only: the plugin never sends forms
    if not isinstance(body, dict):
        return "invalid_json"
    if not isinstance(body.get("channel"), str) or not body["channel"]:
        return "channel_not_found"
    blocks = body.get("blocks")
    if blocks is not None and not (isinstance(blocks, list) and all(isinstance(b, dict) and "type" in b for b in blocks)):
        return "invalid_blocks"
    text = body.get("text")
    if not text and not blocks:
        return "no_text"
    return "msg_too_long" if isinstance(text, str) and len(text) > MAX_TEXT else None


# -- Events API requests as Slack sends them ---------------------------------------------------


def sign(timestamp: int, body: bytes, secret: str = SIGNING_SECRET) -> str:
    return "v0=" + hmac.new(secret.encode(), f"v0:{timestamp}:".encode() + body, hashlib.sha256).hexdigest()


def event_headers(body: bytes, timestamp: int, secret: str = SIGNING_SECRET) -> dict[str, str]:
    return {"Content-Type": "application/json", "X-Slack-Request-Timestamp": str(timestamp), "X-Slack-Signature": sign(timestamp, body, secret)}


def event_request(payload: dict[str, Any] | bytes, timestamp: int, *, secret: str = SIGNING_SECRET) -> InboundRequest:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return InboundRequest(
        method="POST", url="http://127.0.0.1/api/v1/webhooks/slack", headers=event_headers(body, timestamp, secret), query={}, body=body
    )


def url_verification(challenge: str = "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P") -> dict[str, Any]:
    return {"token": "Jhj5dZrVaK7ZwHHjRyZWjbDl", "challenge": challenge, "type": "url_verification"}


def message_event(
    text: str, *, channel: str = "D0ADA12345", ts: str = "1800000100.000200", user: str = USER,
    thread_ts: str | None = None, **extra: Any,
) -> dict[str, Any]:
    """An ``event_callback`` carrying a ``message`` event (recorded shape, values ours)."""
    event: dict[str, Any] = {
        "type": "message", "channel": channel, "user": user, "text": text, "ts": ts, "event_ts": ts,
        "channel_type": "im" if channel.startswith("D") else "channel", "team": TEAM_ID,
    } | extra
    if thread_ts is not None:
        event["thread_ts"] = thread_ts
    return {
        "token": "Jhj5dZrVaK7ZwHHjRyZWjbDl", "team_id": TEAM_ID, "api_app_id": "A0TIDINGS1", "event": event,
        "type": "event_callback", "event_id": "Ev0PV52K21", "event_time": int(float(ts)),
        "authorizations": [{"team_id": TEAM_ID, "user_id": BOT_USER, "is_bot": True}],
    }


# -- the conformance kit ---------------------------------------------------------------------------


def serve() -> Any:
    return FakeSlack().serving()


KIT = Kit(
    plugin=SlackProvider,
    serve=serve,
    config=lambda fake: {"bot_token": BOT_TOKEN, "signing_secret": SIGNING_SECRET, "base_url": fake.url, "timeout_seconds": FAST_TIMEOUT},
    message=outbound("slack", USER, {"slack_user_id": USER}),
    secrets=(BOT_TOKEN, SIGNING_SECRET),
    genuine_webhook=lambda _fake, now: event_request(message_event("thanks", ts=f"{int(now)}.000100"), int(now)),
    forged_webhook=lambda _fake, now: event_request(message_event("thanks", ts=f"{int(now)}.000100"), int(now), secret="not-the-secret"),
)
