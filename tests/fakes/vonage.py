"""A fake Vonage SMS API on loopback, the way the vonage plugin sees it; and its conformance kit.

Serves what the plugin calls, the way Vonage answers::

    POST /sms/json             form (or JSON): api_key, api_secret | (sig, timestamp), from, to, text,
                               [type], [client-ref], [callback]
    GET  /account/get-balance  basic auth (or api_key / api_secret query parameters)

``/sms/json`` answers **HTTP 200 even when it refuses**: ``{"message-count": "1", "messages":
[{"status": "4", "error-text": "Bad Credentials"}]}`` for a wrong key, secret or signature
("14" for a bad ``sig``, "32" for ``sig`` together with ``api_secret``), "2" for a missing
parameter, "3" for a ``to`` that is not 7-15 digits. Accepted text is split into parts the way
Vonage splits it (153 GSM characters or 67 unicode ones per part when it does not fit in one
SMS): one ``messages[]`` entry, with its own ``message-id``, per part. Everything is recorded in
:attr:`FakeVonage.requests`.

``fail_next`` plays a conformance fault on the next send (``timeout`` holds the request until the
client gives up or the fake stops; ``5xx`` is an HTTP 500; ``reject_recipient`` is status "3",
"Invalid to address"); ``refuse_next(status, text)`` answers any SMS API status;
``http_next(status, headers)`` any HTTP status; ``answer_next(body)`` any 200 body.

Callbacks (:func:`receipt`, :func:`inbound`, :func:`signed`) are built the way Vonage builds
them; signatures come from :func:`plugins.vonage.sign`, which the tests check against the
reference vectors of Vonage's own SDK.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from fakes.loopback import LoopbackFake
from gateway import InboundRequest
from gateway.conformance import FAST_TIMEOUT, Fault, Kit, outbound
from plugins.vonage import VonageProvider, sign

API_KEY = "abcd1234"
API_SECRET = "vonage-api-secret-0123"
SIGNATURE_SECRET = "vonage-signature-secret-0123456789abcdef"
WEBHOOK_TOKEN = "vonage-webhook-token-0123456789"
SENDER = "ACME"
PHONE = "+447700900001"
_DIGITS = re.compile(r"^\d{7,15}$")


@dataclass
class VonageRequest:
    """One request as the fake saw it, and what it answered."""

    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    content_type: str
    status: int | None = None
    answer: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Planned:
    status: str | None = None  # an SMS API status in a 200
    text: str = ""
    http_status: int | None = None  # or an HTTP status
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Mapping[str, Any] | None = None  # or this 200 body as it is


class FakeVonage(LoopbackFake):
    """Vonage's SMS API for one account; ``url`` is its base URL once serving."""

    def __init__(self, *, api_key: str = API_KEY, api_secret: str = API_SECRET, signature_secret: str = SIGNATURE_SECRET,
                 signature_method: str = "md5hash") -> None:
        super().__init__()
        self.api_key = api_key
        self.api_secret = api_secret
        self.signature_secret = signature_secret
        self.signature_method = signature_method
        self.balance = 10.28
        self.requests: list[VonageRequest] = []
        self._plan: list[Fault | _Planned] = []
        self._ids = itertools.count(1)

    # -- what tests call -------------------------------------------------------------------

    def fail_next(self, fault: Fault) -> None:
        self._plan.append(fault)

    def refuse_next(self, status: str, text: str = "Refused by the fake") -> None:
        """Answer the next send HTTP 200 with ``messages[0].status`` = ``status``."""
        self._plan.append(_Planned(status=status, text=text))

    def http_next(self, status: int, headers: Mapping[str, str] | None = None) -> None:
        """Answer the next send with HTTP ``status`` (and ``headers``)."""
        self._plan.append(_Planned(http_status=status, headers=dict(headers or {})))

    def answer_next(self, body: Mapping[str, Any]) -> None:
        """Answer the next send HTTP 200 with ``body`` (a partial failure, a malformed answer)."""
        self._plan.append(_Planned(body=body))

    @property
    def sends(self) -> list[VonageRequest]:
        return [request for request in self.requests if request.path == "/sms/json"]

    # -- serving -------------------------------------------------------------------------------

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/sms/json", self._sms)
        router.add_get("/account/get-balance", self._balance)

    async def _sms(self, request: web.Request) -> web.Response:
        if request.content_type == "application/json":
            payload = await request.json()
            params = {str(k): str(v) for k, v in payload.items()} if isinstance(payload, dict) else {}
        else:
            params = {str(k): str(v) for k, v in (await request.post()).items()}
        record = VonageRequest("POST", request.path, params, dict(request.headers), request.content_type)
        self.requests.append(record)
        self._notify()
        if (status := self._refusal(params)) is not None:
            return self._answer(record, _refused(*status))
        planned = self._plan.pop(0) if self._plan else None
        if planned == "timeout":
            await self.held()
            return self._answer(record, web.Response(status=503, text="stopping"))
        if planned == "5xx":
            return self._answer(record, web.Response(status=500, text="<html><body>Internal Server Error</body></html>", content_type="text/html"))
        if planned == "reject_recipient":
            return self._answer(record, _refused("3", "Invalid to address"))
        if isinstance(planned, _Planned):
            if planned.body is not None:
                return self._answer(record, web.json_response(dict(planned.body)))
            if planned.http_status is not None:
                return self._answer(record, web.json_response({"title": "fake"}, status=planned.http_status, headers=planned.headers))
            return self._answer(record, _refused(str(planned.status), planned.text))
        return self._answer(record, self._accept(params))

    def _refusal(self, params: Mapping[str, str]) -> tuple[str, str] | None:
        if params.get("api_key") != self.api_key:
            return "4", "Bad Credentials"
        if "sig" in params:
            if "api_secret" in params:
                return "32", "Signature and API secret disallowed"
            if sign(params, self.signature_secret, self.signature_method) != params["sig"].lower():
                return "14", "Invalid Signature"
        elif params.get("api_secret") != self.api_secret:
            return "4", "Bad Credentials"
        for name in ("from", "to", "text"):
            if not params.get(name):
                return "2", f"Missing {name} param"
        if not _DIGITS.match(params["to"]):
            return "3", "Invalid to address"
        return None

    def _accept(self, params: Mapping[str, str]) -> web.Response:
        text = params["text"]
        unicode = params.get("type") == "unicode"
        single, per_part = (70, 67) if unicode else (160, 153)
        length = len(text) if unicode else sum(2 if c in "\f^{}\\[~]|€" else 1 for c in text)
        parts = 1 if length <= single else -(-length // per_part)
        messages = [
            {
                "to": params["to"], "message-id": f"{next(self._ids):016X}", "status": "0",
                "remaining-balance": f"{self.balance:.8f}", "message-price": "0.03330000", "network": "23410",
            }
            for _ in range(parts)
        ]
        return web.json_response({"message-count": str(parts), "messages": messages})

    async def _balance(self, request: web.Request) -> web.Response:
        user, password = _basic(request.headers.get("Authorization", ""))
        if not user:
            user, password = request.query.get("api_key", ""), request.query.get("api_secret", "")
        record = VonageRequest("GET", request.path, dict(request.query), dict(request.headers), "")
        self.requests.append(record)
        if user != self.api_key or password != self.api_secret:
            return self._answer(record, web.json_response({"error-code": "401", "error-code-label": "authentication failed"}, status=401))
        return self._answer(record, web.json_response({"value": self.balance, "autoReload": False}))

    def _answer(self, record: VonageRequest, response: web.Response) -> web.Response:
        record.status = response.status
        if response.content_type == "application/json" and isinstance(response.body, bytes):
            record.answer = json.loads(response.body)
        self._notify()
        return response


def _refused(status: str, text: str) -> web.Response:
    return web.json_response({"message-count": "1", "messages": [{"status": status, "error-text": text}]})


def _basic(authorization: str) -> tuple[str, str]:
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        return "", ""
    try:
        user, _, password = base64.b64decode(encoded).decode().partition(":")
    except ValueError:
        return "", ""
    return user, password


# -- callbacks as Vonage sends them ------------------------------------------------------------


def receipt(message_id: str, status: str, *, client_ref: str | None = None, err_code: str = "0", **extra: str) -> dict[str, str]:
    """A delivery receipt's fields, as Vonage sends them."""
    params = {
        "msisdn": PHONE.removeprefix("+"), "to": SENDER, "network-code": "23410", "messageId": message_id, "price": "0.03330000",
        "status": status, "scts": "2001011400", "err-code": err_code, "api-key": API_KEY, "message-timestamp": "2020-01-01 14:00:00",
    }
    if client_ref is not None:
        params["client-ref"] = client_ref
    return params | extra


def inbound(text: str, *, message_id: str = "0A0000000123ABCD1", **extra: str) -> dict[str, str]:
    """An inbound SMS's fields, as Vonage sends them."""
    keyword = text.split()[0].upper() if text.split() else ""
    params = {
        "msisdn": PHONE.removeprefix("+"), "to": "447700900000", "messageId": message_id, "text": text, "type": "text",
        "keyword": keyword, "api-key": API_KEY, "message-timestamp": "2020-01-01 12:00:00",
    }
    return params | extra


def signed(params: Mapping[str, str], at: float, *, secret: str = SIGNATURE_SECRET, method: str = "md5hash") -> dict[str, str]:
    """``params`` with ``timestamp``, ``nonce`` and ``sig``, as a signed Vonage callback carries them."""
    with_time = {**params, "timestamp": str(int(at)), "nonce": "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"}
    return with_time | {"sig": sign(with_time, secret, method).upper()}


def form_request(url: str, params: Mapping[str, str]) -> InboundRequest:
    return InboundRequest(
        method="POST", url=url, headers={"Content-Type": "application/x-www-form-urlencoded"}, query={}, body=urlencode(params).encode()
    )


def _genuine(_fake: FakeVonage, now: float) -> InboundRequest:
    return form_request("https://tidings.example.com/api/v1/webhooks/conformance-vonage", signed(receipt("0B00000127FDBC63", "delivered"), now))


def _forged(_fake: FakeVonage, now: float) -> InboundRequest:
    return form_request(
        "https://tidings.example.com/api/v1/webhooks/conformance-vonage",
        signed(receipt("0B00000127FDBC63", "delivered"), now, secret="not-the-signature-secret"),
    )


def serve() -> AbstractAsyncContextManager[FakeVonage]:
    return FakeVonage().serving()


KIT = Kit(
    plugin=VonageProvider,
    serve=serve,
    config=lambda fake: {
        "api_key": API_KEY, "api_secret": API_SECRET, "from": SENDER, "signature_secret": SIGNATURE_SECRET,
        "base_url": fake.url, "timeout_seconds": FAST_TIMEOUT,
    },
    message=outbound("sms", PHONE, {"phone": PHONE}),
    secrets=(API_SECRET, SIGNATURE_SECRET),
    genuine_webhook=_genuine,
    forged_webhook=_forged,
)
