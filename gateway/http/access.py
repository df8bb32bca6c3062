"""The request log and the request metrics: one middleware, outermost, that sees every answer as the client gets it.

Each request is counted (``tidings_http_requests_total`` by method, route template and status, and
its duration) and, unless ``TIDINGS_ACCESS_LOG=false`` or the level is above INFO, logged as one
line on ``gateway.access``: method, route template, status, duration in milliseconds and the
calling tenant. The route is the template (``/api/v1/notifications/{notification_id}``), never the
path: the path holds ids and, for a request no route matched, whatever the client sent. The key
is never read here; the tenant comes from the principal authentication put on the request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

from gateway.http.appkeys import METRICS, SETTINGS
from gateway.http.auth import PRINCIPAL
from gateway.logconfig import ACCESS_LOGGER, FIELDS
from gateway.metrics import METHODS, UNMATCHED

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = logging.getLogger(ACCESS_LOGGER)
ABORTED: Final = 499  # the status counted for a request whose client went away before it was answered (nginx's number)


def route_of(request: web.Request) -> str:
    """The template of the route ``request`` matched, or :data:`~gateway.metrics.UNMATCHED`."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED


@web.middleware
async def access_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = ABORTED
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        _observe(request, status, time.perf_counter() - started)


def _observe(request: web.Request, status: int, seconds: float) -> None:
    route = route_of(request)
    method = request.method if request.method in METHODS else "other"  # a method is the client's free text too
    request.app[METRICS].count_request(method, route, status, seconds)
    if request.app[SETTINGS].access_log and log.isEnabledFor(logging.INFO):
        principal = request.get(PRINCIPAL)
        tenant = principal.tenant if principal is not None else None
        millis = round(seconds * 1000, 1)
        log.info(
            "%s %s %d %.1fms tenant=%s", method, route, status, millis, tenant or "-",
            extra={FIELDS: {"method": method, "route": route, "status": status, "duration_ms": millis, "tenant": tenant}},
        )
