"""The API description: an OpenAPI 3.1 document generated from the models that validate requests and describe answers.

Every route the application serves has one :class:`Operation` in :data:`OPERATIONS`: what it
is for, the pydantic model of its body (the very one the handler parses with), the model of
each answer (:mod:`gateway.http.view_models`), its query parameters, and the error codes each
refusal can carry. :func:`describe` walks the application's router, so a route's security
(``X-API-Key`` or ``Authorization: Bearer``, or none for a :func:`~gateway.http.auth.public`
one) and its RateLimit headers (a :func:`~gateway.http.rate_limits.counted` one) come from the
code that enforces them, not from this table. A route without an entry is left out, and
:func:`undescribed` names it: a test holds that list empty.

``make openapi`` writes the document to ``schema/openapi.json`` (``python -m
gateway.http.openapi``); a test fails when the checked-in copy differs from what the code
generates.
"""

from __future__ import annotations

import importlib.metadata
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import orjson
from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from gateway import statuses
from gateway.engine.business_events import EventRequest
from gateway.engine.submission import BulkRequest, SendRequest
from gateway.http import view_models as views
from gateway.http.acknowledgements import AcknowledgeBody
from gateway.http.auth import is_public
from gateway.http.contacts import ContactBody
from gateway.http.dead_letters import ReplayRequest
from gateway.http.paging import DEFAULT_LIMIT, MAX_LIMIT
from gateway.http.rate_limits import is_counted
from gateway.http.replies import NewOptOut
from gateway.http.webhook_deliveries import STATUSES as WEBHOOK_STATUSES
from gateway.http.webhook_deliveries import ReplaySince

OPENAPI_VERSION: Final = "3.1.0"
JSON: Final = "application/json"
REF: Final = "#/components/schemas/{model}"
Codes = Mapping[int, tuple[str, ...]]


@dataclass(frozen=True)
class Answer:
    """One answer an operation gives: its description and the model of its JSON body (None: no body, or not JSON)."""

    description: str
    model: type[BaseModel] | None = None
    media: str = JSON
    schema: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Query:
    """A query parameter: its name, what it does, and its JSON Schema."""

    name: str
    description: str
    schema: Mapping[str, Any] = field(default_factory=lambda: {"type": "string"})


@dataclass(frozen=True)
class Operation:
    """What one route does, takes and answers; refusals by status, each with the codes it can carry."""

    method: Literal["GET", "POST", "PATCH", "DELETE"]
    path: str
    tag: str
    summary: str
    answers: Mapping[int, Answer]
    errors: Codes = field(default_factory=dict)
    body: type[BaseModel] | None = None
    body_required: bool = True
    body_schema: Mapping[str, Any] | None = None
    query: tuple[Query, ...] = ()
    idempotent: bool = False
    description: str = ""

    @property
    def operation_id(self) -> str:
        words = [part.strip("{}").replace("-", "_").replace(".", "_") for part in self.path.strip("/").split("/") if part not in ("api", "v1")]
        return "_".join([self.method.lower(), *words])


def codes(*groups: Codes) -> dict[int, tuple[str, ...]]:
    """Refusal codes by status, merged from ``groups`` in order, each code once."""
    merged: dict[int, tuple[str, ...]] = {}
    for group in groups:
        for status, named in group.items():
            merged[status] = tuple(dict.fromkeys((*merged.get(status, ()), *named)))
    return merged


# What a route can answer because of how it is reached, whatever it does.
ANY: Final[Codes] = {400: ("invalid_header",)}
AUTH: Final[Codes] = {401: ("unauthorized", "invalid_api_key"), 403: ("tenant_suspended",)}
LIVE: Final[Codes] = {403: ("live_key_required",)}
BODY: Final[Codes] = {
    400: ("invalid_json", "invalid_body"), 408: ("request_timeout",), 413: ("payload_too_large",),
    415: ("unsupported_media_type",), 422: ("validation_failed",),
}
WRITE: Final[Codes] = {503: ("storage_unavailable",)}
PAGE: Final[Codes] = {400: ("invalid_parameter",)}
QUOTA: Final[Codes] = {413: ("larger_than_quota",), 429: ("rate_limited", "daily_quota_exceeded")}
SUBMISSION: Final[Codes] = {
    409: ("idempotency_conflict",),
    422: (
        "invalid_idempotency_key", "unknown_channel", "duplicate_channel", "channel_unavailable", "unknown_template",
        "conflicting_content", "template_channel_missing", "template_required", "missing_content", "unknown_recipient_field",
        "invalid_recipient", "missing_recipient_field", "missing_variables", "invalid_schedule", "invalid_strategy",
        "template_render_failed", "body_too_long", "recipient_opted_out", "contact_not_found", "conflicting_recipient",
    ),
}
CONTACT: Final[Codes] = {422: ("unknown_field", "unknown_channel", "invalid_recipient", "invalid_timezone")}

EMPTY: Final = {"type": "string", "maxLength": 0}
"""What a query parameter may also be: empty, read as absent (no filter, the default page size)."""
LIMIT: Final = Query(
    "limit", f"Items per page, 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT}).",
    {"anyOf": [{"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}, EMPTY]},
)
CURSOR: Final = Query("cursor", "The ``next_cursor`` of the page before; absent for the first page.")
PAGED: Final = (LIMIT, CURSOR)
STATUS_ENUM: Final = {"type": "string", "enum": ["", *sorted(statuses.ALL)]}
DEAD_REASON_ENUM: Final = {"type": "string", "enum": ["", *statuses.DEAD_REASONS]}
ANY_BODY: Final = Answer(
    "What the provider's plugin answers its vendor; by default ``{\"received\": id}``, the id the callback was kept under.", media="*/*", schema={})


def _page(model: type[BaseModel], what: str) -> Mapping[int, Answer]:
    return {200: Answer(f"A page of {what}, newest first; ``next_cursor`` is null on the last page.", model)}


OPERATIONS: Final[tuple[Operation, ...]] = (
    Operation("GET", "/healthz", "Health", "The process is up", {200: Answer("Always, while the process serves.", views.Health)}),
    Operation(
        "GET", "/metrics", "Health", "Prometheus metrics",
        {200: Answer("The metrics in the Prometheus text format.", media="text/plain", schema={"type": "string"})},
        {401: ("invalid_metrics_token",)},
        description="No API key; when ``TIDINGS_METRICS_TOKEN`` is set, it must come as ``Authorization: Bearer``.",
    ),
    Operation(
        "GET", "/readyz", "Health", "The gateway can take and deliver traffic",
        {200: Answer("Ready.", views.Readiness), 503: Answer("Not ready: ``checks`` says which part is not.", views.Readiness)},
        description="A refused policy change leaves the gateway ready (the last good set keeps serving); ``policy.last_error`` says why.",
    ),
    Operation(
        "GET", "/openapi.json", "Documentation", "This document",
        {200: Answer("The OpenAPI 3.1 description of the API.", schema={"type": "object"})},
    ),
    Operation("GET", "/docs", "Documentation", "The API documentation page", {200: Answer("An HTML page rendering this document.", media="text/html", schema={"type": "string"})}),
    Operation(
        "GET", "/docs/{asset}", "Documentation", "A file of the documentation page, served by the gateway itself (no CDN)",
        {200: Answer("The file.", media="*/*", schema={})}, {404: ("asset_not_found",)},
    ),
    Operation(
        "POST", "/api/v1/notifications/send", "Notifications", "Send one notification to one recipient",
        {202: Answer("Accepted and kept: its deliveries are queued. A repeated Idempotency-Key with the same body answers the same.", views.SendAccepted)},
        codes(BODY, WRITE, QUOTA, SUBMISSION),
        body=SendRequest, idempotent=True,
        description="``recipient`` holds addresses by recipient field (``email``, ``phone``, …) or names a contact "
        "(``contact_id`` or ``external_id``). Everything a caller can get wrong is reported at once, nothing is kept.",
    ),
    Operation(
        "POST", "/api/v1/notifications/bulk", "Notifications", "Send one notification per recipient row",
        {202: Answer("The rows that passed are kept and queued; ``errors`` says why each other row was refused.", views.BulkAccepted)},
        codes(BODY, WRITE, QUOTA, SUBMISSION, {413: ("too_many_recipients",), 422: ("no_valid_recipients",)}),
        body=BulkRequest, idempotent=True,
    ),
    Operation(
        "GET", "/api/v1/notifications/{notification_id}", "Notifications", "One notification: its deliveries, attempts and audit trail",
        {200: Answer("The notification.", views.NotificationDetail)}, {404: ("notification_not_found",)},
    ),
    Operation(
        "GET", "/api/v1/notifications", "Notifications", "The tenant's notifications, filtered",
        _page(views.NotificationPage, "notifications"), PAGE,
        query=(
            Query("status", "Only notifications in this status.", STATUS_ENUM),
            Query("delivery_status", "Only notifications with a delivery in this status.", STATUS_ENUM),
            Query("channel", "Only notifications with a delivery on this channel."),
            Query("recipient", "Only notifications to this address."),
            *PAGED,
        ),
    ),
    Operation(
        "POST", "/api/v1/notifications/{notification_id}/acknowledge", "Notifications", "Acknowledge a notification: stop chasing its recipient",
        {200: Answer("The acknowledgement: the first one, if it was acknowledged before.", views.Acknowledged)},
        codes(BODY, WRITE, {404: ("notification_not_found",)}), body=AcknowledgeBody, body_required=False,
        description="Skips the channels still waiting their fallback turn, and holds back repeats of the route's alert for its ``repeat_after``.",
    ),
    Operation(
        "GET", "/api/v1/channels/capabilities", "Channels", "What each channel needs and who serves it for the caller",
        {200: Answer("Every channel.", views.Capabilities)},
    ),
    Operation(
        "GET", "/api/v1/dead-letters", "Dead letters", "The deliveries the engine gave up on",
        _page(views.DeadLetterPage, "dead letters"), PAGE,
        query=(
            Query("channel", "Only dead letters of this channel."),
            Query("provider", "Only dead letters whose last attempt went to this provider instance."),
            Query("reason", "Only dead letters given up on for this reason.", DEAD_REASON_ENUM),
            *PAGED,
        ),
    ),
    Operation(
        "POST", "/api/v1/dead-letters/replay", "Dead letters", "Re-queue every dead letter that matches a filter",
        {202: Answer("Re-queued; ``more`` says more match than one request replays: ask again.", views.ReplayedMatching)},
        codes(BODY, WRITE), body=ReplayRequest,
    ),
    Operation(
        "POST", "/api/v1/dead-letters/{delivery_id}/replay", "Dead letters", "Re-queue one dead letter",
        {202: Answer("Re-queued.", views.ReplayedOne)}, codes(WRITE, {404: ("delivery_not_found",), 409: ("not_dead_lettered",)}),
    ),
    Operation(
        "GET", "/api/v1/webhooks/public-key", "Event webhooks", "The key that verifies v1a (Ed25519) event signatures",
        {200: Answer("The public key.", views.PublicKey)},
    ),
    Operation(
        "POST", "/api/v1/webhooks/{provider_instance}", "Provider callbacks", "A delivery receipt or reply from a provider's vendor",
        {200: ANY_BODY},
        codes(WRITE, {
            400: ("invalid_body",), 401: ("webhook_verification_failed",), 403: ("webhook_verification_failed",), 408: ("request_timeout",),
            404: ("unknown_provider_instance", "instance_takes_no_callbacks"), 413: ("payload_too_large",), 429: ("rate_limited",),
        }),
        body_schema={}, body_required=False,
        description="Authenticated by the vendor's signature, which the instance's plugin checks: no API key. Kept before it is answered.",
    ),
    Operation(
        "GET", "/api/v1/webhooks/{provider_instance}", "Provider callbacks", "A vendor checking the callback URL, or a callback sent by GET",
        {200: ANY_BODY},
        codes(WRITE, {
            401: ("webhook_verification_failed",), 403: ("webhook_verification_failed",),
            404: ("unknown_provider_instance", "instance_takes_no_callbacks"), 405: ("method_not_allowed",), 429: ("rate_limited",),
        }),
    ),
    Operation(
        "GET", "/api/v1/webhook-deliveries", "Event webhooks", "The tenant's event webhooks on their way",
        _page(views.WebhookDeliveryPage, "webhook deliveries"), PAGE,
        query=(
            Query("status", "Only deliveries in this status.", {"type": "string", "enum": ["", *WEBHOOK_STATUSES]}),
            Query("endpoint", "Only deliveries to this endpoint (its name in policy)."),
            *PAGED,
        ),
    ),
    Operation(
        "POST", "/api/v1/webhook-deliveries/{delivery_id}/replay", "Event webhooks", "Send one dead or disabled webhook delivery again",
        {202: Answer("Queued again.", views.ReplayedOne)}, codes(WRITE, {404: ("webhook_delivery_not_found",), 409: ("not_replayable",)}),
    ),
    Operation(
        "POST", "/api/v1/webhook-deliveries/replay", "Event webhooks", "Send an endpoint's dead or disabled deliveries again, since a time",
        {202: Answer("Queued again.", views.WebhooksReplayedSince)}, codes(BODY, WRITE, LIVE, {422: ("invalid_schedule",)}), body=ReplaySince,
    ),
    Operation(
        "GET", "/api/v1/webhook-endpoints", "Event webhooks", "How the tenant's event webhook endpoints are faring",
        {200: Answer("Every endpoint in policy.", views.WebhookEndpointList)},
    ),
    Operation(
        "POST", "/api/v1/webhook-endpoints/{endpoint}/enable", "Event webhooks", "Enable a disabled endpoint and send what it held back",
        {200: Answer("The endpoint, and how many deliveries were queued again.", views.EndpointEnabled)},
        codes(WRITE, LIVE, {404: ("webhook_endpoint_not_found",)}),
    ),
    Operation(
        "GET", "/api/v1/replies", "Replies and opt-outs", "What recipients sent back",
        _page(views.ReplyPage, "replies"), PAGE,
        query=(Query("channel", "Only replies on this channel."), Query("from", "Only replies from this address."), *PAGED),
    ),
    Operation(
        "GET", "/api/v1/opt-outs", "Replies and opt-outs", "Who asked to hear nothing more (live keys only)",
        _page(views.OptOutPage, "opt-outs"), codes(PAGE, LIVE),
        query=(Query("channel", "Only opt-outs of this channel."), Query("address", "Only opt-outs of this address."), *PAGED),
    ),
    Operation(
        "POST", "/api/v1/opt-outs", "Replies and opt-outs", "Record an opt-out from the tenant's own system (live keys only)",
        {201: Answer("Recorded.", views.OptOutRecorded), 200: Answer("The address had already opted out.", views.OptOutRecorded)},
        codes(BODY, WRITE, LIVE, {422: ("unknown_channel",)}), body=NewOptOut,
    ),
    Operation(
        "POST", "/api/v1/contacts", "Contacts", "Create a contact, or replace the one with the same external_id",
        {201: Answer("Created.", views.ContactView), 200: Answer("Replaced the contact with this ``external_id``.", views.ContactView)},
        codes(BODY, WRITE, CONTACT, {409: ("contact_limit_reached",)}), body=ContactBody,
        description="Addresses sit at the top level under the recipient fields of a send (``email``, ``phone``, …).",
    ),
    Operation(
        "GET", "/api/v1/contacts", "Contacts", "The contacts of the key's mode",
        _page(views.ContactPage, "contacts"), PAGE,
        query=(Query("external_id", "Only the contact with this external_id."), *PAGED),
    ),
    Operation(
        "GET", "/api/v1/contacts/{contact_id}", "Contacts", "One contact",
        {200: Answer("The contact.", views.ContactView)}, {404: ("contact_not_found",)},
    ),
    Operation(
        "PATCH", "/api/v1/contacts/{contact_id}", "Contacts", "Change some of a contact's fields (JSON merge patch)",
        {200: Answer("The contact as changed.", views.ContactView)},
        codes(BODY, WRITE, CONTACT, {404: ("contact_not_found",), 409: ("external_id_taken", "contact_changed")}),
        body_schema={"type": "object", "description": "A JSON merge patch (RFC 7396) of a ContactBody: a field set to null is removed."},
    ),
    Operation(
        "DELETE", "/api/v1/contacts/{contact_id}", "Contacts", "Forget a contact and erase its addresses from its notifications",
        {204: Answer("Erased.")}, codes(WRITE, {404: ("contact_not_found",)}),
    ),
    Operation(
        "POST", "/api/v1/events", "Business events", "Post a business event to be routed",
        {202: Answer("Kept, to be routed.", views.EventAccepted), 200: Answer("The tenant used this event_id before: nothing was done.", views.EventAccepted)},
        codes(BODY, WRITE, QUOTA, {
            413: ("too_many_recipients", "event_data_too_large", "event_too_large"), 422: ("missing_recipient", "conflicting_recipients"),
        }),
        body=EventRequest,
    ),
    Operation(
        "GET", "/api/v1/events/{event_id}", "Business events", "One event, and what each matching route did for each recipient",
        {200: Answer("The event.", views.EventDetail)}, {404: ("event_not_found",)},
    ),
    Operation(
        "GET", "/api/v1/events", "Business events", "The key's mode's events",
        _page(views.EventPage, "events (summaries: no data or addresses)"), PAGE,
        query=(Query("event_name", "Only events of this name."), *PAGED),
    ),
)
REQUEST_MODELS: Final[tuple[type[BaseModel], ...]] = tuple(dict.fromkeys(op.body for op in OPERATIONS if op.body is not None))
RESPONSE_MODELS: Final[tuple[type[BaseModel], ...]] = (
    views.ErrorBody, *dict.fromkeys(a.model for op in OPERATIONS for a in op.answers.values() if a.model is not None),
)
RATE_LIMIT_HEADERS: Final = {
    "RateLimit-Policy": "The tenant's quota windows: ``\"name\";q=quota;w=seconds``.",
    "RateLimit": "What is left in each window: ``\"name\";r=remaining;t=seconds to reset``.",
    "RateLimit-Limit": "The quota of the window closest to its limit.",
    "RateLimit-Remaining": "What is left in that window.",
    "RateLimit-Reset": "Seconds until that window has room again.",
}


NOT_API: Final = ("/dashboard",)
"""Paths that are pages for people, signed in with a cookie, not part of the API this document describes."""


def routes_of(router: web.UrlDispatcher) -> Iterable[tuple[str, str, Any]]:
    """Each route the router serves as (method, path template, handler).

    Left out: HEAD, which aiohttp adds to every GET, the ``*`` refusals of
    :func:`gateway.http.routes.shadow_templates`, and the dashboard's pages (:data:`NOT_API`).
    """
    for route in router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if route.method not in ("HEAD", "*") and path and not path.startswith(NOT_API):
            yield route.method, path, route.handler


def undescribed(router: web.UrlDispatcher) -> list[str]:
    """The routes that have no :class:`Operation`: the document would leave them out."""
    known = {(op.method, op.path) for op in OPERATIONS}
    return [f"{method} {path}" for method, path, _ in routes_of(router) if (method, path) not in known]


def describe(router: web.UrlDispatcher) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the routes ``router`` serves."""
    table: dict[tuple[str, str], Operation] = {(op.method, op.path): op for op in OPERATIONS}
    paths: dict[str, dict[str, Any]] = {}
    for method, path, handler in routes_of(router):
        op = table.get((method, path))
        if op is not None:
            paths.setdefault(path, {})[method.lower()] = _operation(op, public=is_public(handler), counted=is_counted(handler))
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Tidings",
            "version": importlib.metadata.version("tidings"),
            "summary": "A self-hosted notification gateway: one HTTP API, every channel, nothing lost.",
            "description": _INTRO,
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "tags": [{"name": name} for name in dict.fromkeys(op.tag for op in OPERATIONS)],
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "headers": {name: {"description": text, "schema": {"type": "string"}} for name, text in RATE_LIMIT_HEADERS.items()},
            "securitySchemes": {
                "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "A tenant's API key (``tdk_…``)."},
                "Bearer": {"type": "http", "scheme": "bearer", "description": "The same key as ``Authorization: Bearer tdk_…``."},
            },
        },
    }


_INTRO: Final = """\
Every refusal has one shape, ``{"error": {"code", "message", "details": [{"field", "message", "code"}]}}``;
each response below lists the codes it can carry. Authenticate with a tenant's API key in
``X-API-Key`` or ``Authorization: Bearer``. A test key (``mode: test``) reaches only the sandbox and
sees only test data. Lists take ``?limit=`` and ``?cursor=`` and answer ``{"items", "next_cursor"}``."""


def schemas() -> dict[str, Any]:
    """Every model's JSON Schema by name: request bodies as they validate, answers as they serialize."""
    pairs: list[tuple[type[BaseModel], Literal["validation", "serialization"]]] = [
        *((model, "validation") for model in REQUEST_MODELS), *((model, "serialization") for model in RESPONSE_MODELS),
    ]
    _, generated = models_json_schema(pairs, ref_template=REF)
    return dict(sorted(generated.get("$defs", {}).items()))


def _operation(op: Operation, *, public: bool, counted: bool) -> dict[str, Any]:
    described: dict[str, Any] = {"operationId": op.operation_id, "tags": [op.tag], "summary": op.summary}
    if op.description:
        described["description"] = op.description
    parameters = [_path_parameter(name) for name in _path_names(op.path)]
    parameters += [{"name": q.name, "in": "query", "required": False, "description": q.description, "schema": dict(q.schema)} for q in op.query]
    if op.idempotent:
        parameters.append({
            "name": "Idempotency-Key", "in": "header", "required": False, "schema": {"type": "string", "minLength": 1, "maxLength": 255},
            "description": "The same key with the same body answers the original response; with another body, 409.",
        })
    if parameters:
        described["parameters"] = parameters
    if op.body is not None or op.body_schema is not None:
        schema = {"$ref": REF.format(model=op.body.__name__)} if op.body is not None else dict(op.body_schema or {})
        media = "*/*" if op.body_schema == {} else JSON
        described["requestBody"] = {"required": op.body_required, "content": {media: {"schema": schema}}}
    refusals = codes(ANY, {} if public else AUTH, op.errors)
    described["responses"] = {
        **{str(status): _answer(answer, counted) for status, answer in sorted(op.answers.items())},
        **{str(status): _refusal(status, named, counted) for status, named in sorted(refusals.items())},
    }
    described["security"] = [] if public else [{"ApiKey": []}, {"Bearer": []}]
    return described


def _path_names(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{") and part.endswith("}")]


def _path_parameter(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}


def _answer(answer: Answer, counted: bool) -> dict[str, Any]:
    described: dict[str, Any] = {"description": answer.description}
    if answer.model is not None:
        described["content"] = {answer.media: {"schema": {"$ref": REF.format(model=answer.model.__name__)}}}
    elif answer.schema is not None:
        described["content"] = {answer.media: {"schema": dict(answer.schema)}}
    if counted:
        described["headers"] = _rate_limit_headers()
    return described


def _refusal(status: int, named: tuple[str, ...], counted: bool) -> dict[str, Any]:
    listed = ", ".join(f"``{code}``" for code in named)
    described: dict[str, Any] = {
        "description": f"Refused; ``error.code`` is one of: {listed}.",
        "content": {JSON: {"schema": {"$ref": REF.format(model=views.ErrorBody.__name__)}}},
        "x-error-codes": list(named),
    }
    headers = _rate_limit_headers() if counted else {}
    if status in (429, 503):
        headers["Retry-After"] = {"description": "Seconds to wait before trying again.", "schema": {"type": "string", "pattern": "^[0-9]+$"}}
    if status == 405:
        headers["Allow"] = {"description": "The methods this path serves.", "schema": {"type": "string"}}
    if headers:
        described["headers"] = headers
    return described


def _rate_limit_headers() -> dict[str, Any]:
    """The RateLimit headers of a counted endpoint (absent for a tenant without quotas), by reference."""
    return {name: {"$ref": f"#/components/headers/{name}"} for name in RATE_LIMIT_HEADERS}


def render(document: Mapping[str, Any]) -> bytes:
    """The document as the checked-in copy and ``GET /openapi.json`` hold it: indented, keys in a stable order, a final newline."""
    return orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"


def main() -> None:
    """Print the document of the application's routes (``make openapi`` writes it to ``schema/openapi.json``)."""
    from gateway.http.routes import setup_routes

    app = web.Application()
    setup_routes(app)
    sys.stdout.buffer.write(render(describe(app.router)))


if __name__ == "__main__":
    main()
