"""A fake ntfy server on loopback, and this plugin's conformance kit (:data:`KIT`).

It speaks the part of ntfy the plugin uses, in ntfy's own shapes:

    POST /            JSON publish {"topic", "message", "title", "priority", "tags", "markdown", "sequence_id"}
                      200 {"id", "time", "expires", "event": "message", "topic", "message", …}
    GET  /v1/account  200 {"username", "role", …}   ("*" / "anonymous" without credentials)
    GET  /v1/health   200 {"healthy": true}

    errors            {"code": 40101, "http": 401, "error": "unauthorized", "link": …}

Authentication as ntfy does it: ``Authorization: Bearer <token>`` or Basic with a user and
password (or an empty user and the token as password). Wrong credentials get 401 (40101);
no credentials where anonymous publishing is off, or a topic the user may not write, get 403
(40301). The JSON body is checked: a missing or invalid topic is 400 (40009), a priority that
is not an integer 1-5 is 400 (40007), a body that is not a JSON object is 400 (40017). Being a
test double, it is stricter than ntfy in one way: a field ntfy does not document is refused
(400), so a typo in the plugin's payload cannot pass unnoticed.

Accepted messages are recorded in :attr:`FakeNtfy.messages`. :meth:`FakeNtfy.fail_next`
makes the next publish fail: the conformance faults ``timeout`` (held until the client gives
up or the fake stops), ``5xx`` and ``reject_recipient`` (topic disallowed, 40010), plus
``429`` (42901, with ``Retry-After`` if asked), ``message_limit`` (429, 42908), ``413``
(41303), ``502`` (a proxy's HTML error page) and ``not_ntfy`` (200 with an HTML page).

In a test::

    async with FakeNtfy(token=TOKEN).serving() as ntfy:
        ...  # point the provider at ntfy.url
        assert ntfy.messages[0]["topic"] == "alerts-7f3a"
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import itertools
import re
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.conformance import FAST_TIMEOUT, Kit, outbound
from tidings_ntfy.provider import NtfyProvider

TOKEN: Final = "tk_k3v9xq2m7w1p8r4t6y0u5i2o9a1s3"
TOKEN_OWNER: Final = "tidings-bot"
USERNAME: Final = "tidings"
PASSWORD: Final = "correct-horse-battery-staple"
TOPIC: Final = "alerts-7f3a"
LINK: Final = "https://ntfy.sh/docs/publish/#authentication"
JSON_FIELDS: Final = frozenset(
    {
        "topic", "message", "title", "tags", "priority", "actions", "click", "attach", "markdown", "icon",
        "filename", "delay", "email", "call", "sequence_id",
    }
)
_TOPIC: Final = re.compile(r"[-_A-Za-z0-9]{1,64}")
FAULTS: Final = frozenset({"timeout", "5xx", "reject_recipient", "429", "message_limit", "413", "502", "not_ntfy"})


def ntfy_error(status: int, code: int | None, error: str, link: str | None = None, headers: Mapping[str, str] | None = None) -> web.Response:
    """An error the way ntfy answers one."""
    body: dict[str, Any] = {"http": status, "error": error}
    if code is not None:
        body = {"code": code, **body}
    if link:
        body["link"] = link
    return web.json_response(body, status=status, headers=headers)


@dataclass
class _Fault:
    kind: str
    retry_after: int | None = None


@dataclass
class FakeNtfy:
    """An ntfy server's state; serve it with ``async with fake.serving()`` (127.0.0.1, a free port).

    ``token``, ``users`` (name → password) are the credentials it accepts; ``anonymous`` lets
    requests without credentials publish; ``denied`` lists topics no one may write;
    ``accounts=False`` is a server from before ntfy 2.0, which has no ``/v1/account``.
    """

    token: str | None = TOKEN
    users: Mapping[str, str] = field(default_factory=lambda: {USERNAME: PASSWORD})
    anonymous: bool = False
    denied: frozenset[str] = frozenset()
    accounts: bool = True
    url: str = ""
    messages: list[dict[str, Any]] = field(default_factory=list)
    requests: list[tuple[str, str, Mapping[str, str]]] = field(default_factory=list)
    _faults: list[_Fault] = field(default_factory=list)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def fail_next(self, fault: str, *, retry_after: int | None = None) -> None:
        """Make the next publish fail; see the module docstring for the faults."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; known: {sorted(FAULTS)}")
        self._faults.append(_Fault(fault, retry_after))

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[FakeNtfy]:
        app = web.Application()
        app.router.add_post("/", self._publish)
        app.router.add_get("/v1/account", self._account)
        app.router.add_get("/v1/health", self._health)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        self.url = str(server.make_url("")).rstrip("/")
        try:
            yield self
        finally:
            self._stopping.set()  # release held "timeout" requests, so stopping never hangs
            await server.close()

    # --- ntfy's endpoints -----------------------------------------------------------------------

    async def _publish(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path, dict(request.headers)))
        who = self._authenticate(request)
        if isinstance(who, web.Response):
            return who
        try:
            body = await request.json()
        except ValueError:
            return ntfy_error(400, 40017, "invalid request: request body must be message JSON", "https://ntfy.sh/docs/publish/#publish-as-json")
        if not isinstance(body, dict):
            return ntfy_error(400, 40017, "invalid request: request body must be message JSON", "https://ntfy.sh/docs/publish/#publish-as-json")
        problem = _shape_problem(body)
        if problem is not None:
            return problem
        if (who is None and not self.anonymous) or body["topic"] in self.denied:
            return ntfy_error(403, 40301, "forbidden", LINK)
        fault = self._faults.pop(0) if self._faults else None
        if fault is not None:
            answer = await self._fail(fault)
            if answer is not None:
                return answer
        return web.json_response(self._accept(body, who))

    async def _account(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path, dict(request.headers)))
        if not self.accounts:
            return ntfy_error(404, 40401, "page not found")
        who = self._authenticate(request)
        if isinstance(who, web.Response):
            return who
        if who is None:
            return web.json_response({"username": "*", "role": "anonymous", "language": "en"})
        return web.json_response({"username": who, "role": "user", "language": "en"})

    async def _health(self, _request: web.Request) -> web.Response:
        return web.json_response({"healthy": True})

    # --- helpers ---------------------------------------------------------------------------------

    def _authenticate(self, request: web.Request) -> str | None | web.Response:
        """The user the request authenticates as, None for anonymous, or ntfy's 401."""
        header = request.headers.get("Authorization")
        if header is None:
            return None
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() == "bearer" and self.token is not None and credentials == self.token:
            return TOKEN_OWNER
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(credentials, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                user, password = "", ""
            if user == "" and self.token is not None and password == self.token:
                return TOKEN_OWNER
            if user and self.users.get(user) == password:
                return user
        return ntfy_error(401, 40101, "unauthorized", LINK)

    async def _fail(self, fault: _Fault) -> web.Response | None:
        if fault.kind == "timeout":
            await self._stopping.wait()
            return ntfy_error(500, 50001, "internal server error")
        if fault.kind == "5xx":
            return ntfy_error(500, 50001, "internal server error")
        if fault.kind == "reject_recipient":
            return ntfy_error(400, 40010, "invalid request: topic name is disallowed")
        if fault.kind in ("429", "message_limit"):
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else None
            if fault.kind == "429":
                return ntfy_error(429, 42901, "limit reached: too many requests, please be nice", "https://ntfy.sh/docs/publish/#limitations", headers)
            return ntfy_error(429, 42908, "limit reached: too many messages", "https://ntfy.sh/docs/publish/#limitations", headers)
        if fault.kind == "413":
            return ntfy_error(413, 41303, "JSON body too large")
        if fault.kind == "502":
            return web.Response(status=502, text="<html><body><h1>502 Bad Gateway</h1></body></html>", content_type="text/html")
        if fault.kind == "not_ntfy":
            return web.Response(status=200, text="<html><body>Welcome to nginx!</body></html>", content_type="text/html")
        return None

    def _accept(self, body: dict[str, Any], who: str | None) -> dict[str, Any]:
        now = int(time.time())
        message_id = f"{next(self._ids):012d}"
        stored = {**body, "id": message_id, "user": who}
        self.messages.append(stored)
        answer: dict[str, Any] = {
            "id": message_id, "time": now, "expires": now + 43200, "event": "message", "topic": body["topic"],
            "message": body.get("message") or "triggered",
        }
        for key in ("title", "priority", "tags"):
            if key in body:
                answer[key] = body[key]
        if body.get("sequence_id") and body["sequence_id"] != message_id:
            answer["sequence_id"] = body["sequence_id"]
        return answer


def _shape_problem(body: Mapping[str, Any]) -> web.Response | None:
    """ntfy's answer to a malformed publish, or None when the shape is right."""
    unknown = sorted(set(body) - JSON_FIELDS)
    if unknown:
        return ntfy_error(400, None, f"fake ntfy: undocumented fields {unknown}", "https://ntfy.sh/docs/publish/#publish-as-json")
    topic = body.get("topic")
    if not isinstance(topic, str) or not _TOPIC.fullmatch(topic):
        return ntfy_error(400, 40009, "invalid request: topic invalid")
    priority = body.get("priority")
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int) or not 1 <= priority <= 5):
        return ntfy_error(400, 40007, "invalid priority parameter", "https://ntfy.sh/docs/publish/#message-priority")
    for key in ("message", "title"):
        if key in body and not isinstance(body[key], str):
            return ntfy_error(400, 40017, "invalid request: request body must be message JSON")
    tags = body.get("tags")
    if tags is not None and (not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags)):
        return ntfy_error(400, 40017, "invalid request: request body must be message JSON")
    if "markdown" in body and not isinstance(body["markdown"], bool):
        return ntfy_error(400, 40017, "invalid request: request body must be message JSON")
    sequence_id = body.get("sequence_id")
    if sequence_id is not None and (not isinstance(sequence_id, str) or not _TOPIC.fullmatch(sequence_id)):
        return ntfy_error(400, None, "invalid request: sequence ID invalid")
    return None


def serve() -> AbstractAsyncContextManager[FakeNtfy]:
    """A fake that takes the kit's token (and nothing anonymous)."""
    return FakeNtfy().serving()


KIT = Kit(
    plugin=NtfyProvider,
    serve=serve,
    config=lambda fake: {"server": fake.url, "token": TOKEN, "timeout_seconds": FAST_TIMEOUT},
    message=outbound("ntfy", TOPIC, {"ntfy_topic": TOPIC}, subject="Disk space"),
    secrets=(TOKEN,),
)
"""The conformance kit, registered under ``tidings.conformance`` as ``ntfy``."""
