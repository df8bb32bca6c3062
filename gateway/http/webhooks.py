"""``/api/v1/webhooks/{provider_instance}``: delivery receipts and replies from provider vendors.

No API key here: a callback is authenticated by its vendor's signature, which the instance's
plugin checks. The raw request is verified and stored (see :mod:`gateway.engine.inbound`); the
answer is 200 once it is durable, before any of it is processed. Since anyone can call, each
source address is held to a rate of refused callbacks (429), each instance to a rate of all its
callbacks (429, before the body is read: a flood costs no write and cannot starve sends), an
instance that takes no callbacks is a 404 that stores nothing, and a refused callback leaves
only its summary.
"""

from __future__ import annotations

import math

from aiohttp import web

from gateway import ids
from gateway.engine.inbound import instance_tenants, kept_headers, kept_target, redactor
from gateway.errors import (
    ApiError,
    ForbiddenError,
    MethodNotAllowedError,
    NotFoundError,
    TooManyRequestsError,
    UnauthorizedError,
    WebhookVerificationError,
)
from gateway.http.api import json_response, read_body
from gateway.http.appkeys import CLOCK, INBOUND, INBOUND_LIMITS, INSTANCE_LIMITS, PROVIDERS, SETTINGS, WEBHOOK_SIGNER
from gateway.http.auth import policy_of, public
from gateway.plugin_api import InboundRequest, InboundResponse, Provider
from gateway.store import InboundRecord

routes = web.RouteTableDef()
PATH = "/api/v1/webhooks/{provider_instance}"
PUBLIC_KEY_PATH = "/api/v1/webhooks/public-key"


@routes.get(PUBLIC_KEY_PATH)
@public
async def public_key(request: web.Request) -> web.Response:
    """The key receivers verify ``v1a`` (Ed25519) event signatures with; public, so no API key is needed."""
    signer = request.app[WEBHOOK_SIGNER]
    return json_response({"public_key": signer.public_key, "algorithm": "ed25519", "signature_version": "v1a"})


@routes.post(PATH)
@public
async def receive(request: web.Request) -> web.Response:
    """Verify, store, acknowledge; processing (reconciliation, replies) follows on its own path."""
    _admit(request)
    provider = _instance(request, request.match_info["provider_instance"])
    return await _receive(request, provider, await _body(request))


@routes.get(PATH)
@public
async def handshake(request: web.Request) -> web.Response:
    """A vendor checking the URL before it sends callbacks, or (where the plugin allows it) a callback sent by GET."""
    _admit(request)
    provider = _instance(request, request.match_info["provider_instance"])
    answer = await provider.handshake(_inbound_request(request, b""))
    if answer is not None:
        return _plugin_response(answer)
    if provider.callbacks_by_get:
        return await _receive(request, provider, b"")
    raise MethodNotAllowedError(f"Provider instance {provider.name!r} takes callbacks by POST only.", headers={"Allow": "POST"})


async def _receive(request: web.Request, provider: Provider, body: bytes) -> web.Response:
    policy = policy_of(request)
    name = provider.name
    redact = redactor(provider)
    record = InboundRecord(
        ids.new_id(ids.WEBHOOK), name, request.app[CLOCK].now(), request.remote, request.method,
        redact(kept_target(request.raw_path)), kept_headers(request.headers.items(), redact), body,
    )
    instance = policy.provider_instances.get(name)
    tenants = instance_tenants(instance.tenant if instance else None, policy.document.tenants)
    inbound = _inbound_request(request, body)
    try:
        await request.app[INBOUND].receive(record, provider, tenants, inbound)
    except WebhookVerificationError as err:
        request.app[INBOUND_LIMITS].refused(request.remote)
        raise _refusal(err, record.id) from err
    answer = await provider.answer_webhook(inbound)
    if answer is not None:
        return _plugin_response(answer)
    return json_response({"received": record.id})


def _plugin_response(answer: InboundResponse) -> web.Response:
    return web.Response(body=answer.body, status=answer.status, content_type=answer.content_type, headers=dict(answer.headers))


def _admit(request: web.Request) -> None:
    """Hold a source address that sent callbacks failing verification to its budget: 429 with ``Retry-After`` past it."""
    wait = request.app[INBOUND_LIMITS].wait(request.remote)
    if wait > 0:
        seconds = max(1, math.ceil(wait))
        raise TooManyRequestsError(
            f"Too many refused provider callbacks from this address; try again in {seconds} s.", code="rate_limited", headers={"Retry-After": str(seconds)}
        )


def _instance(request: web.Request, name: str) -> Provider:
    """The instance a callback is for, its callback counted against the instance's rate (429 with ``Retry-After`` past it)."""
    provider = request.app[PROVIDERS].current.get(name)
    if provider is None:
        raise NotFoundError(f"No provider instance {name!r}.", code="unknown_provider_instance")
    if not provider.takes_callbacks:
        raise NotFoundError(f"Provider instance {name!r} takes no callbacks.", code="instance_takes_no_callbacks")
    wait = request.app[INSTANCE_LIMITS].take(name)
    if wait > 0:
        seconds = max(1, math.ceil(wait))
        raise TooManyRequestsError(
            f"Provider instance {name!r} is taking more callbacks than it is allowed; try again in {seconds} s.",
            code="rate_limited", headers={"Retry-After": str(seconds)},
        )
    return provider


async def _body(request: web.Request) -> bytes:
    """The body, refused (413) as soon as it passes the inbound limit, which is far below the API's."""
    limit = request.app[SETTINGS].inbound_max_body_bytes
    return await read_body(request, limit, f"A provider callback may be at most {limit} bytes.")


def _inbound_request(request: web.Request, body: bytes) -> InboundRequest:
    return InboundRequest(
        method=request.method, url=str(request.url), headers=request.headers,
        query=dict(request.query.items()), body=body, remote=request.remote,
    )


def _refusal(err: WebhookVerificationError, request_id: str) -> ApiError:
    kind = ForbiddenError if err.status == 403 else UnauthorizedError
    return kind(f"The callback failed verification: {err.message} (stored as {request_id}).", code="webhook_verification_failed")
