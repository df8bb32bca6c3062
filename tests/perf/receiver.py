"""A fast webhook receiver for the delivery benchmark, in its own process so it costs the driver no GIL.

Answers every ``POST`` with 200 and notes, per ``webhook-id`` (the delivery id the webhook plugin
signs with), when the first request for it arrived and on which client port, so the benchmark
can tell the engine's delay per delivery and how many connections the gateway's pool opened.
``GET /arrivals`` returns ``{"requests": n, "first": {delivery_id: [unix_time, client_port]}}``.
Run as ``python -m tests.perf.receiver PORT``.
"""

from __future__ import annotations

import time

import orjson
from aiohttp import web

from tests.perf.servers import serve_standalone

_first: dict[str, tuple[float, int]] = {}
_requests = 0


async def hook(request: web.Request) -> web.Response:
    global _requests
    arrived = time.time()
    _requests += 1
    await request.read()
    peer = request.transport.get_extra_info("peername") if request.transport else None
    _first.setdefault(request.headers.get("webhook-id", ""), (arrived, peer[1] if peer else 0))
    return web.Response()


async def arrivals(_request: web.Request) -> web.Response:
    return web.Response(body=orjson.dumps({"requests": _requests, "first": _first}), content_type="application/json")


async def count(_request: web.Request) -> web.Response:
    return web.Response(body=orjson.dumps({"requests": _requests, "distinct": len(_first)}), content_type="application/json")


def main() -> None:
    serve_standalone("receiver", [web.post("/{path:.*}", hook), web.get("/arrivals", arrivals), web.get("/count", count)])


if __name__ == "__main__":
    main()
