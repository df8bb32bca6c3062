"""A fast stand-in for Meta's Graph API messages endpoint, for the inbound-receipts benchmark.

Accepts every ``POST /{version}/{phone_number_id}/messages`` carrying the bench token and
answers with a fresh ``wamid``, the way the Cloud API does. Run as
``python -m tests.perf.graph PORT``.
"""

from __future__ import annotations

import itertools

import orjson
from aiohttp import web

from tests.perf.servers import serve_standalone

TOKEN = "bench-graph-token"
_ids = itertools.count(1)


async def messages(request: web.Request) -> web.Response:
    if request.headers.get("Authorization") != f"Bearer {TOKEN}":
        return web.Response(status=401, body=b'{"error": {"message": "Invalid OAuth access token.", "code": 190}}')
    body = orjson.loads(await request.read())
    answer = {"messaging_product": "whatsapp", "contacts": [{"input": body["to"], "wa_id": body["to"]}],
              "messages": [{"id": f"wamid.bench{next(_ids):012d}"}]}
    return web.Response(body=orjson.dumps(answer), content_type="application/json")


if __name__ == "__main__":
    serve_standalone("graph", [web.post("/{version}/{phone_number_id}/messages", messages)])
