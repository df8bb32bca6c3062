"""``/api/v1/webhook-deliveries``: the tenant's event webhooks on their way, and sending them again.

A delivery that ran out of retries (``dead``) or went to an endpoint that answered 410
(``disabled``) stays listed; replaying it, one or all of an endpoint's since a time, queues it
again with a fresh schedule and lifts the endpoint's disabling. A test key sees and replays
only the deliveries of events about test-mode messages; replaying an endpoint's whole backlog
(which also enables it) takes a live key.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web
from pydantic import BaseModel, ConfigDict, StrictStr

from gateway import ids
from gateway.clock import parse_timestamp
from gateway.errors import ConflictError, ErrorDetail, NotFoundError, ValidationError
from gateway.http.api import json_response, parse_model, read_json
from gateway.http.appkeys import EVENT_WEBHOOKS, STORE
from gateway.http.auth import caller
from gateway.http.paging import one_of, page_response
from gateway.http.views import webhook_delivery_view

routes = web.RouteTableDef()
STATUSES: Final = ("pending", "succeeded", "dead", "disabled")


class ReplaySince(BaseModel):
    """Every dead or disabled delivery of ``endpoint`` created at or after ``since`` (ISO 8601)."""

    model_config = ConfigDict(extra="forbid")

    endpoint: StrictStr
    since: StrictStr | None = None


@routes.get("/api/v1/webhook-deliveries")
async def list_webhook_deliveries(request: web.Request) -> web.Response:
    """The tenant's webhook deliveries, newest first, by status and endpoint, a page at a time."""
    principal = caller(request)
    store, status, endpoint = request.app[STORE], one_of("status", request.query.get("status"), STATUSES), request.query.get("endpoint") or None
    return await page_response(
        request,
        lambda limit, cursor: store.list_webhook_deliveries(
            principal.tenant, status=status, endpoint=endpoint, limit=limit, cursor=cursor, mode=principal.scope
        ),
        webhook_delivery_view,
    )


@routes.post("/api/v1/webhook-deliveries/{delivery_id}/replay")
async def replay_one(request: web.Request) -> web.Response:
    principal = caller(request)
    delivery_id = request.match_info["delivery_id"]
    store = request.app[STORE]
    if not ids.has_prefix(delivery_id, ids.WEBHOOK):
        raise NotFoundError(f"No webhook delivery {delivery_id!r}.", code="webhook_delivery_not_found")
    replayed = await store.replay_webhooks(principal.tenant, delivery_ids=[delivery_id], mode=principal.scope)
    request.app[EVENT_WEBHOOKS].wake()
    if not replayed:
        status = await store.webhook_delivery_status(principal.tenant, delivery_id, mode=principal.scope)
        if status is None:
            raise NotFoundError(f"No webhook delivery {delivery_id!r}.", code="webhook_delivery_not_found")
        raise ConflictError(f"Webhook delivery {delivery_id!r} is {status}, not dead or disabled.", code="not_replayable")
    return json_response({"replayed": replayed}, 202)


@routes.post("/api/v1/webhook-deliveries/replay")
async def replay_since(request: web.Request) -> web.Response:
    """Replay an endpoint's dead or disabled deliveries since a time (all of them without one)."""
    principal = caller(request)
    principal.require_live("Replaying an endpoint's deliveries")
    body: ReplaySince = parse_model(ReplaySince, await read_json(request))
    since = _since(body.since)
    replayed = await request.app[STORE].replay_webhooks(principal.tenant, endpoint=body.endpoint, since=since)
    request.app[EVENT_WEBHOOKS].wake()
    return json_response({"replayed": len(replayed), "webhook_delivery_ids": replayed}, 202)


def _since(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_timestamp(value)
    except ValueError as err:
        raise ValidationError(f"since {err}.", code="invalid_schedule", details=[ErrorDetail("since", str(err), "invalid_schedule")]) from None
