"""A fake Mailgun on loopback, the webhook payloads Mailgun sends, and the mailgun plugin's kit.

The fake answers the two calls the plugin makes, checking what Mailgun checks, in its order:

    POST /v3/{domain}/messages   basic auth api:<key>, form fields from, to, subject, text/html…
        401 "Forbidden" (plain text)          wrong or missing key
        404 {"message": "Domain not found: …"} a domain the account does not have
        400 {"message": "'from' parameter is missing"} and the like; "'to' parameter is not a
            valid address. please check documentation" for a recipient without an @
        200 {"id": "<…@domain>", "message": "Queued. Thank you."}
    GET /v3/domains/{domain}     200 {"domain": {"name", "state": "active", …}} / 401 / 404

``fail_next`` plays a conformance fault on the next send that passes those checks, and
``answer_next`` any answer a test wants (a 429 with Retry-After…). A held ``timeout`` request is
released when the fake stops. :func:`event` builds ``event-data`` the way Mailgun's webhooks
carry it (shapes from Mailgun's documented samples) and :meth:`FakeMailgun.webhook` signs it.
"""

from __future__ import annotations

import base64
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
from plugins.mailgun import MailgunProvider, sign

API_KEY = "key-fake0000mailgun0000api0000key0001"
SIGNING_KEY = "fake-mailgun-webhook-signing-key-0001"
DOMAIN = "mg.acme.example"
RECIPIENT = "ada@example.com"
QUEUED = "Queued. Thank you."


@dataclass
class Received:
    """One ``POST /v3/{domain}/messages`` as the fake saw it, and the status it answered."""

    domain: str
    content_type: str
    fields: list[tuple[str, str]]
    authorized: bool
    status: int | None = None
    message_id: str | None = None

    def get(self, name: str) -> str | None:
        return next((value for key, value in self.fields if key == name), None)

    def names(self) -> list[str]:
        return [key for key, _ in self.fields]


@dataclass(frozen=True)
class Answer:
    """A scripted answer: a JSON object (or plain text) with a status and headers."""

    status: int
    body: Mapping[str, Any] | str
    headers: Mapping[str, str] = field(default_factory=dict)

    def response(self) -> web.Response:
        if isinstance(self.body, str):
            return web.Response(status=self.status, text=self.body, headers=dict(self.headers))
        return web.json_response(dict(self.body), status=self.status, headers=dict(self.headers))


INVALID_TO = Answer(400, {"message": "'to' parameter is not a valid address. please check documentation"})
FAULTS: dict[str, Answer] = {
    "5xx": Answer(503, "<html><body><h1>503 Service Unavailable</h1></body></html>"),
    "reject_recipient": INVALID_TO,
}


class FakeMailgun(LoopbackFake):
    """Mailgun's sending and domain API for one account; serve with ``async with fake.serving()``."""

    def __init__(self, *, api_key: str = API_KEY, domains: tuple[str, ...] = (DOMAIN,), signing_key: str = SIGNING_KEY) -> None:
        super().__init__()
        self.api_key = api_key
        self.domains = domains
        self.signing_key = signing_key
        self.requests: list[Received] = []
        self.domain_lookups: list[tuple[str, int]] = []
        self._script: deque[Answer | str] = deque()
        self._ids = itertools.count(1)

    # -- what tests call -------------------------------------------------------------------------

    def fail_next(self, fault: Fault) -> None:
        self._script.append("timeout" if fault == "timeout" else FAULTS[fault])

    def answer_next(self, status: int, body: Mapping[str, Any] | str, headers: Mapping[str, str] | None = None) -> None:
        self._script.append(Answer(status, body, headers or {}))

    @property
    def accepted(self) -> list[Received]:
        return [received for received in self.requests if received.status == 200]

    def webhook(
        self, data: Mapping[str, Any], *, at: float, token: str | None = None, key: str | None = None,
        signature: str | None = None,
    ) -> bytes:
        """A webhook body as Mailgun posts it: ``event-data`` and its signature block."""
        timestamp, token = str(int(at)), token or secrets.token_hex(25)
        block = {"timestamp": timestamp, "token": token, "signature": signature or sign(key or self.signing_key, timestamp, token)}
        return json.dumps({"signature": block, "event-data": dict(data)}).encode()

    # -- serving ---------------------------------------------------------------------------------

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v3/{domain}/messages", self._messages)
        router.add_get("/v3/domains/{domain}", self._domain)

    def _authorized(self, request: web.Request) -> bool:
        expected = "Basic " + base64.b64encode(f"api:{self.api_key}".encode()).decode()
        return hmac.compare_digest(request.headers.get("Authorization", "").encode(), expected.encode())

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        received = Received(
            domain=request.match_info["domain"], content_type=request.content_type,
            fields=[(key, str(value)) for key, value in form.items()], authorized=self._authorized(request),
        )
        self.requests.append(received)
        answer = await self._answer(received)
        received.status = answer.status
        return answer

    async def _answer(self, received: Received) -> web.Response:
        if not received.authorized:
            return web.Response(status=401, text="Forbidden")
        if received.domain not in self.domains:
            return web.json_response({"message": f"Domain not found: {received.domain}"}, status=404)
        if (problem := _shape_problem(received)) is not None:
            return web.json_response({"message": problem}, status=400)
        scripted = self._script.popleft() if self._script else None
        if scripted == "timeout":
            await self.held()
            return web.Response(status=503, text="the fake stopped")
        if isinstance(scripted, Answer):
            return scripted.response()
        received.message_id = f"20300101000000.{next(self._ids)}.{secrets.token_hex(4).upper()}@{received.domain}"
        return web.json_response({"id": f"<{received.message_id}>", "message": QUEUED})

    async def _domain(self, request: web.Request) -> web.Response:
        domain = request.match_info["domain"]
        status = 401 if not self._authorized(request) else 200 if domain in self.domains else 404
        self.domain_lookups.append((domain, status))
        if status == 401:
            return web.Response(status=401, text="Forbidden")
        if status == 404:
            return web.json_response({"message": "Domain not found"}, status=404)
        details = {"name": domain, "state": "active", "type": "custom", "spam_action": "disabled", "created_at": "Wed, 01 Jan 2030 00:00:00 GMT"}
        return web.json_response({"domain": details, "receiving_dns_records": [], "sending_dns_records": []})


def _shape_problem(received: Received) -> str | None:
    """What Mailgun says of a request missing what it needs (None: nothing)."""
    if not received.content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        return "Invalid request: expected form data"
    for name in ("from", "to", "subject"):
        if not received.get(name):
            return f"'{name}' parameter is missing"
    if "@" not in (received.get("to") or ""):
        return str(INVALID_TO.body["message"])  # type: ignore[index]
    if not any(received.get(name) for name in ("text", "html", "template")):
        return "Need at least one of 'text', 'html' or 'template' parameters specified"
    return None


def event(kind: str, message_id: str, *, recipient: str = RECIPIENT, at: float = 1_800_000_000.0, **extra: Any) -> dict[str, Any]:
    """``event-data`` of one Mailgun webhook, shaped like Mailgun's documented samples.

    ``kind`` is Mailgun's event name; for ``failed`` pass ``severity`` and ``reason`` (and
    ``delivery_status``); ``variables`` sets ``user-variables``.
    """
    data: dict[str, Any] = {
        "id": secrets.token_urlsafe(16),
        "timestamp": at + 0.908181,
        "log-level": "error" if kind == "failed" else "info",
        "event": kind,
        "recipient": recipient,
        "recipient-domain": recipient.split("@")[-1],
        "tags": [],
        "campaigns": [],
        "user-variables": extra.pop("variables", {}),
        "flags": {"is-routed": False, "is-authenticated": True, "is-system-test": False, "is-test-mode": False},
        "message": {
            "headers": {"to": recipient, "message-id": message_id, "from": f"ACME <no-reply@{DOMAIN}>", "subject": "Your code"},
            "attachments": [],
            "size": 2412,
        },
    }
    if kind in ("accepted", "delivered", "failed"):
        data["envelope"] = {"transport": "smtp", "sender": f"bounce@{DOMAIN}", "sending-ip": "209.61.154.250", "targets": recipient}
    if kind == "delivered":
        data["delivery-status"] = {
            "tls": True, "mx-host": "mx.example.com", "code": 250, "description": "", "session-seconds": 0.43, "utf8": True,
            "attempt-no": 1, "message": "OK", "certificate-verified": True,
        }
    if kind == "failed":
        data["severity"] = extra.pop("severity", "permanent")
        data["reason"] = extra.pop("reason", "bounce")
        data["delivery-status"] = extra.pop("delivery_status", {
            "attempt-no": 1, "code": 550, "description": "", "session-seconds": 0.1,
            "message": "5.1.1 The email account that you tried to reach does not exist.",
        })
    if kind in ("opened", "clicked", "unsubscribed", "complained"):
        data["ip"] = "50.56.129.169"
        data["geolocation"] = {"country": "US", "region": "CA", "city": "San Francisco"}
        data["client-info"] = {"client-type": "browser", "client-os": "Linux", "device-type": "desktop", "client-name": "Chrome", "user-agent": "Mozilla/5.0"}
    if kind == "clicked":
        data["url"] = extra.pop("url", "https://acme.example/orders/1001")
    data.update(extra)
    return data


def _request(fake: FakeMailgun, body: bytes) -> InboundRequest:
    return InboundRequest(
        method="POST", url="https://tidings.example/api/v1/webhooks/mail", headers={"Content-Type": "application/json"},
        query={}, body=body, remote="3.19.228.130",
    )


def genuine_webhook(fake: Any, now: float) -> InboundRequest:
    return _request(fake, fake.webhook(event("delivered", f"20300101000000.1.ABCD@{DOMAIN}"), at=now))


def forged_webhook(fake: Any, now: float) -> InboundRequest:
    return _request(fake, fake.webhook(event("delivered", f"20300101000000.1.ABCD@{DOMAIN}"), at=now, key="not-the-signing-key"))


@asynccontextmanager
async def serve() -> AsyncIterator[FakeMailgun]:
    async with FakeMailgun().serving() as fake:
        yield fake


def config(fake: Any) -> dict[str, Any]:
    return {
        "api_key": API_KEY, "domain": DOMAIN, "base_url": fake.url, "from": f"no-reply@{DOMAIN}",
        "webhook_signing_key": SIGNING_KEY, "timeout_seconds": FAST_TIMEOUT,
    }


KIT = Kit(
    plugin=MailgunProvider,
    serve=serve,
    config=config,
    message=outbound("email", RECIPIENT, {"email": RECIPIENT}, subject="Your code"),
    secrets=(API_KEY, SIGNING_KEY),
    genuine_webhook=genuine_webhook,
    forged_webhook=forged_webhook,
)
