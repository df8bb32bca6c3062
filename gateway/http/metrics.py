"""``GET /metrics``: every ``tidings_*`` metric in the Prometheus text format, for a scraper inside the network.

Open like ``/healthz`` unless ``TIDINGS_METRICS_TOKEN`` is set; then the scraper sends it as
``Authorization: Bearer`` (a Prometheus ``authorization`` block), and anything else is a 401 in
the error envelope. What is a state, not a count, is read now: the queue per channel (from the
store's index of due work), each provider instance's circuit, the policy version; and the dead
letters committed so far are counted before the answer.
"""

from __future__ import annotations

import hmac

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.errors import UnauthorizedError
from gateway.http.appkeys import CLOCK, DEAD_LETTER_LOG, DISPATCHER, METRICS, POLICIES, SETTINGS, STORE
from gateway.http.auth import public

routes = web.RouteTableDef()


@routes.get("/metrics")
@public
async def metrics(request: web.Request) -> web.Response:
    app = request.app
    _check_token(request)
    metrics = app[METRICS]
    await app[DEAD_LETTER_LOG].catch_up()
    metrics.show_queues(await app[STORE].queue_depths(), app[CLOCK].now())
    policy = app[POLICIES].current
    circuits = app[DISPATCHER].circuits()
    metrics.show_circuits({name: circuits.get(name, "closed") for name in sorted(policy.provider_instances)})
    metrics.show_policy(policy.version)
    return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def _check_token(request: web.Request) -> None:
    token = request.app[SETTINGS].metrics_token
    if token is None:
        return
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.get_secret_value().encode()):
        raise UnauthorizedError(
            "GET /metrics needs Authorization: Bearer with the TIDINGS_METRICS_TOKEN.", code="invalid_metrics_token",
            headers={"WWW-Authenticate": "Bearer"},
        )
