"""A fake Brevo on loopback, the webhook payloads Brevo sends, and the brevo plugin's kit.

The fake answers the calls the plugin makes, checking what Brevo checks:

    POST /v3/smtp/email               header api-key, JSON sender/to/subject/htmlContent|textContent
        401 {"code": "unauthorized", "message": "Key not found"}
        400 {"code": "missing_parameter" | "invalid_parameter" | "bad_request", "message": …}
        201 {"messageId": "<…@smtp-relay.mailin.fr>"}   (the same id again for a repeated
                                                        headers.idempotencyKey: what Brevo promises)
    POST /v3/transactionalSMS/send    JSON sender/recipient (digits)/content/type
        201 {"messageId": <int>}
    GET /v3/account                   200 {"email", "companyName", "plan": […]} / 401

``fail_next`` plays a conformance fault on the next send that passes those checks and
``answer_next`` any answer a test wants; a held ``timeout`` is released when the fake stops.
:func:`email_event` and :func:`sms_event` build webhook events shaped like the samples in
Brevo's transactional-webhooks documentation; Brevo does not sign them.
"""

from __future__ import annotations

import hmac
import itertools
import json
import secrets
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from fakes.loopback import LoopbackFake
from gateway import InboundRequest
from gateway.conformance import FAST_TIMEOUT, Fault, Kit, outbound
from plugins.brevo import BrevoProvider

API_KEY = "xkeysib-fake0000brevo0000api0000key-0001"
WEBHOOK_TOKEN = "fake-brevo-callback-token-0001"
RECIPIENT = "ada@example.com"
PHONE = "+14155550100"
RELAY = "smtp-relay.mailin.fr"


@dataclass
class Received:
    """One API request as the fake saw it: path, JSON body, whether the key was right, the answer."""

    path: str
    headers: dict[str, str]
    body: Any
    authorized: bool
    status: int | None = None
    message_id: str | None = None


@dataclass(frozen=True)
class Answer:
    status: int
    body: Mapping[str, Any] | str
    headers: Mapping[str, str] = field(default_factory=dict)

    def response(self) -> web.Response:
        if isinstance(self.body, str):
            return web.Response(status=self.status, text=self.body, headers=dict(self.headers))
        return web.json_response(dict(self.body), status=self.status, headers=dict(self.headers))


INVALID_EMAIL = Answer(400, {"code": "invalid_parameter", "message": "email is not valid in to"})
INVALID_NUMBER = Answer(400, {"code": "invalid_parameter", "message": "Invalid phone number"})


class FakeBrevo(LoopbackFake):
    """Brevo's transactional API for one account; serve with ``async with fake.serving()``."""

    def __init__(self, *, api_key: str = API_KEY) -> None:
        super().__init__()
        self.api_key = api_key
        self.requests: list[Received] = []
        self.account_checks: list[int] = []
        self._script: deque[Answer | str] = deque()
        self._ids = itertools.count(1)
        self._by_idempotency_key: dict[str, str] = {}

    def fail_next(self, fault: Fault) -> None:
        self._script.append(fault if fault in ("timeout", "reject_recipient") else Answer(502, "<html>502 Bad Gateway</html>"))

    def answer_next(self, status: int, body: Mapping[str, Any] | str, headers: Mapping[str, str] | None = None) -> None:
        self._script.append(Answer(status, body, headers or {}))

    @property
    def emails(self) -> list[Received]:
        return [r for r in self.requests if r.path == "/v3/smtp/email" and r.status == 201]

    @property
    def sms(self) -> list[Received]:
        return [r for r in self.requests if r.path == "/v3/transactionalSMS/send" and r.status == 201]

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v3/smtp/email", self._email)
        router.add_post("/v3/transactionalSMS/send", self._sms)
        router.add_get("/v3/account", self._account)

    def _authorized(self, request: web.Request) -> bool:
        return hmac.compare_digest(request.headers.get("api-key", "").encode(), self.api_key.encode())

    async def _record(self, request: web.Request) -> Received:
        try:
            body = await request.json()
        except ValueError:
            body = None
        received = Received(request.path, dict(request.headers), body, self._authorized(request))
        self.requests.append(received)
        return received

    async def _email(self, request: web.Request) -> web.Response:
        received = await self._record(request)
        answer = await self._answer(received, _email_problem, INVALID_EMAIL)
        if answer is None:
            key = received.body.get("headers", {}).get("idempotencyKey")
            fresh = f"<{2030010100000000 + next(self._ids)}.{secrets.randbelow(10**9)}@{RELAY}>"
            message_id = self._by_idempotency_key.setdefault(key, fresh) if key else fresh
            answer = web.json_response({"messageId": message_id}, status=201)
            received.message_id = message_id
        received.status = answer.status
        return answer

    async def _sms(self, request: web.Request) -> web.Response:
        received = await self._record(request)
        answer = await self._answer(received, _sms_problem, INVALID_NUMBER)
        if answer is None:
            number = 1_511_882_900_176_000 + next(self._ids)
            answer = web.json_response({"messageId": number}, status=201)
            received.message_id = str(number)
        received.status = answer.status
        return answer

    async def _answer(self, received: Received, problem_of: Any, rejection: Answer) -> web.Response | None:
        """The refusal or fault for this request, or None to accept it."""
        if not received.authorized:
            return web.json_response({"code": "unauthorized", "message": "Key not found"}, status=401)
        if not isinstance(received.body, dict):
            return web.json_response({"code": "bad_request", "message": "Input must be a valid JSON object"}, status=400)
        if (problem := problem_of(received.body)) is not None:
            return Answer(400, problem).response()
        scripted = self._script.popleft() if self._script else None
        if scripted == "timeout":
            await self.held()
            return web.Response(status=502, text="the fake stopped")
        if scripted == "reject_recipient":
            return rejection.response()
        return scripted.response() if isinstance(scripted, Answer) else None

    async def _account(self, request: web.Request) -> web.Response:
        status = 200 if self._authorized(request) else 401
        self.account_checks.append(status)
        if status == 401:
            return web.json_response({"code": "unauthorized", "message": "Key not found"}, status=401)
        return web.json_response({
            "email": "ops@acme.example", "firstName": "Ada", "lastName": "Lovelace", "companyName": "ACME",
            "address": {"street": "1 Main St", "city": "Paris", "zipCode": "75001", "country": "France"},
            "plan": [{"type": "free", "creditsType": "sendLimit", "credits": 300}],
        })


def _email_problem(body: Mapping[str, Any]) -> dict[str, str] | None:
    sender = body.get("sender")
    if not isinstance(sender, dict) or not sender.get("email"):
        return {"code": "missing_parameter", "message": "sender is missing"}
    to = body.get("to")
    if not isinstance(to, list) or not to:
        return {"code": "missing_parameter", "message": "to is missing"}
    if not all(isinstance(item, dict) and "@" in str(item.get("email", "")) for item in to):
        return dict(INVALID_EMAIL.body)  # type: ignore[arg-type]
    if not body.get("subject"):
        return {"code": "missing_parameter", "message": "subject is missing"}
    if not (body.get("htmlContent") or body.get("textContent") or body.get("templateId")):
        return {"code": "missing_parameter", "message": "Either of htmlContent, textContent or templateId is required"}
    return None


def _sms_problem(body: Mapping[str, Any]) -> dict[str, str] | None:
    for name in ("sender", "recipient", "content"):
        if not isinstance(body.get(name), str) or not body[name]:
            return {"code": "missing_parameter", "message": f"{name} is missing"}
    if not body["recipient"].isdigit():
        return dict(INVALID_NUMBER.body)  # type: ignore[arg-type]
    if body.get("type", "transactional") not in ("transactional", "marketing"):
        return {"code": "invalid_parameter", "message": "type is not valid"}
    return None


def email_event(
    kind: str, message_id: str, *, email: str = RECIPIENT, delivery_id: str | None = None, at: float = 1_800_000_000.0, **extra: Any
) -> dict[str, Any]:
    """One transactional email webhook event, shaped like Brevo's documented samples."""
    event: dict[str, Any] = {
        "event": kind,
        "email": email,
        "id": 26224,
        "date": "2027-01-15 09:00:00",
        "ts": int(at),
        "message-id": message_id,
        "ts_event": int(at),
        "subject": "Your code",
        "sending_ip": "185.41.28.109",
        "ts_epoch": int(at * 1000),
        "tags": [],
        "mirror_link": "https://app-smtp.brevo.com/log/preview/1a2000f4-4e33-23aa-ab68-900dxxx9152c",
        "contact_id": 8,
    }
    if delivery_id is not None:
        event["X-Mailin-custom"] = delivery_id
    if kind in ("soft_bounce", "hard_bounce", "blocked", "invalid_email", "deferred", "error", "spam"):
        event["reason"] = extra.pop("reason", "550 5.1.1 The email account that you tried to reach does not exist")
    if kind == "click":
        event["link"] = extra.pop("link", "https://acme.example/orders/1001")
    event.update(extra)
    return event


def sms_event(status: str, message_id: int, *, to: str = PHONE, **extra: Any) -> dict[str, Any]:
    """One transactional SMS webhook event, shaped like Brevo's documented sample (``to`` without ``+``)."""
    event: dict[str, Any] = {
        "id": 26570,
        "to": to.removeprefix("+"),
        "sms_count": 1,
        "credits_used": 1.5,
        "messageId": message_id,
        "remaining_credit": 11488.845,
        "msg_status": status,
        "date": "2027-01-15 09:00:00",
        "type": "transactional",
        "reference": "ab1cde2fgh3i4jklmno",
        "tag": "",
    }
    event.update(extra)
    return event


def _request(body: bytes, query: dict[str, str]) -> InboundRequest:
    return InboundRequest(
        method="POST", url="https://tidings.example/api/v1/webhooks/brevo", headers={"Content-Type": "application/json"},
        query=query, body=body, remote="1.179.112.10",
    )


def genuine_webhook(_fake: Any, now: float) -> InboundRequest:
    body = _json(email_event("delivered", f"<202701150900.1@{RELAY}>", at=now))
    return _request(body, {"token": WEBHOOK_TOKEN})


def forged_webhook(_fake: Any, now: float) -> InboundRequest:
    body = _json(email_event("delivered", f"<202701150900.1@{RELAY}>", at=now))
    return _request(body, {"token": "not-the-callback-token-at-all"})


def _json(payload: Any) -> bytes:
    return json.dumps(payload).encode()


@asynccontextmanager
async def serve() -> AsyncIterator[FakeBrevo]:
    async with FakeBrevo().serving() as fake:
        yield fake


def config(fake: Any) -> dict[str, Any]:
    return {
        "api_key": API_KEY, "base_url": fake.url, "from": "no-reply@acme.example", "sms_sender": "ACME",
        "webhook_token": WEBHOOK_TOKEN, "timeout_seconds": FAST_TIMEOUT,
    }


KIT = Kit(
    plugin=BrevoProvider,
    serve=serve,
    config=config,
    message=outbound("email", RECIPIENT, {"email": RECIPIENT}, subject="Your code"),
    secrets=(API_KEY, WEBHOOK_TOKEN),
    genuine_webhook=genuine_webhook,
    forged_webhook=forged_webhook,
)
