"""``/api/v1/replies`` and ``/api/v1/opt-outs``: what recipients sent back, and who asked to hear nothing more.

Replies arrive through provider callbacks (or a plugin's own reports) and are linked to the
message they answer when the vendor says which. Opt-outs come from STOP replies and vendors'
opt-out signals; a tenant's own system may record one too (an unsubscribe page, a support
request). Only the recipient lifts an opt-out, by replying START: the API cannot.

A test key sees only replies to test-mode messages. Opt-outs are about real people, whatever
the mode of the message they came through, and apply to test sends too: reading or adding
them takes a live key.
"""

from __future__ import annotations

from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, ConfigDict, StringConstraints

from gateway.errors import ErrorDetail, ValidationError
from gateway.http.api import json_response, parse_model, read_json
from gateway.http.appkeys import OPT_OUTS, STORE
from gateway.http.auth import caller, policy_of
from gateway.http.paging import page_response
from gateway.http.views import opt_out_view, reply_view

routes = web.RouteTableDef()
Text = Annotated[str, StringConstraints(strict=True, strip_whitespace=True, min_length=1, max_length=320)]


class NewOptOut(BaseModel):
    """A recipient who asked the tenant, not a vendor, to stop sending on ``channel``."""

    model_config = ConfigDict(extra="forbid")

    channel: Text
    address: Text


@routes.get("/api/v1/replies")
async def list_replies(request: web.Request) -> web.Response:
    principal, store, query = caller(request), request.app[STORE], request.query
    channel, sender = query.get("channel") or None, query.get("from") or None
    return await page_response(
        request,
        lambda limit, cursor: store.list_replies(principal.tenant, channel=channel, sender=sender, limit=limit, cursor=cursor, mode=principal.scope),
        reply_view,
    )


@routes.get("/api/v1/opt-outs")
async def list_opt_outs(request: web.Request) -> web.Response:
    principal, store, query = caller(request), request.app[STORE], request.query
    principal.require_live("The opt-out list")
    channel, address = query.get("channel") or None, query.get("address") or None
    return await page_response(
        request, lambda limit, cursor: store.list_opt_outs(principal.tenant, channel=channel, address=address, limit=limit, cursor=cursor),
        opt_out_view,
    )


@routes.post("/api/v1/opt-outs")
async def add_opt_out(request: web.Request) -> web.Response:
    """Record an opt-out from the tenant's own system; 201 when new, 200 when it was already there."""
    policy, principal = policy_of(request), caller(request)
    principal.require_live("Recording an opt-out")
    body: NewOptOut = parse_model(NewOptOut, await read_json(request))
    if policy.channels.get(body.channel) is None:
        known = ", ".join(sorted(policy.channels.specs))
        message = f"unknown channel {body.channel!r} (known: {known})"
        raise ValidationError(message, code="unknown_channel", details=[ErrorDetail("channel", message, "unknown_channel")])
    added = await request.app[STORE].add_opt_out(principal.tenant, body.channel, body.address, f"api {principal.actor}")
    request.app[OPT_OUTS].note([principal.tenant])
    status = 201 if added else 200
    return json_response({"channel": body.channel, "address": body.address, "created": added}, status)
