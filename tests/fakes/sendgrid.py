"""A fake SendGrid v3 API on loopback, and a signer of Event Webhook callbacks as SendGrid signs them.

Also the sendgrid plugin's conformance kit. What it serves::

    POST /v3/mail/send   Authorization: Bearer <key>    → 202, empty body, X-Message-Id: <22 chars>
    GET  /v3/scopes      Authorization: Bearer <key>    → 200 {"scopes": [...]}

checking what SendGrid checks, and answering in SendGrid's shape
``{"errors": [{"message", "field", "help"}]}``: no or a wrong key → 401; a key without the
``mail.send`` scope → 403 ``access forbidden``; a body that is not JSON → 400; no
personalization, an invalid ``to`` address, no From, no subject, no content, empty content, or
text/html before text/plain → 400 naming the field; a From outside the verified sender domains
→ 403 (field ``from``, "does not match a verified Sender Identity").

Faults: ``fail_next("timeout")`` holds the request until the client gives up or the fake stops;
:meth:`FakeSendGrid.lose_next_answer` accepts the next send (its events can be built) but never
answers, as when the 202 is lost on the way back;
``"5xx"`` answers 500; ``"reject_recipient"`` answers SendGrid's 400 for an invalid ``to``
address (SendGrid takes unknown mailboxes and answers later with a ``bounce`` event).
:meth:`FakeSendGrid.script` queues any status, errors and headers (429 with
``X-RateLimit-Reset``, 413…).

Callbacks: :meth:`FakeSendGrid.event` builds an event as SendGrid records it for an accepted
message (``sg_message_id`` = the X-Message-Id plus a ``.filterdrecv…`` suffix, the custom args
merged in), and :meth:`FakeSendGrid.signed` signs a raw body with the fake's ECDSA P-256 key the
way SendGrid does (base64 DER signature over timestamp + body); :attr:`public_key` is the
verification key as the console shows it (base64 DER SubjectPublicKeyInfo).
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import secrets
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fakes.loopback import LoopbackFake
from gateway import InboundRequest
from gateway.conformance import FAST_TIMEOUT, Fault, Kit, outbound
from plugins.sendgrid import SIGNATURE_HEADER, TIMESTAMP_HEADER, SendGridProvider

API_KEY: Final = "SG.fake-key-id.fake-key-secret-0123456789abcdefghij"
VERIFIED_DOMAINS: Final = frozenset({"tidings.example", "acme.example"})
HELP: Final = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html"
SCOPES: Final = ("mail.send", "alerts.read", "stats.read", "user.profile.read")
HOLD: Final = "hold"
LOSE_ANSWER: Final = "lose answer"
_EMAIL: Final = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")


@dataclass
class SendRequest:
    """One ``POST /v3/mail/send`` as the fake saw it."""

    headers: dict[str, str]
    raw: bytes
    payload: Any
    status: int | None = None
    message_id: str | None = None


@dataclass
class Scripted:
    status: int
    errors: list[dict[str, Any]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None  # a body that is not SendGrid's JSON (its proxy's HTML 413)


class FakeSendGrid(LoopbackFake):
    def __init__(self, *, api_key: str = API_KEY, scopes: tuple[str, ...] = SCOPES) -> None:
        super().__init__()
        self.api_key = api_key
        self.scopes = scopes
        self.requests: list[SendRequest] = []
        self.accepted: dict[str, dict[str, Any]] = {}  # X-Message-Id → payload
        self.scope_checks = 0
        self._signing_key = ec.generate_private_key(ec.SECP256R1())
        self._script: list[Scripted | str] = []
        self._events = itertools.count(1)

    # -- what tests call ---------------------------------------------------------------------

    def fail_next(self, fault: Fault) -> None:
        if fault == "timeout":
            self._script.append(HOLD)
        elif fault == "5xx":
            self._script.append(Scripted(500, [{"field": None, "message": "internal server error", "help": None}]))
        else:
            self._script.append(Scripted(400, [_error("Does not contain a valid address.", "personalizations.0.to.0.email", "message.personalizations.to")]))

    def script(self, status: int, errors: list[dict[str, Any]] | None = None, headers: Mapping[str, str] | None = None, raw: bytes | None = None) -> None:
        """Answer the next well-formed, authorized send with ``status`` (and SendGrid's error body)."""
        self._script.append(Scripted(status, list(errors or []), dict(headers or {}), raw))

    def lose_next_answer(self) -> None:
        """Accept the next well-formed send, then hold its 202 until the client gives up."""
        self._script.append(LOSE_ANSWER)

    @property
    def public_key(self) -> str:
        """The Event Webhook verification key, as the SendGrid console shows it."""
        der = self._signing_key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return base64.b64encode(der).decode()

    def signed(self, body: bytes, timestamp: int, *, key: ec.EllipticCurvePrivateKey | None = None) -> dict[str, str]:
        """The headers SendGrid sends with ``body`` at ``timestamp``."""
        signature = (key or self._signing_key).sign(str(timestamp).encode() + body, ec.ECDSA(hashes.SHA256()))
        return {"Content-Type": "application/json", SIGNATURE_HEADER: base64.b64encode(signature).decode(), TIMESTAMP_HEADER: str(timestamp)}

    def event(self, message_id: str, event: str, at: int = 1_800_000_000, **fields: Any) -> dict[str, Any]:
        """One event about an accepted message, shaped as SendGrid's Event Webhook reference shows it."""
        payload = self.accepted.get(message_id, {})
        to = payload.get("personalizations", [{}])[0].get("to", [{}])[0].get("email", "ada@example.com")
        record: dict[str, Any] = {
            "email": to,
            "timestamp": at,
            "smtp-id": f"<{message_id}@geopod-ismtpd-3>",
            "event": event,
            "category": ["tidings"],
            "sg_event_id": base64.urlsafe_b64encode(f"event-{next(self._events)}".encode()).decode().rstrip("="),
            "sg_message_id": f"{message_id}.filterdrecv-5645d9c87f-4rfzb-1-64E3A2F5-3A.0",
        }
        record |= _EVENT_FIELDS.get(event, {})
        record |= payload.get("custom_args", {})
        return record | fields

    def callback(self, events: list[dict[str, Any]], at: float) -> InboundRequest:
        """A signed Event Webhook POST as the gateway's route hands it to the plugin."""
        body = json.dumps(events).encode()
        return InboundRequest(method="POST", url="/api/v1/webhooks/sendgrid", headers=self.signed(body, int(at)), query={}, body=body)

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v3/mail/send", self._send)
        router.add_get("/v3/scopes", self._scopes)

    # -- the API -----------------------------------------------------------------------------

    def _refusal(self, request: web.Request) -> web.Response | None:
        authorization = request.headers.get("Authorization")
        if not authorization:
            return _errors(401, [{"field": None, "message": "authorization required", "help": None}])
        if authorization != f"Bearer {self.api_key}":
            return _errors(401, [{"field": None, "message": "The provided authorization grant is invalid, expired, or revoked", "help": None}])
        return None

    async def _scopes(self, request: web.Request) -> web.Response:
        self.scope_checks += 1
        return self._refusal(request) or web.json_response({"scopes": list(self.scopes)})

    async def _send(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = None
        record = SendRequest(dict(request.headers), raw, payload)
        self.requests.append(record)
        self._notify()
        response = self._answer(request, payload)
        if response == HOLD:
            await self.held()
            return _errors(500, [{"field": None, "message": "the fake was stopped", "help": None}])
        lost = response == LOSE_ANSWER
        response = _accepted() if isinstance(response, str) else response
        record.status = response.status
        record.message_id = response.headers.get("X-Message-Id")
        if record.message_id is not None:
            self.accepted[record.message_id] = payload
        self._notify()
        if lost:
            await self.held()
        return response

    def _answer(self, request: web.Request, payload: Any) -> web.Response | str:
        refused = self._refusal(request)
        if refused is not None:
            return refused
        if "mail.send" not in self.scopes:
            return _errors(403, [{"field": None, "message": "access forbidden", "help": None}])
        if not isinstance(payload, dict):
            return _errors(400, [{"field": None, "message": "Bad Request", "help": None}])
        problems = _validate(payload)
        if problems:
            return _errors(400, problems)
        sender = str(payload["from"]["email"]).rpartition("@")[2]
        if sender not in VERIFIED_DOMAINS:
            return _errors(403, [{
                "message": "The from address does not match a verified Sender Identity. Mail cannot be sent until this error is "
                "resolved. Visit https://sendgrid.com/docs/for-developers/sending-email/sender-identity/ to see the Sender "
                "Identity requirements", "field": "from", "help": None,
            }])
        if self._script:
            scripted = self._script.pop(0)
            if isinstance(scripted, str):
                return scripted
            if scripted.raw is not None:
                return web.Response(status=scripted.status, body=scripted.raw, headers=scripted.headers, content_type="text/html")
            return _errors(scripted.status, scripted.errors, scripted.headers)
        return _accepted()


def _accepted() -> web.Response:
    message_id = base64.urlsafe_b64encode(secrets.token_bytes(16)).decode()[:22]
    return web.Response(status=202, headers={"X-Message-Id": message_id})


def _error(message: str, field: str | None, anchor: str) -> dict[str, Any]:
    return {"message": message, "field": field, "help": f"{HELP}#{anchor}"}


def _errors(status: int, errors: list[dict[str, Any]], headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response({"errors": errors}, status=status, headers=headers)


def _validate(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The Mail Send checks SendGrid makes, as far as Tidings' requests can trip them."""
    problems: list[dict[str, Any]] = []
    personalizations = payload.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        problems.append(_error("The personalizations field is required and must have at least one personalization.", "personalizations", "message.personalizations"))
    else:
        for p_index, personalization in enumerate(personalizations):
            for t_index, to in enumerate(personalization.get("to") or []):
                if not isinstance(to, dict) or not _EMAIL.match(str(to.get("email", ""))):
                    problems.append(_error("Does not contain a valid address.", f"personalizations.{p_index}.to.{t_index}.email", "message.personalizations.to"))
    sender = payload.get("from")
    if not isinstance(sender, dict) or not _EMAIL.match(str(sender.get("email", ""))):
        problems.append(_error("The from object must be provided for every email send. It is an object that requires the email parameter, but may also contain a name parameter.", "from.email", "message.from"))
    if not payload.get("subject"):
        problems.append(_error("The subject is required. You can get around this requirement if you use a template with a subject defined or if every personalization has a subject defined.", "subject", "message.subject"))
    content = payload.get("content")
    if not isinstance(content, list) or not content:
        problems.append(_error("Unless a valid template_id is provided, the content parameter is required. There must be at least one defined content block. We typically suggest both text/plain and text/html blocks are included, but only one block is required.", "content", "message.content"))
    else:
        types = [block.get("type") for block in content if isinstance(block, dict)]
        if "text/plain" in types and types[0] != "text/plain":
            problems.append(_error("If present, text/plain content must be first, followed by text/html, followed by any other content.", "content", "message.content"))
        for index, block in enumerate(content):
            if not isinstance(block, dict) or not isinstance(block.get("value"), str) or not block["value"]:
                problems.append(_error("The content value must be a string at least one character in length.", f"content.{index}.value", "message.content.value"))
    custom_args = payload.get("custom_args", {})
    if not isinstance(custom_args, dict) or not all(isinstance(value, str) for value in custom_args.values()):
        problems.append(_error("Invalid type. Expected: object, given: string.", "custom_args", "message.custom_args"))
    return problems


# Fields each event type carries beyond the common ones (Event Webhook reference).
_EVENT_FIELDS: Final[Mapping[str, dict[str, Any]]] = {
    "processed": {"pool": {"name": "new_MY_test", "id": 210}},
    "deferred": {"response": "400 try again later", "attempt": "5"},
    "delivered": {"response": "250 OK", "ip": "168.1.1.1", "tls": 1, "cert_err": 0},
    "open": {"sg_machine_open": False, "useragent": "Mozilla/4.0 (compatible; MSIE 6.1; Windows XP; .NET CLR 1.1.4322; .NET CLR 2.0.50727)", "ip": "255.255.255.255"},
    "click": {"useragent": "Mozilla/4.0 (compatible; MSIE 6.1; Windows XP)", "ip": "255.255.255.255", "url": "http://www.sendgrid.com/", "url_offset": {"index": 0, "type": "html"}},
    "bounce": {"bounce_classification": "Invalid Address", "reason": "550 5.1.1 The email account that you tried to reach does not exist.", "status": "5.1.1", "type": "bounce", "ip": "168.1.1.1", "tls": 1},
    "dropped": {"reason": "Bounced Address", "status": "5.0.0"},
    "spamreport": {},
    "unsubscribe": {},
    "group_unsubscribe": {"useragent": "Mozilla/4.0", "ip": "255.255.255.255", "url": "http://www.sendgrid.com/", "asm_group_id": 10},
}


def serve() -> AbstractAsyncContextManager[FakeSendGrid]:
    return FakeSendGrid().serving()


def _fake(fake: Any) -> FakeSendGrid:
    assert isinstance(fake, FakeSendGrid)
    return fake


def config(fake: Any) -> dict[str, Any]:
    sendgrid = _fake(fake)
    return {
        "api_key": sendgrid.api_key, "from": "no-reply@tidings.example", "base_url": sendgrid.url,
        "webhook_public_key": sendgrid.public_key, "timeout_seconds": FAST_TIMEOUT,
    }


def genuine_webhook(fake: Any, now: float) -> InboundRequest:
    sendgrid = _fake(fake)
    return sendgrid.callback([sendgrid.event("W4UbzYbhTUyQ9Nc5WLkAvA", "delivered", at=int(now))], now)


def forged_webhook(fake: Any, now: float) -> InboundRequest:
    """Signed, but with a key that is not the account's."""
    sendgrid = _fake(fake)
    body = json.dumps([sendgrid.event("W4UbzYbhTUyQ9Nc5WLkAvA", "delivered", at=int(now))]).encode()
    headers = sendgrid.signed(body, int(now), key=ec.generate_private_key(ec.SECP256R1()))
    return InboundRequest(method="POST", url="/api/v1/webhooks/sendgrid", headers=headers, query={}, body=body)


KIT = Kit(
    plugin=SendGridProvider,
    serve=serve,
    config=config,
    message=outbound("email", "ada@example.com", {"email": "ada@example.com"}, subject="Your code", html="<p>Your code is <b>123456</b></p>"),
    secrets=(API_KEY,),
    genuine_webhook=genuine_webhook,
    forged_webhook=forged_webhook,
)
