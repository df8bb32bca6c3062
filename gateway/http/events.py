"""``/api/v1/events``: business events posted by a tenant's systems, and what the routes made of them.

An event is kept before the answer (``202 accepted``) and processed from the store afterwards
(:mod:`gateway.engine.event_processor`). An ``event_id`` the tenant used before in the key's
mode answers ``200 duplicate`` and does nothing, whatever the body says this time. Test and
live keys are separate worlds: each key posts, reads and lists only the events of its mode,
and the other mode's are a 404, as another tenant's are.
"""

from __future__ import annotations

import re

from aiohttp import web

from gateway.engine.business_events import EVENT_NAME, EventRequest, check_size, new_event
from gateway.engine.quotas import refusal
from gateway.errors import NotFoundError
from gateway.http.api import json_response, parse_model, read_json
from gateway.http.appkeys import EVENT_PROCESSOR, METRICS, QUOTAS, STORE
from gateway.http.auth import caller, policy_of
from gateway.http.paging import bad_parameter, page_response
from gateway.http.rate_limits import events_counted
from gateway.http.views import event_view
from gateway.store import EventFilter

routes = web.RouteTableDef()


@routes.post("/api/v1/events")
@events_counted
async def post_event(request: web.Request) -> web.Response:
    """Keep a new business event to be routed (202), or say its id was seen before (200) and do nothing.

    A new event is taken from the tenant's ``events_per_minute`` first (429 when it has no room,
    nothing kept); a duplicate gives it back, and is answered as one even when there is no room. The messages it fans out to count against the
    tenant's message quota when it is processed.
    """
    body = await read_json(request)
    check_size(body)
    payload: EventRequest = parse_model(EventRequest, body)
    policy, principal, quotas = policy_of(request), caller(request), request.app[QUOTAS]
    event = new_event(payload, policy, principal)
    decision = quotas.take_events(policy, principal.tenant, principal.mode)
    if not decision.granted:
        if await request.app[STORE].get_business_event(principal.tenant, principal.mode, event.event_id) is not None:
            return json_response({"status": "duplicate", "event_id": event.event_id}, 200)  # a retry of one kept: told so, limit or not
        raise refusal(decision, "event")
    try:
        accepted = await request.app[STORE].accept_business_event(event)
    except Exception:  # nothing was kept (a cancelled wait is not refunded: its write goes on)
        quotas.return_events(policy, principal.tenant, principal.mode)
        raise
    if not accepted:
        quotas.return_events(policy, principal.tenant, principal.mode)
        return json_response({"status": "duplicate", "event_id": event.event_id}, 200)
    request.app[METRICS].events_accepted.labels(principal.tenant, principal.mode).inc()
    request.app[EVENT_PROCESSOR].wake()
    return json_response({"status": "accepted", "event_id": event.event_id}, 202)


@routes.get("/api/v1/events/{event_id}")
async def get_event(request: web.Request) -> web.Response:
    """One event as received, whether it was processed, and what each matching route did for each recipient."""
    principal = caller(request)
    event_id = request.match_info["event_id"]
    found = await request.app[STORE].get_business_event(principal.tenant, principal.mode, event_id)
    if found is None:
        raise NotFoundError(f"No event {event_id!r}.", code="event_not_found")
    return json_response(event_view(found, full=True))


@routes.get("/api/v1/events")
async def list_events(request: web.Request) -> web.Response:
    """The key's mode's events, newest first, optionally of one ``event_name``, a page at a time."""
    principal, store = caller(request), request.app[STORE]
    name = request.query.get("event_name") or None
    if name is not None and not re.fullmatch(EVENT_NAME, name):
        raise bad_parameter("event_name", "must be an event name: letters, digits and _ . : -, at most 128 characters")
    where = EventFilter(mode=principal.mode, event_name=name)
    return await page_response(
        request, lambda limit, cursor: store.list_business_events(principal.tenant, where, limit=limit, cursor=cursor),
        lambda item: event_view(item, full=False),
    )
