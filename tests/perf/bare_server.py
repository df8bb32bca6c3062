"""The baseline: a bare aiohttp handler on the same event loop (uvloop) and JSON library.

It parses the same JSON POST with orjson and answers 202 with a similar body, storing nothing.
Run as ``python -m tests.perf.bare_server PORT``; prints a line once listening.
"""

from __future__ import annotations

import itertools

import orjson
from aiohttp import web

from tests.perf.servers import serve_standalone

_counter = itertools.count()


async def send(request: web.Request) -> web.Response:
    body = orjson.loads(await request.read())
    if not isinstance(body, dict):
        return web.Response(status=422)
    n = next(_counter)
    channels = body.get("notification", {}).get("channels", [])
    reply = {
        "notification_id": f"ntf_{n:026d}",
        "status": "queued",
        "mode": "test",
        "deliveries": [{"delivery_id": f"dlv_{n:026d}", "channel": c, "status": "queued"} for c in channels],
    }
    return web.Response(body=orjson.dumps(reply), status=202, content_type="application/json")


def main() -> None:
    serve_standalone("bare", [web.post("/api/v1/notifications/send", send)])


if __name__ == "__main__":
    main()
