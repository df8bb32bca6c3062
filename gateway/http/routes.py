"""HTTP resources, one module each; :func:`setup_routes` mounts them all."""

from aiohttp import web

from gateway.dashboard import pages as dashboard
from gateway.http import (
    acknowledgements,
    capabilities,
    contacts,
    dead_letters,
    events,
    health,
    metrics,
    notifications,
    replies,
    webhook_deliveries,
    webhook_endpoints,
    webhooks,
)


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
