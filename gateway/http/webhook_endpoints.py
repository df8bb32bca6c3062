"""``/api/v1/webhook-endpoints``: how the tenant's event webhook endpoints are faring, and enabling one again.

An endpoint is ``active``, ``failing`` (no success since ``failing_since``) or ``disabled``: it
answered 410 Gone, or failed continuously for its policy's ``disable_after``. A disabled
endpoint's events are kept, held as ``disabled`` deliveries; enabling it sends them.
"""

from __future__ import annotations

from aiohttp import web

from gateway.errors import NotFoundError
from gateway.http.api import json_response
from gateway.http.appkeys import EVENT_WEBHOOKS, STORE
from gateway.http.auth import caller, policy_of
from gateway.http.views import webhook_endpoint_view
from gateway.policy.models import WebhookEndpointPolicy

routes = web.RouteTableDef()


@routes.get("/api/v1/webhook-endpoints")
async def list_endpoints(request: web.Request) -> web.Response:
    principal = caller(request)
    endpoints = policy_of(request).document.webhooks.get(principal.tenant, {})
    states = await request.app[STORE].webhook_endpoint_states(principal.tenant)
    items = [webhook_endpoint_view(name, endpoint, states.get(name)) for name, endpoint in sorted(endpoints.items())]
    return json_response({"items": items})


@routes.post("/api/v1/webhook-endpoints/{endpoint}/enable")
async def enable(request: web.Request) -> web.Response:
    """Enable a disabled endpoint and send what it held back; enabling an active one changes nothing."""
    principal = caller(request)
    principal.require_live("Enabling an endpoint")
    name, endpoint = _endpoint(request, principal.tenant)
    store = request.app[STORE]
    requeued = await store.enable_webhook_endpoint(principal.tenant, name)
    request.app[EVENT_WEBHOOKS].wake()
    state = (await store.webhook_endpoint_states(principal.tenant)).get(name)
    return json_response({"endpoint": webhook_endpoint_view(name, endpoint, state), "requeued": requeued})


def _endpoint(request: web.Request, tenant: str) -> tuple[str, WebhookEndpointPolicy]:
    name = request.match_info["endpoint"]
    endpoint = policy_of(request).document.webhooks.get(tenant, {}).get(name)
    if endpoint is None:
        raise NotFoundError(f"No webhook endpoint {name!r}.", code="webhook_endpoint_not_found")
    return name, endpoint

