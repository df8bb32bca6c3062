"""A fake Meta Graph API (WhatsApp Cloud API) on loopback, and the whatsapp_cloud conformance kit.

It answers the way the Cloud API does::

    POST /{version}/{phone_number_id}/messages     Authorization: Bearer <token>
        200 {"messaging_product": "whatsapp", "contacts": [{"input", "wa_id"}],
             "messages": [{"id": "wamid…", "message_status": "accepted"}]}
    GET  /{version}/{phone_number_id}              the phone number node (credentials check)

and refuses with Graph errors, ``{"error": {"message", "type", "code", "error_subcode"?,
"error_data": {"messaging_product", "details"}, "fbtrace_id"}}``: a wrong token gets 401 / 190,
an unknown phone number id 400 / 100 (subcode 33), a malformed body 400 / 100, an unknown
template 404 / 132001, a wrong parameter count 400 / 132000, and free-form text to a number
whose 24-hour window is closed (see :meth:`FakeGraph.open_window`) 400 / 131047.

On cue (:meth:`FakeGraph.fail_next`): ``timeout`` holds the request until the fake stops,
``5xx`` answers 503 / code 2, ``reject_recipient`` 400 / 131030; :meth:`FakeGraph.refuse_next`
scripts any other Graph error. Callback builders sign the way Meta does
(``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret, body)>``).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from fakes.loopback import LoopbackFake
from gateway import InboundRequest, ProviderTemplate
from gateway.conformance import FAST_TIMEOUT, Fault, Kit, outbound
from plugins.whatsapp_cloud import WhatsAppCloudProvider

TOKEN = "EAAGfakeWhatsAppSystemUserToken0123456789"
APP_SECRET = "fake-app-secret-5f0c1e2d"
VERIFY_TOKEN = "fake-verify-token-9a8b7c"
PHONE_NUMBER_ID = "106540352242922"
WABA_ID = "102290129340398"
DISPLAY_NUMBER = "15550783881"
RECIPIENT = "+14155550100"
_DIGITS = re.compile(r"^\d+$")


@dataclass
class GraphRequest:
    """One request the fake received, and what it answered."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    status: int | None = None
    answer: Any = None


@dataclass(frozen=True)
class GraphError:
    """A scripted refusal: HTTP status, Graph code, message and optional details / headers."""

    status: int
    code: int
    message: str
    details: str | None = None
    subcode: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


def graph_error(error: GraphError) -> web.Response:
    body: dict[str, Any] = {
        "message": error.message, "type": "OAuthException", "code": error.code, "fbtrace_id": "AbCdEfGhIjKlMnOp",
    }
    if error.details is not None:
        body["error_data"] = {"messaging_product": "whatsapp", "details": error.details}
    if error.subcode is not None:
        body["error_subcode"] = error.subcode
    return web.json_response({"error": body}, status=error.status, headers=dict(error.headers))


BAD_TOKEN = GraphError(401, 190, "Invalid OAuth access token - Cannot parse access token")
SERVER_ERROR = GraphError(503, 2, "Service temporarily unavailable")
NOT_ALLOWED = GraphError(
    400, 131030, "(#131030) Recipient phone number not in allowed list",
    "Recipient phone number not in allowed list: Add recipient phone number to recipient list and try again.",
)


class FakeGraph(LoopbackFake):
    """The fake Graph API: state, recorded requests and the aiohttp app (serve with :meth:`serving`)."""

    def __init__(
        self, *, token: str = TOKEN, phone_number_id: str = PHONE_NUMBER_ID, templates: Mapping[str, int] | None = None
    ) -> None:
        super().__init__()
        self.token = token
        self.phone_number_id = phone_number_id
        self.templates = dict(templates or {"otp_code": 1, "order_shipped": 2})
        self.requests: list[GraphRequest] = []
        self.accepted: list[dict[str, Any]] = []
        self.windows: set[str] = set()
        self._script: list[Fault | GraphError] = []
        self._ids = itertools.count(1)

    # -- what tests call -------------------------------------------------------------------

    def fail_next(self, fault: Fault) -> None:
        self._script.append(fault)

    def refuse_next(self, error: GraphError) -> None:
        self._script.append(error)

    def open_window(self, wa_id: str) -> None:
        """The user ``wa_id`` (digits) wrote in the last 24 hours: free-form text to them is allowed."""
        self.windows.add(wa_id)

    @property
    def sends(self) -> list[GraphRequest]:
        return [r for r in self.requests if r.method == "POST"]

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/{version}/{node}/messages", self._messages)
        router.add_get("/{version}/{node}", self._phone_number)

    # -- the API ---------------------------------------------------------------------------

    async def _messages(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        record = GraphRequest("POST", request.path, dict(request.headers), body)
        self.requests.append(record)
        response = await self._answer_message(request, body)
        record.status, record.answer = response.status, json.loads(response.text or "null")
        return response

    async def _answer_message(self, request: web.Request, body: Any) -> web.Response:
        refusal = self._check(request) or _shape_problem(body)
        if refusal is not None:
            return graph_error(refusal)
        scripted = self._script.pop(0) if self._script else None
        if scripted == "timeout":
            await self.held()
        if isinstance(scripted, GraphError):
            return graph_error(scripted)
        if scripted == "5xx":
            return graph_error(SERVER_ERROR)
        if scripted == "reject_recipient":
            return graph_error(NOT_ALLOWED)
        return self._accept(body) if (problem := self._content_problem(body)) is None else graph_error(problem)

    def _check(self, request: web.Request) -> GraphError | None:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return BAD_TOKEN
        if request.match_info["node"] != self.phone_number_id:
            node = request.match_info["node"]
            return GraphError(
                400, 100, f"Unsupported post request. Object with ID '{node}' does not exist, cannot be loaded due to "
                "missing permissions, or does not support this operation.", subcode=33,
            )
        return None

    def _content_problem(self, body: dict[str, Any]) -> GraphError | None:
        if body["type"] == "text":
            if body["to"] not in self.windows:
                return GraphError(
                    400, 131047, "(#131047) Re-engagement message",
                    "Message failed to send because more than 24 hours have passed since the customer last replied to this number.",
                )
            return None
        template = body["template"]
        count = self.templates.get(template["name"])
        if count is None:
            return GraphError(404, 132001, "(#132001) Template name does not exist in the translation",
                              f"template name ({template['name']}) does not exist in {template['language']['code']}")
        given = sum(len(c.get("parameters", [])) for c in template.get("components", []) if c.get("type") == "body")
        if given != count:
            return GraphError(400, 132000, "(#132000) Number of parameters does not match the expected number of params",
                              f"body: number of localizable_params ({given}) does not match the expected number of params ({count})")
        return None

    def _accept(self, body: dict[str, Any]) -> web.Response:
        wamid = f"wamid.HBgL{body['to']}FQIAERgS{next(self._ids):020d}AA=="
        self.accepted.append(body | {"wamid": wamid})
        answer: dict[str, Any] = {"id": wamid}
        if body["type"] == "template":
            answer["message_status"] = "accepted"
        return web.json_response(
            {"messaging_product": "whatsapp", "contacts": [{"input": body["to"], "wa_id": body["to"]}], "messages": [answer]}
        )

    async def _phone_number(self, request: web.Request) -> web.Response:
        record = GraphRequest("GET", request.path_qs, dict(request.headers), None)
        self.requests.append(record)
        refusal = self._check(request)
        if refusal is not None:
            return graph_error(refusal)
        return web.json_response(
            {"verified_name": "Acme Shop", "display_phone_number": "+1 555-078-3881", "quality_rating": "GREEN", "id": self.phone_number_id}
        )


def _shape_problem(body: Any) -> GraphError | None:
    """What Meta's validation would say about a malformed message body, if anything."""

    def invalid(details: str) -> GraphError:
        return GraphError(400, 100, "(#100) Invalid parameter", details)

    if not isinstance(body, dict):
        return invalid("the request body is not a JSON object")
    if body.get("messaging_product") != "whatsapp":
        return GraphError(400, 100, "(#100) The parameter messaging_product is required.")
    if not isinstance(body.get("to"), str) or not _DIGITS.match(body["to"]):
        return invalid("to must be the recipient's WhatsApp ID (digits)")
    kind = body.get("type")
    if kind == "text":
        text = body.get("text")
        return None if isinstance(text, dict) and isinstance(text.get("body"), str) and text["body"] else invalid("text.body is required")
    if kind != "template":
        return GraphError(400, 131051, "(#131051) Unsupported message type", f"message type {kind!r} is not supported")
    template = body.get("template")
    if not isinstance(template, dict) or not isinstance(template.get("name"), str):
        return invalid("template.name is required")
    language = template.get("language")
    if not isinstance(language, dict) or not isinstance(language.get("code"), str):
        return invalid("template.language.code is required")
    for component in template.get("components", []):
        for parameter in component.get("parameters", []):
            if parameter.get("type") != "text" or not isinstance(parameter.get("text"), str):
                return GraphError(400, 131009, "(#131009) Parameter value is not valid", "body parameters must be text")
    return None


# -- callbacks as Meta sends them ----------------------------------------------------------------


def sign(body: bytes, secret: str = APP_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def envelope(value: dict[str, Any], field_name: str = "messages") -> dict[str, Any]:
    """A webhook body around one ``value`` (as Meta batches them: entry → changes → value)."""
    value = {"messaging_product": "whatsapp", "metadata": {"display_phone_number": DISPLAY_NUMBER, "phone_number_id": PHONE_NUMBER_ID}} | value
    return {"object": "whatsapp_business_account", "entry": [{"id": WABA_ID, "changes": [{"value": value, "field": field_name}]}]}


def status_callback(
    wamid: str, status: str, *, timestamp: int = 1_800_000_100, recipient: str = "14155550100",
    delivery_id: str | None = None, errors: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A ``statuses`` webhook as the Cloud API sends it (recorded shape, values ours)."""
    item: dict[str, Any] = {"id": wamid, "status": status, "timestamp": str(timestamp), "recipient_id": recipient}
    if delivery_id is not None:
        item["biz_opaque_callback_data"] = delivery_id
    if status in {"sent", "delivered", "read"}:
        item["pricing"] = {"billable": True, "pricing_model": "PMP", "category": "authentication", "type": "regular"}
    if status == "sent":
        item["conversation"] = {"id": "a75d17ad06104c51166f948319b03c6a", "expiration_timestamp": str(timestamp + 86400),
                                "origin": {"type": "authentication"}}
    if errors is not None:
        item["errors"] = errors
    return envelope({"statuses": [item]})


def undeliverable() -> list[dict[str, Any]]:
    return [{"code": 131026, "title": "Message undeliverable", "message": "Message undeliverable",
             "error_data": {"details": "Message Undeliverable."}, "href": "/docs/whatsapp/cloud-api/support/error-codes/"}]


def message_callback(
    sender: str, content: dict[str, Any], *, wamid: str = "wamid.HBgLMTQxNTU1NTAxMDAVAgASGBQzQUI0NkE4NjM1QTU2NjVGOURGQgA=",
    timestamp: int = 1_800_000_200, context_id: str | None = None,
) -> dict[str, Any]:
    """An inbound ``messages`` webhook: ``content`` is ``{"type": "text", "text": {"body": …}}`` and the like."""
    item: dict[str, Any] = {"from": sender, "id": wamid, "timestamp": str(timestamp)} | content
    if context_id is not None:
        item["context"] = {"from": DISPLAY_NUMBER, "id": context_id}
    return envelope({"contacts": [{"profile": {"name": "Ada"}, "wa_id": sender}], "messages": [item]})


def preference_callback(wa_id: str, value: str, *, timestamp: int = 1_800_000_300) -> dict[str, Any]:
    detail = f"User requested to {value} marketing messages"
    return envelope(
        {"contacts": [{"wa_id": wa_id}],
         "user_preferences": [{"wa_id": wa_id, "detail": detail, "category": "marketing_messages", "value": value, "timestamp": timestamp}]},
        "user_preferences",
    )


def callback_request(
    payload: dict[str, Any] | bytes, *, secret: str = APP_SECRET, url: str = "http://127.0.0.1/api/v1/webhooks/wa"
) -> InboundRequest:
    """A callback as Meta POSTs it: the body signed with ``secret`` (the app secret unless forging)."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", "X-Hub-Signature-256": sign(body, secret)}
    return InboundRequest(method="POST", url=url, headers=headers, query={}, body=body)


# -- the conformance kit ---------------------------------------------------------------------------


def serve() -> Any:
    return FakeGraph().serving()


def config(fake: Any) -> dict[str, Any]:
    return {
        "access_token": TOKEN, "phone_number_id": PHONE_NUMBER_ID, "app_secret": APP_SECRET, "verify_token": VERIFY_TOKEN,
        "base_url": fake.url, "timeout_seconds": FAST_TIMEOUT,
    }


KIT = Kit(
    plugin=WhatsAppCloudProvider,
    serve=serve,
    config=config,
    message=outbound("whatsapp", RECIPIENT, {"phone": RECIPIENT}, provider_template=ProviderTemplate("otp_code", "en_US", ("123456",))),
    secrets=(TOKEN, APP_SECRET, VERIFY_TOKEN),
    genuine_webhook=lambda _fake, now: callback_request(status_callback("wamid.conformance", "delivered", timestamp=int(now))),
    forged_webhook=lambda _fake, now: callback_request(
        status_callback("wamid.conformance", "delivered", timestamp=int(now)), secret="not-the-app-secret"
    ),
)
