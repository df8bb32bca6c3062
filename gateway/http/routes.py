"""HTTP resources, one module each; :func:`setup_routes` mounts them all."""

from aiohttp import web

from gateway.errors import MethodNotAllowedError
from gateway.http import (
    acknowledgements,
    capabilities,
    contacts,
    dead_letters,
    docs,
    events,
    health,
    notifications,
    replies,
    webhook_deliveries,
    webhook_endpoints,
    webhooks,
)
from gateway.http.auth import Handler, public


def setup_routes(app: web.Application) -> None:
    app.add_routes(health.routes)
    app.add_routes(notifications.routes)
    app.add_routes(capabilities.routes)
    app.add_routes(dead_letters.routes)
    app.add_routes(webhooks.routes)
    app.add_routes(webhook_deliveries.routes)
    app.add_routes(webhook_endpoints.routes)
    app.add_routes(replies.routes)
    app.add_routes(contacts.routes)
    app.add_routes(events.routes)
    app.add_routes(acknowledgements.routes)
    docs.setup(app)  # it describes every route added before the app starts
    shadow_templates(app.router)


def shadow_templates(router: web.UrlDispatcher) -> None:
    """Let a path without parameters answer every method itself, as OpenAPI matches a concrete path before a templated one.

    Without it, ``GET /api/v1/notifications/send`` reaches ``GET /api/v1/notifications/{notification_id}``
    (a 404 for a notification named ``send``) and a 405 on the concrete path lists the templated
    path's methods in ``Allow``; with it, any method the concrete path does not serve is a 405
    listing exactly the methods it does.
    """
    plain: dict[str, list[web.PlainResource]] = {}
    for resource in router.resources():
        if isinstance(resource, web.PlainResource):
            plain.setdefault(resource.canonical, []).append(resource)
    for resources in plain.values():
        allowed = sorted({route.method for resource in resources for route in resource})
        resources[-1].add_route("*", public(_not_allowed(allowed)))  # the last: a path's earlier resources still serve their methods


def _not_allowed(allowed: list[str]) -> Handler:
    async def refuse(request: web.Request) -> web.StreamResponse:
        methods = ", ".join(allowed)
        raise MethodNotAllowedError(f"{request.method} is not allowed here (allowed: {methods}).", headers={"Allow": methods})

    return refuse
