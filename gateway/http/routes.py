"""HTTP resources, one module each; :func:`setup_routes` mounts them all."""

from aiohttp import web

from gateway.dashboard import pages as dashboard
from gateway.errors import MethodNotAllowedError
from gateway.http import (
    acknowledgements,
    capabilities,
    contacts,
    dead_letters,
    docs,
    events,
    health,
    metrics,
    notifications,
    replies,
    webhook_deliveries,
    webhook_endpoints,
    webhooks,
)
from gateway.http.auth import public


def setup_routes(app: web.Application) -> None:
    app.add_routes(health.routes)
    app.add_routes(metrics.routes)
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
    app.add_routes(dashboard.routes)
    docs.setup(app)  # it describes every route added before the app starts
    shadow_templates(app.router)


def shadow_templates(router: web.UrlDispatcher) -> None:
    """Let a path without parameters answer every method itself, as OpenAPI matches a concrete path before a templated one.

    Without it, ``GET /api/v1/notifications/send`` reaches ``GET /api/v1/notifications/{notification_id}``
    (a 404 for a notification named ``send``) and a 405 on the concrete path lists the templated
    path's methods in ``Allow``; with it, any method the concrete path does not serve is a 405
    listing exactly the methods it does.
    """
    last: dict[str, web.PlainResource] = {}
    for resource in router.resources():
        if isinstance(resource, web.PlainResource):
            last[resource.canonical] = resource
    for resource in last.values():
        resource.add_route("*", refuse_method)  # on the last: a path's earlier resources still serve their methods


@public
async def refuse_method(request: web.Request) -> web.StreamResponse:
    """405 for a method no resource of this concrete path serves, with ``Allow`` listing the methods they do."""
    path = request.match_info.route.resource.canonical  # type: ignore[union-attr]  # a "*" route always has its resource
    methods = ", ".join(sorted({
        route.method for resource in request.app.router.resources() if isinstance(resource, web.PlainResource) and resource.canonical == path
        for route in resource if route.method != "*"
    }))
    raise MethodNotAllowedError(f"{request.method} is not allowed here (allowed: {methods}).", headers={"Allow": methods})
