"""``/healthz`` (the process is up) and ``/readyz`` (it can take and deliver traffic)."""

from __future__ import annotations

from aiohttp import web

from gateway.api import json_response
from gateway.appkeys import DISPATCHER, POLICIES, STORE
from gateway.clock import isoformat

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(_request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    app = request.app
    store = app.get(STORE)
    holder = app.get(POLICIES)
    dispatcher = app.get(DISPATCHER)
    checks = {
        "store": store is not None and store.is_open,
        "policies": holder is not None,
        "dispatcher": dispatcher is not None and dispatcher.running,
    }
    body: dict[str, object] = {"ready": all(checks.values()), "checks": checks}
    if holder is not None:
        policy = holder.current
        body["policy"] = {
            "version": policy.version,
            "files": list(policy.files),
            "last_reload_at": isoformat(holder.last_reload_at),
            "last_error": str(holder.last_error) if holder.last_error else None,
        }
    return json_response(body, 200 if body["ready"] else 503)
