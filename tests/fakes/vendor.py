"""A fake SMS vendor on loopback that can be told to misbehave, and the plugin that talks to it.

Delivery-engine tests (retries, failover, circuit breakers, throttling, crash recovery) need a
vendor that fails on cue and remembers what it saw. This one speaks a small REST API in the
style of Twilio / MessageBird, with Stripe-style idempotency keys::

    POST /v1/messages      Authorization: Bearer <token>      [Idempotency-Key: <key>]
    {"to": "+14155550100", "body": "Your code is 1234", "from": "ACME"}     ("from" optional)

    201 {"id": "msg_00000001", "status": "queued"}           (a replayed key: same id, header
                                                              Idempotent-Replayed: true)
    400 {"error": {"code": "missing_to" | "missing_body" | "invalid_number", "message": ...}}
    401 {"error": {"code": "unauthorized", ...}}
    429 + Retry-After: <seconds>, 500, 503                   (transient, same error shape)

What each request gets is decided in this order:

1. an outage (:meth:`FakeVendor.go_down`): every request gets 500 (or the status given);
2. a wrong or missing token: 401; a body without ``to`` or ``body``: 400 (no script consumed);
3. the next scripted outcome for the recipient (:meth:`FakeVendor.script`), else for any
   recipient (``script(ANY_RECIPIENT, ...)``), else :attr:`FakeVendor.default_outcome`.

Outcomes: ``ok``; ``ok_no_receipt`` (accepted, but no delivery receipt follows); ``timeout``
(the request is held until :meth:`FakeVendor.release` — then it is accepted, like a vendor that
was slow but did take the message — or until the client gives up and disconnects);
``500`` / ``503``; ``429`` (with ``Retry-After: retry_after``); ``400`` (``invalid_number``);
``absent`` (409 ``absent_subscriber``: the recipient cannot be reached for now).

With a ``receipt_url``, every accepted message (``ok``) is followed by a delivery receipt
``{"id", "status": "delivered", "to", "at"}`` POSTed there (with ``receipt_first``, before the
send is answered: the vendor waits for the callback's answer, as a fast vendor's callback can
outrun its own API response), signed with the token
(``X-Fake-Timestamp: <unix seconds>``, ``X-Fake-Signature: hex HMAC-SHA256 of "<timestamp>." + body``);
:class:`FakeVendorProvider` verifies it (refusing timestamps more than five minutes off its
clock) and parses it. A callback ``{"type": "reply", "id", "from", "to", "body", "in_reply_to"}``
is an inbound SMS reply.

In a test::

    async with FakeVendor(token="t0k") as vendor:          # serves http://127.0.0.1:<free port>
        vendor.script("+14155550100", ["timeout", "500", "ok"])
        ...                                                # point the gateway at vendor.url
        await vendor.wait_for(lambda v: v.held == 1)       # no sleeping
        vendor.release()
        assert not vendor.overlapping_keys and vendor.max_in_flight <= 64

In its own process (crash and benchmark scenarios)::

    python -m tests.fakes.vendor --port 9000 --token t0k [--receipt-url URL]

driven over HTTP under ``/_fake/``: ``POST script {"to", "outcomes"}``, ``POST default
{"outcome"}``, ``POST down {"status", "requests"}``, ``POST up``, ``POST release``, ``GET state``
(every request, message, and the concurrency figures as JSON); ``GET /readyz`` says it is up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import itertools
import json
import signal
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Final

import aiohttp
from aiohttp import web

from gateway import (
    RECIPIENT_UNAVAILABLE,
    DeliveryError,
    InboundReply,
    InboundRequest,
    OutboundMessage,
    Provider,
    ProviderLimits,
    SendReceipt,
    StatusUpdate,
    TransientDeliveryError,
    WebhookVerificationError,
)
from gateway.provider_kit import VendorError, failure, retry_after_seconds, timeout_of, vendor_call

PLUGIN_NAME: Final = "fake_vendor"
ANY_RECIPIENT: Final = "*"
OK: Final = "ok"
OK_NO_RECEIPT: Final = "ok_no_receipt"
TIMEOUT: Final = "timeout"
# Faults the vendor answers straight away: outcome → (HTTP status, vendor error code).
FAULTS: Final[Mapping[str, tuple[int, str]]] = {
    "400": (400, "invalid_number"),
    "429": (429, "rate_limited"),
    "500": (500, "internal_error"),
    "503": (503, "service_unavailable"),
    "absent": (409, "absent_subscriber"),  # the handset is off or out of coverage: the recipient's side, for now
}
OUTCOMES: Final = frozenset({OK, OK_NO_RECEIPT, TIMEOUT, *FAULTS})
SIGNATURE_HEADER: Final = "X-Fake-Signature"
TIMESTAMP_HEADER: Final = "X-Fake-Timestamp"
SIGNATURE_TOLERANCE: Final = 300.0
REPLAYED_HEADER: Final = "Idempotent-Replayed"
_SESSION: Final = web.AppKey("fake_vendor_receipt_session", aiohttp.ClientSession)


@dataclass
class VendorRequest:
    """One ``POST /v1/messages`` as the vendor saw it, and what it answered.

    ``status`` stays None while the request is held and for good if the client gave up first
    (``abandoned``): the vendor never got to answer it.
    """

    at: float
    to: str | None
    body: str | None
    sender: str | None
    idempotency_key: str | None
    authorized: bool
    outcome: str = ""
    status: int | None = None
    message_id: str | None = None
    replayed: bool = False
    abandoned: bool = False
    answered_at: float | None = None


@dataclass(frozen=True)
class VendorMessage:
    """A message the vendor accepted: recorded once per idempotency key, however often sent."""

    id: str
    to: str
    body: str
    sender: str | None
    idempotency_key: str | None
    at: float


@dataclass
class _Outage:
    status: int
    remaining: int | None  # requests still to refuse; None: until come_up()


class FakeVendor:
    """The fake vendor's state and its aiohttp application (``app``).

    Serve it with ``async with FakeVendor() as vendor`` (a free port on 127.0.0.1), with
    pytest-aiohttp's ``aiohttp_server(vendor.app)`` (then set ``vendor.url``), or standalone with
    :func:`main`. ``clock`` stamps the records; give it the test's clock to compare with the
    gateway's times.
    """

    def __init__(
        self, *, token: str = "fake-token", receipt_url: str | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.token = token
        self.receipt_url = receipt_url
        self.receipt_first = False
        self.clock = clock
        self.default_outcome = OK
        self.retry_after = 1
        self.url = ""
        self.requests: list[VendorRequest] = []
        self.messages: list[VendorMessage] = []
        self.receipts: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.overlapping_keys: set[str] = set()
        self._scripts: dict[str, deque[str]] = {}
        self._outage: _Outage | None = None
        self._held: list[asyncio.Event] = []
        self._keys_in_flight: dict[str, int] = {}
        self._accepted: dict[str, str] = {}  # idempotency key → message id
        self._ids = itertools.count(1)
        self._changed = asyncio.Event()
        self._receipt_tasks: dict[str, asyncio.Task[None]] = {}  # message id → its receipt on the way
        self._runner: web.AppRunner | None = None
        self.app = self._build_app()

    # -- what tests call ---------------------------------------------------------------------

    def script(self, to: str, outcomes: list[str]) -> None:
        """Queue ``outcomes`` for requests to ``to`` (or ``ANY_RECIPIENT``), played in order."""
        unknown = [outcome for outcome in outcomes if outcome not in OUTCOMES]
        if unknown:
            raise ValueError(f"unknown outcomes {unknown}; known: {sorted(OUTCOMES)}")
        self._scripts.setdefault(to, deque()).extend(outcomes)

    def go_down(self, *, status: int = 500, requests: int | None = None) -> None:
        """Refuse everything with ``status``: for the next ``requests`` requests, or until :meth:`come_up`."""
        self._outage = _Outage(status, requests)

    def come_up(self) -> None:
        self._outage = None

    @property
    def is_down(self) -> bool:
        return self._outage is not None

    @property
    def held(self) -> int:
        """Requests held by a ``timeout`` outcome right now."""
        return len(self._held)

    def release(self) -> None:
        """Let every held request go on; each is then accepted as ``ok`` would be."""
        for event in self._held:
            event.set()

    async def wait_for(self, predicate: Callable[[FakeVendor], bool], timeout: float = 5.0) -> None:
        """Return once ``predicate(vendor)`` holds, re-checked after every change the vendor sees."""
        async with asyncio.timeout(timeout):
            while not predicate(self):
                await self._changed.wait()

    def messages_to(self, to: str) -> list[VendorMessage]:
        return [message for message in self.messages if message.to == to]

    def provider_policy(self, instance: str, policy_dir: Path) -> str:
        """The ``providers:`` entry (indented for that section) for an instance using this vendor.

        The token goes to ``secrets/<instance>-token`` under ``policy_dir``: policies never
        hold a secret in clear. Register the plugin in the test's catalog as ``PLUGIN_NAME``.
        """
        secret = policy_dir / "secrets" / f"{instance}-token"
        secret.parent.mkdir(parents=True, exist_ok=True)
        secret.write_text(self.token)
        config = f"{{url: {json.dumps(self.url)}, token: {{$file: secrets/{instance}-token}}}}"
        return f"  {instance}:\n    plugin: {PLUGIN_NAME}\n    config: {config}\n"

    def state(self) -> dict[str, Any]:
        """Everything the vendor recorded, as JSON-ready values (what ``GET /_fake/state`` shows)."""
        return {
            "requests": [asdict(request) for request in self.requests],
            "messages": [asdict(message) for message in self.messages],
            "receipts": self.receipts,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "held": self.held,
            "overlapping_keys": sorted(self.overlapping_keys),
        }

    # -- serving -----------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on ``host:port`` (0: a free port); returns and sets :attr:`url`."""
        # handler_cancellation: a client that gives up ends its request here too, so in-flight
        # figures mean "connections open", as the client sees them.
        self._runner = web.AppRunner(self.app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        bound_host, bound_port = self._runner.addresses[0][:2]
        self.url = f"http://{bound_host}:{bound_port}"
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeVendor:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    def _build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/messages", self._post_message)
        app.router.add_get("/v1/account", self._get_account)
        app.router.add_get("/readyz", _ready)
        app.router.add_routes(_control_routes(self))
        app.cleanup_ctx.append(self._receipt_session)
        app.on_shutdown.append(self._release_on_shutdown)
        return app

    async def _release_on_shutdown(self, _app: web.Application) -> None:
        self.release()

    async def _receipt_session(self, app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            app[_SESSION] = session
            yield
            if self._receipt_tasks:
                await asyncio.gather(*self._receipt_tasks.values(), return_exceptions=True)

    # -- the vendor API ----------------------------------------------------------------------

    async def _get_account(self, request: web.Request) -> web.Response:
        """``GET /v1/account``: who the token belongs to (what a credentials check asks)."""
        if self.is_down:
            return _error(503, "service_unavailable", "The vendor is down.")
        if not hmac.compare_digest(request.headers.get("Authorization", "").encode(), f"Bearer {self.token}".encode()):
            return _error(401, "unauthorized", "Authenticate with Authorization: Bearer <token>.")
        return web.json_response({"name": "Fake Vendor test account", "status": "active"})

    async def _post_message(self, request: web.Request) -> web.Response:
        payload = await _json_object(request)
        record = self._record(request, payload)
        with self._in_flight(record.idempotency_key):
            try:
                response = await self._answer(record)
            except asyncio.CancelledError:
                record.abandoned = True
                raise
        record.status, record.answered_at = response.status, self.clock()
        self._notify()
        return response

    def _record(self, request: web.Request, payload: Mapping[str, Any]) -> VendorRequest:
        authorization = request.headers.get("Authorization", "")
        record = VendorRequest(
            at=self.clock(),
            to=_text(payload.get("to")),
            body=_text(payload.get("body")),
            sender=_text(payload.get("from")),
            idempotency_key=request.headers.get("Idempotency-Key"),
            authorized=hmac.compare_digest(authorization.encode(), f"Bearer {self.token}".encode()),
        )
        self.requests.append(record)
        self._notify()
        return record

    @contextlib.contextmanager
    def _in_flight(self, key: str | None) -> Iterator[None]:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        if key is not None:
            self._keys_in_flight[key] = self._keys_in_flight.get(key, 0) + 1
            if self._keys_in_flight[key] > 1:
                self.overlapping_keys.add(key)
        try:
            yield
        finally:
            self.in_flight -= 1
            if key is not None:
                self._keys_in_flight[key] -= 1
                if not self._keys_in_flight[key]:
                    del self._keys_in_flight[key]
            self._notify()

    async def _answer(self, record: VendorRequest) -> web.Response:
        if (outage := self._take_outage()) is not None:
            record.outcome = "down"
            return _error(outage, "service_down", "The vendor is down.")
        if not record.authorized:
            record.outcome = "unauthorized"
            return _error(401, "unauthorized", "Authenticate with Authorization: Bearer <token>.")
        if record.to is None or record.body is None:
            record.outcome = "bad_request"
            missing = "to" if record.to is None else "body"
            return _error(400, f"missing_{missing}", f"'{missing}' is required and must be a string.")
        record.outcome = self._next_outcome(record.to)
        return await self._play(record)

    def _take_outage(self) -> int | None:
        outage = self._outage
        if outage is None:
            return None
        if outage.remaining is not None:
            outage.remaining -= 1
            if outage.remaining <= 0:
                self._outage = None
        return outage.status

    def _next_outcome(self, to: str) -> str:
        for key in (to, ANY_RECIPIENT):
            if queue := self._scripts.get(key):
                return queue.popleft()
        return self.default_outcome

    async def _play(self, record: VendorRequest) -> web.Response:
        if record.outcome in FAULTS:
            status, code = FAULTS[record.outcome]
            headers = {"Retry-After": str(self.retry_after)} if status == 429 else {}
            return _error(status, code, f"Scripted {record.outcome}.", headers)
        if record.outcome == TIMEOUT:
            await self._hold()
        response = self._accept(record, receipt=record.outcome != OK_NO_RECEIPT)
        receipt = self._receipt_tasks.get(record.message_id or "")
        if self.receipt_first and receipt is not None:
            await asyncio.shield(receipt)
        return response

    async def _hold(self) -> None:
        released = asyncio.Event()
        self._held.append(released)
        self._notify()
        try:
            await released.wait()
        finally:
            self._held.remove(released)

    def _accept(self, record: VendorRequest, *, receipt: bool) -> web.Response:
        key = record.idempotency_key
        if key is not None and key in self._accepted:
            record.message_id, record.replayed = self._accepted[key], True
            return _created(record.message_id, {REPLAYED_HEADER: "true"})
        assert record.to is not None and record.body is not None
        message = VendorMessage(f"msg_{next(self._ids):08d}", record.to, record.body, record.sender, key, self.clock())
        self.messages.append(message)
        record.message_id = message.id
        if key is not None:
            self._accepted[key] = message.id
        if receipt and self.receipt_url:
            self._spawn_receipt(message)
        return _created(message.id)

    def _spawn_receipt(self, message: VendorMessage) -> None:
        task = asyncio.get_running_loop().create_task(self._send_receipt(message))
        self._receipt_tasks[message.id] = task
        task.add_done_callback(lambda _task: self._receipt_tasks.pop(message.id, None))

    async def _send_receipt(self, message: VendorMessage) -> None:
        assert self.receipt_url is not None
        receipt = {"id": message.id, "status": "delivered", "to": message.to, "at": self.clock()}
        body = json.dumps(receipt).encode()
        headers = {"Content-Type": "application/json", **signed_headers(self.token, body, int(time.time()))}
        try:
            async with self.app[_SESSION].post(self.receipt_url, data=body, headers=headers) as response:
                receipt["callback_status"] = response.status
        except (aiohttp.ClientError, asyncio.TimeoutError) as err:
            receipt["callback_error"] = repr(err)
        self.receipts.append(receipt)
        self._notify()

    def _notify(self) -> None:
        """Wake every :meth:`wait_for`; each waits on a fresh event after it re-checks."""
        self._changed.set()
        self._changed = asyncio.Event()


def sign(token: str, body: bytes, timestamp: int) -> str:
    """The callback signature: hex HMAC-SHA256 of ``<timestamp>.`` and the raw body, keyed with the API token."""
    return hmac.new(token.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signed_headers(token: str, body: bytes, timestamp: int) -> dict[str, str]:
    """The headers that authenticate a callback of ``body`` sent at ``timestamp``."""
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: sign(token, body, timestamp)}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        payload = await request.json()
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}


def _error(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status, headers=headers)


def _created(message_id: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response({"id": message_id, "status": "queued"}, status=201, headers=headers)


async def _ready(_request: web.Request) -> web.Response:
    return web.json_response({"ready": True})


# -- control API for the fake in its own process -----------------------------------------------


def _control_routes(vendor: FakeVendor) -> web.RouteTableDef:
    """``/_fake/*``: the same calls a test makes on the object, for a fake in another process."""
    routes = web.RouteTableDef()

    @routes.post("/_fake/script")
    async def script(request: web.Request) -> web.Response:
        body = await _json_object(request)
        try:
            vendor.script(str(body.get("to", ANY_RECIPIENT)), list(body.get("outcomes", [])))
        except ValueError as err:
            return _error(400, "unknown_outcome", str(err))
        return web.json_response({"ok": True})

    @routes.post("/_fake/default")
    async def default(request: web.Request) -> web.Response:
        outcome = (await _json_object(request)).get("outcome")
        if outcome not in OUTCOMES:
            return _error(400, "unknown_outcome", f"known outcomes: {sorted(OUTCOMES)}")
        vendor.default_outcome = outcome
        return web.json_response({"ok": True})

    @routes.post("/_fake/down")
    async def down(request: web.Request) -> web.Response:
        body = await _json_object(request)
        vendor.go_down(status=int(body.get("status", 500)), requests=body.get("requests"))
        return web.json_response({"ok": True})

    @routes.post("/_fake/up")
    async def up(_request: web.Request) -> web.Response:
        vendor.come_up()
        return web.json_response({"ok": True})

    @routes.post("/_fake/release")
    async def release(_request: web.Request) -> web.Response:
        vendor.release()
        return web.json_response({"ok": True})

    @routes.get("/_fake/state")
    async def state(_request: web.Request) -> web.Response:
        return web.json_response(vendor.state())

    return routes


# -- the provider plugin that talks to the fake ------------------------------------------------

# Vendor HTTP statuses with a meaning of their own; other 5xx are transient, other 4xx permanent.
ERRORS: Final[Mapping[str, VendorError]] = {
    "invalid_number": VendorError(transient=False, meaning="not a valid phone number", code="invalid_recipient"),
    "unauthorized": VendorError(transient=False, meaning="check this instance's `token`", credentials=True),
    "rate_limited": VendorError(transient=True, meaning="the vendor is throttling us"),
    "absent_subscriber": VendorError(transient=True, meaning="the handset is off or out of coverage", code=RECIPIENT_UNAVAILABLE),
    "idempotency_in_progress": VendorError(transient=True, meaning="still working on a request with this key"),
}
RECEIPT_STATUSES: Final[Mapping[str, str]] = {"delivered": "delivered", "failed": "failed", "undelivered": "failed"}


class FakeVendorProvider(Provider):
    """SMS through :class:`FakeVendor`; a test registers it in its catalog as ``PLUGIN_NAME``."""

    channels = frozenset({"sms"})
    config_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "required": ["url", "token"],
        "properties": {
            "url": {"type": "string", "description": "Base URL of the vendor API, e.g. http://127.0.0.1:9000"},
            "token": {"type": "string", "x-secret": True},
            "timeout_seconds": {"type": "number", "exclusiveMinimum": 0, "default": 10},
        },
        "additionalProperties": False,
    }
    limits = ProviderLimits(receipts=True, replies=True, idempotency=True)

    async def send(self, message: OutboundMessage) -> SendReceipt:
        url = self.config["url"].rstrip("/") + "/v1/messages"
        async with vendor_call(
            self.context.session, "POST", url, timeout=timeout_of(self.config), vendor="the fake vendor",
            json=self._payload(message), headers=self._headers(message),
        ) as response:
            answer = await _answer_json(response)
            return _receipt(response.status, response.headers, answer)

    def _payload(self, message: OutboundMessage) -> dict[str, Any]:
        payload: dict[str, Any] = {"to": message.to, "body": message.body}
        if message.sender is not None:
            payload["from"] = message.sender.address
        return payload

    def _headers(self, message: OutboundMessage) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.config['token']}", "Idempotency-Key": message.idempotency_key}

    async def check_credentials(self) -> str | None:
        url = self.config["url"].rstrip("/") + "/v1/account"
        headers = {"Authorization": f"Bearer {self.config['token']}"}
        async with vendor_call(self.context.session, "GET", url, timeout=timeout_of(self.config), vendor="the fake vendor", headers=headers) as response:
            answer = await _answer_json(response)
            if response.status != 200:
                raise _refusal(response.status, response.headers, answer)
        return f"account {answer.get('name')!r} ({answer.get('status')})"

    async def verify_webhook(self, request: InboundRequest) -> None:
        headers = {name.lower(): value for name, value in request.headers.items()}
        try:
            timestamp = int(headers.get(TIMESTAMP_HEADER.lower(), ""))
        except ValueError:
            raise WebhookVerificationError("callback timestamp is missing or malformed") from None
        if abs(self.context.clock.now() - timestamp) > SIGNATURE_TOLERANCE:
            raise WebhookVerificationError("callback timestamp is outside the tolerance (a replay?)")
        given = headers.get(SIGNATURE_HEADER.lower(), "")
        if not hmac.compare_digest(given, sign(self.config["token"], request.body, timestamp)):
            raise WebhookVerificationError("callback signature does not match")

    async def parse_webhook(self, request: InboundRequest) -> list[StatusUpdate | InboundReply]:
        receipt = json.loads(request.body)
        if receipt.get("type") == "reply":
            return [
                InboundReply(
                    sender=receipt["from"], body=receipt["body"], channel="sms", in_reply_to=receipt.get("in_reply_to"),
                    provider_message_id=receipt.get("id"), detail={"to": receipt.get("to")},
                )
            ]
        status = RECEIPT_STATUSES.get(receipt.get("status"))
        if status is None:
            return []
        return [StatusUpdate(receipt["id"], status, occurred_at=receipt.get("at"), detail={"vendor_status": receipt["status"]})]


async def _answer_json(response: aiohttp.ClientResponse) -> dict[str, Any]:
    try:
        answer = await response.json(content_type=None)
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


def _receipt(status: int, headers: Mapping[str, str], answer: Mapping[str, Any]) -> SendReceipt:
    if 200 <= status < 300:
        message_id = answer.get("id")
        if not isinstance(message_id, str):
            raise TransientDeliveryError(f"the vendor answered {status} without a message id")
        return SendReceipt(provider_message_id=message_id, detail={"http_status": status})
    raise _refusal(status, headers, answer)


def _refusal(status: int, headers: Mapping[str, str], answer: Mapping[str, Any]) -> DeliveryError:
    error = answer.get("error")
    code, reason = (error.get("code"), error.get("message")) if isinstance(error, dict) else (None, None)
    return failure(
        ERRORS, code, reason, http_status=status, retry_after=retry_after_seconds(headers.get("Retry-After")), vendor="the fake vendor"
    )


# -- standalone ----------------------------------------------------------------------------------


async def serve(host: str, port: int, token: str, receipt_url: str | None) -> None:
    """Serve until SIGTERM or SIGINT; prints the URL once listening (for whoever started it)."""
    vendor = FakeVendor(token=token, receipt_url=receipt_url, clock=time.time)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"fake vendor listening on {await vendor.start(host, port)}", flush=True)
    try:
        await stop.wait()
    finally:
        await vendor.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.vendor", description="A fake SMS vendor on loopback.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port (printed)")
    parser.add_argument("--token", default="fake-token")
    parser.add_argument("--receipt-url", help="POST a signed delivery receipt here after each accepted message")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.port, args.token, args.receipt_url))
    return 0


if __name__ == "__main__":
    sys.exit(main())
