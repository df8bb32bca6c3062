"""``POST /api/v1/notifications/{id}/acknowledge``: someone saw the alert; stop what still waits to chase them.

Records who (the API key's name, else its prefix), when and an optional note; skips the
notification's channels still waiting their fallback turn; and, when a route made the
notification, holds back repeats of its fingerprint on that route for the route's
``repeat_after``. Twice is the same as once: the first acknowledgement stands and is answered
again. Acknowledging is an act in the key's own mode: a notification of the other mode is a
404, as another tenant's is.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web
from pydantic import BaseModel, ConfigDict, StrictStr
from pydantic import Field as PydanticField

from gateway import ids
from gateway.errors import NotFoundError
from gateway.http.api import json_response, parse_model, read_json
from gateway.http.appkeys import STORE
from gateway.http.auth import caller, policy_of
from gateway.http.views import acknowledgement_view
from gateway.policy.durations import parse_duration
from gateway.store import AcknowledgeRequest

routes = web.RouteTableDef()
MAX_NOTE: Final = 1000


class AcknowledgeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: StrictStr | None = PydanticField(None, max_length=MAX_NOTE)


@routes.post("/api/v1/notifications/{notification_id}/acknowledge")
async def acknowledge(request: web.Request) -> web.Response:
    """Acknowledge one notification; 200 with the acknowledgement (the first one, if it was acknowledged before)."""
    principal, policy = caller(request), policy_of(request)
    notification_id = request.match_info["notification_id"]
    body = await read_json(request) if request.can_read_body else {}
    payload: AcknowledgeBody = parse_model(AcknowledgeBody, body)
    if not ids.has_prefix(notification_id, ids.NOTIFICATION):
        raise NotFoundError(f"No notification {notification_id!r}.", code="notification_not_found")
    found = await request.app[STORE].get_notification(principal.tenant, notification_id, mode=principal.mode)
    if found is None:
        raise NotFoundError(f"No notification {notification_id!r}.", code="notification_not_found")
    route = policy.document.routes.get(found.route) if found.route is not None else None
    repeat_after = parse_duration(route.repeat_after) if route is not None and route.repeat_after is not None else None
    ask = AcknowledgeRequest(principal.tenant, principal.mode, notification_id, principal.label, principal.actor, payload.note, repeat_after)
    done = await request.app[STORE].acknowledge(ask)
    if done is None:  # purged between the read and the write
        raise NotFoundError(f"No notification {notification_id!r}.", code="notification_not_found")
    acknowledgement, _new = done
    return json_response({"notification_id": notification_id, "acknowledged": acknowledgement_view(acknowledgement)})
