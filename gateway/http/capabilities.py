"""``/api/v1/channels/capabilities``: what each channel needs and who serves it for the caller."""

from __future__ import annotations

from aiohttp import web

from gateway.http.api import json_response
from gateway.http.auth import caller, policy_of
from gateway.policy.models import SANDBOX

routes = web.RouteTableDef()


@routes.get("/api/v1/channels/capabilities")
async def capabilities(request: web.Request) -> web.Response:
    policy, principal = policy_of(request), caller(request)
    channels = []
    for spec in policy.channels:
        providers = [SANDBOX] if principal.is_test else list(policy.providers_for(principal.tenant, spec.name))
        channels.append(
            {
                "channel": spec.name,
                "description": spec.description,
                "recipient_fields": list(spec.recipient_fields),
                "template_required": spec.template_required,
                "raw_allowed": spec.raw_allowed,
                "subject": spec.subject,
                "providers": providers,
                "available": bool(providers),
                "max_body_chars": None if principal.is_test else policy.max_body_chars(principal.tenant, spec.name),
            }
        )
    return json_response({"mode": principal.mode, "channels": channels})
