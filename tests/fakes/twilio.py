"""A fake Twilio REST API on loopback, the way the twilio plugin sees Twilio; and its conformance kit.

Serves what the plugin calls, checking auth and request shape as Twilio does::

    POST /2010-04-01/Accounts/{AccountSid}/Messages.json   form: To, From | MessagingServiceSid,
                                                           Body | ContentSid [+ ContentVariables],
                                                           [StatusCallback]
    POST /2010-04-01/Accounts/{AccountSid}/Calls.json      form: To, From, Twiml | Url, [StatusCallback]
    GET  /2010-04-01/Accounts/{AccountSid}.json            the account (not with a Standard API key)
    GET  /2010-04-01/Accounts/{AccountSid}/Messages.json   a page of messages (empty)

Basic auth is the account SID and auth token, or an API key SID and secret; anything else gets
Twilio's ``401 {"code": 20003, ...}``. A malformed request gets Twilio's 400 with the matching
code (21604 no To, 21603 no From, 21602 no Body, 21211 a To that is not E.164, 21910 a WhatsApp
To from a non-WhatsApp From, 21656 ContentVariables that are not a JSON object). Success is
``201`` with a ``sid`` (``SM…`` or ``CA…``) and Twilio's resource fields. Everything is recorded
in :attr:`FakeTwilio.requests`.

``fail_next`` plays a conformance fault on the next send (``timeout`` holds the request until
the client gives up or the fake stops; ``5xx`` is Twilio's 500 / 20500; ``reject_recipient`` is
400 / 21211); ``refuse_next(code, status, …)`` answers any Twilio error instead.

The webhook builders sign with the ``twilio`` package's own ``RequestValidator``.
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
from urllib.parse import parse_qsl, urlencode, urlsplit

from aiohttp import web
from twilio.request_validator import RequestValidator

from fakes.loopback import LoopbackFake
from gateway import InboundRequest
from gateway.conformance import FAST_TIMEOUT, Fault, Kit, outbound
from plugins.twilio import TwilioProvider

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "twilio-auth-token-0123456789abcd"
API_KEY_SID = "SK" + "fedcba9876543210" * 2
API_KEY_SECRET = "twilio-api-key-secret-abcdefghij"
FROM = "+15005550006"
PUBLIC_URL = "https://tidings.example.com/api/v1/webhooks/conformance-twilio"
_E164 = re.compile(r"^\+[1-9]\d{1,14}$")


@dataclass
class TwilioRequest:
    """One request as the fake saw it, and what it answered."""

    method: str
    path: str
    form: list[tuple[str, str]]
    headers: dict[str, str]
    authorized: bool
    status: int | None = None
    answer: dict[str, Any] = field(default_factory=dict)

    @property
    def params(self) -> dict[str, str]:
        return dict(self.form)


@dataclass(frozen=True)
class _Refusal:
    status: int
    code: int
    message: str
    headers: Mapping[str, str]


class FakeTwilio(LoopbackFake):
    """Twilio's REST API for one account; ``url`` is its base URL once serving."""

    def __init__(self, *, account_sid: str = ACCOUNT_SID, auth_token: str = AUTH_TOKEN) -> None:
        super().__init__()
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.api_keys = {API_KEY_SID: API_KEY_SECRET}
        self.account_status = "active"
        self.requests: list[TwilioRequest] = []
        self._plan: list[Fault | _Refusal] = []
        self._ids = itertools.count(1)

    # -- what tests call -------------------------------------------------------------------

    def fail_next(self, fault: Fault) -> None:
        self._plan.append(fault)

    def refuse_next(self, code: int, status: int = 400, message: str = "Refused by the fake", headers: Mapping[str, str] | None = None) -> None:
        """Answer the next send with Twilio's error body for ``code``."""
        self._plan.append(_Refusal(status, code, message, dict(headers or {})))

    @property
    def sends(self) -> list[TwilioRequest]:
        """Message and call creations (not the account lookups), in order."""
        return [request for request in self.requests if request.method == "POST"]

    # -- serving -------------------------------------------------------------------------------

    def add_routes(self, router: web.UrlDispatcher) -> None:
        prefix = "/2010-04-01/Accounts/{account}"
        router.add_post(prefix + "/Messages.json", self._messages)
        router.add_post(prefix + "/Calls.json", self._calls)
        router.add_get(prefix + ".json", self._account)
        router.add_get(prefix + "/Messages.json", self._message_list)

    async def _messages(self, request: web.Request) -> web.Response:
        record = await self._record(request)
        if (refused := self._authenticate(request, record)) is not None:
            return refused
        params = record.params
        problem = _message_problem(params)
        if problem is not None:
            return self._answer(record, _error(400, *problem))
        if (planned := await self._play(record)) is not None:
            return planned
        sid = f"SM{next(self._ids):032x}"
        resource = {
            "sid": sid, "account_sid": self.account_sid, "to": params["To"], "from": params.get("From"),
            "messaging_service_sid": params.get("MessagingServiceSid"), "body": params.get("Body", ""),
            "status": "accepted" if "MessagingServiceSid" in params and "From" not in params else "queued",
            "num_segments": "1", "direction": "outbound-api", "api_version": "2010-04-01", "error_code": None,
            "error_message": None, "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}.json",
        }
        return self._answer(record, web.json_response(resource, status=201))

    async def _calls(self, request: web.Request) -> web.Response:
        record = await self._record(request)
        if (refused := self._authenticate(request, record)) is not None:
            return refused
        params = record.params
        problem = _call_problem(params)
        if problem is not None:
            return self._answer(record, _error(400, *problem))
        if (planned := await self._play(record)) is not None:
            return planned
        sid = f"CA{next(self._ids):032x}"
        resource = {
            "sid": sid, "account_sid": self.account_sid, "to": params["To"], "from": params["From"], "status": "queued",
            "direction": "outbound-api", "uri": f"/2010-04-01/Accounts/{self.account_sid}/Calls/{sid}.json",
        }
        return self._answer(record, web.json_response(resource, status=201))

    async def _account(self, request: web.Request) -> web.Response:
        record = await self._record(request)
        if (refused := self._authenticate(request, record)) is not None:
            return refused
        if _basic(request.headers.get("Authorization", ""))[0] in self.api_keys:
            # Standard API keys may not read the Account resource (only Main keys and the auth token can).
            return self._answer(record, _error(401, 20003, "Authenticate"))
        account = {"sid": self.account_sid, "friendly_name": "Acme Notifications", "status": self.account_status, "type": "Full"}
        return self._answer(record, web.json_response(account))

    async def _message_list(self, request: web.Request) -> web.Response:
        record = await self._record(request)
        if (refused := self._authenticate(request, record)) is not None:
            return refused
        size = int(request.query.get("PageSize", "50"))
        page = {"messages": [], "page": 0, "page_size": size, "first_page_uri": request.path_qs, "next_page_uri": None}
        return self._answer(record, web.json_response(page))

    async def _record(self, request: web.Request) -> TwilioRequest:
        form: list[tuple[str, str]] = []
        if request.method == "POST":
            if request.content_type != "application/x-www-form-urlencoded":
                form = []
            else:
                form = [(str(name), str(value)) for name, value in (await request.post()).items()]
        record = TwilioRequest(request.method, request.path, form, dict(request.headers), authorized=False)
        self.requests.append(record)
        self._notify()
        return record

    def _authenticate(self, request: web.Request, record: TwilioRequest) -> web.Response | None:
        user, password = _basic(request.headers.get("Authorization", ""))
        valid = (user == self.account_sid and password == self.auth_token) or (
            user in self.api_keys and password == self.api_keys[user]
        )
        if not valid or request.match_info["account"] != self.account_sid:
            return self._answer(record, _error(401, 20003, "Authenticate"))
        record.authorized = True
        return None

    async def _play(self, record: TwilioRequest) -> web.Response | None:
        planned = self._plan.pop(0) if self._plan else None
        if planned == "timeout":
            await self.held()
            return self._answer(record, _error(503, 20503, "Service Unavailable"))
        if planned == "5xx":
            return self._answer(record, _error(500, 20500, "Internal Server Error"))
        if planned == "reject_recipient":
            return self._answer(record, _error(400, 21211, f"The 'To' number {record.params.get('To')} is not a valid phone number."))
        if isinstance(planned, _Refusal):
            return self._answer(record, _error(planned.status, planned.code, planned.message, planned.headers))
        return None

    def _answer(self, record: TwilioRequest, response: web.Response) -> web.Response:
        record.status = response.status
        if isinstance(response.body, bytes):
            record.answer = json.loads(response.body)
        self._notify()
        return response


def _error(status: int, code: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    body = {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status}
    return web.json_response(body, status=status, headers=headers)


def _basic(authorization: str) -> tuple[str, str]:
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        return "", ""
    try:
        user, _, password = base64.b64decode(encoded).decode().partition(":")
    except ValueError:
        return "", ""
    return user, password


def _message_problem(params: Mapping[str, str]) -> tuple[int, str] | None:
    to, sender = params.get("To"), params.get("From")
    if not to:
        return 21604, "A 'To' phone number is required."
    if not sender and not params.get("MessagingServiceSid"):
        return 21603, "A 'From' phone number is required."
    if not params.get("Body") and not params.get("ContentSid"):
        return 21602, "Message body is required."
    if not _E164.match(to.removeprefix("whatsapp:")):
        return 21211, f"The 'To' number {to} is not a valid phone number."
    if sender and to.startswith("whatsapp:") != sender.startswith("whatsapp:"):
        return 21910, "Invalid 'From' and 'To' pair. 'From' and 'To' should be of the same channel"
    if "ContentVariables" in params:
        try:
            variables = json.loads(params["ContentVariables"])
        except ValueError:
            variables = None
        if not isinstance(variables, dict) or any(not isinstance(v, str) or not v for v in variables.values()):
            return 21656, "The ContentVariables Parameter is invalid."
    return None


def _call_problem(params: Mapping[str, str]) -> tuple[int, str] | None:
    if not params.get("To"):
        return 21201, "No 'To' number is specified"
    if not params.get("From"):
        return 21213, "No 'From' number is specified"
    if not params.get("Twiml") and not params.get("Url"):
        return 21205, "Url parameter is required."
    if not _E164.match(params["To"]):
        return 21217, "Phone number does not appear to be valid"
    return None


# -- callbacks as Twilio signs them ------------------------------------------------------------


def signed_callback(
    url: str, params: Mapping[str, str], *, token: str = AUTH_TOKEN, signed_url: str | None = None, headers: Mapping[str, str] | None = None
) -> InboundRequest:
    """A form-encoded callback to ``url``, signed by ``RequestValidator`` over ``signed_url`` (default: ``url``)."""
    signature = RequestValidator(token).compute_signature(signed_url or url, dict(params))
    all_headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature, **(headers or {})}
    query = dict(_query(url))
    return InboundRequest(method="POST", url=url, headers=all_headers, query=query, body=urlencode(params).encode())


def message_status(sid: str, status: str, *, to: str = "+14155550100", error_code: str | None = None, **extra: str) -> dict[str, str]:
    """A Messages status callback's fields, as Twilio posts them."""
    params = {
        "AccountSid": ACCOUNT_SID, "ApiVersion": "2010-04-01", "From": FROM, "To": to, "MessageSid": sid, "SmsSid": sid,
        "MessageStatus": status, "SmsStatus": status,
    }
    if error_code is not None:
        params["ErrorCode"] = error_code
    return params | extra


def _query(url: str) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(url).query, keep_blank_values=True)


def _genuine(_fake: FakeTwilio, _now: float) -> InboundRequest:
    return signed_callback(PUBLIC_URL + "?d=dlv_01JCONFORMANCE0000000000000", message_status("SM" + "a" * 32, "delivered"))


def _forged(_fake: FakeTwilio, _now: float) -> InboundRequest:
    return signed_callback(PUBLIC_URL + "?d=dlv_01JCONFORMANCE0000000000000", message_status("SM" + "a" * 32, "delivered"), token="not-the-auth-token")


def serve() -> AbstractAsyncContextManager[FakeTwilio]:
    return FakeTwilio().serving()


KIT = Kit(
    plugin=TwilioProvider,
    serve=serve,
    config=lambda fake: {
        "account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN, "from": FROM, "base_url": fake.url, "timeout_seconds": FAST_TIMEOUT,
    },
    message=outbound("sms", "+14155550100", {"phone": "+14155550100"}),
    secrets=(AUTH_TOKEN,),
    genuine_webhook=_genuine,
    forged_webhook=_forged,
)
