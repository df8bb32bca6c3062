"""``/healthz`` (the process is up) and ``/readyz`` (it can take and deliver traffic)."""

from __future__ import annotations

from aiohttp import web

from gateway.clock import isoformat
from gateway.errors import PolicyIssue
from gateway.http.api import json_response
from gateway.http.appkeys import DISPATCHER, POLICIES, STORE
from gateway.http.auth import public
from gateway.policy.view import PolicyHolder

routes = web.RouteTableDef()


@routes.get("/healthz")
@public
async def healthz(_request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@routes.get("/readyz")
@public
async def readyz(request: web.Request) -> web.Response:
    app = request.app
    store = app.get(STORE)
    holder = app.get(POLICIES)
    dispatcher = app.get(DISPATCHER)
    checks = {
        # A store refusing writes (a full disk) is not ready until a write is kept again: try one.
        "store": store is not None and store.is_open and (store.writable or await store.probe_writes()),
        "policies": holder is not None,
        "dispatcher": dispatcher is not None and dispatcher.running,
    }
    body: dict[str, object] = {"ready": all(checks.values()), "checks": checks}
    if holder is not None:
        body["policy"] = _policy_status(holder)
    return json_response(body, 200 if body["ready"] else 503)


def _policy_status(holder: PolicyHolder) -> dict[str, object]:
    """The set being served, and why the files on disk were last refused if they still are.

    A refused change leaves the gateway ready: the last good set keeps serving.
    """
    policy, error = holder.current, holder.last_error
    return {
        "version": policy.version,
        "files": list(policy.files),
        "last_reload_at": isoformat(holder.last_reload_at),
        "last_error": [_issue(issue) for issue in error.issues] if error else None,
        "last_error_at": isoformat(holder.last_error_at) if holder.last_error_at is not None else None,
    }


def _issue(issue: PolicyIssue) -> dict[str, object]:
    return {"file": issue.file, "line": issue.line, "path": issue.path, "message": issue.message}
