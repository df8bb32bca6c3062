"""A receiver for the webhook provider: verifies Standard Webhooks signatures, and fails on cue.

Also the webhook plugin's conformance kit. The receiver checks each POST the way a careful
tenant would, with the ``standardwebhooks`` package: a bad signature gets 401.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer
from standardwebhooks import Webhook, WebhookVerificationError

from gateway.conformance import Fault, Kit, outbound
from plugins.webhook import WebhookProvider

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class Receiver:
    """A tenant's endpoint on loopback; ``received`` holds each verified payload."""

    def __init__(self, secret: str = SECRET) -> None:
        self.verifier = Webhook(secret)
        self.url = ""
        self.received: list[dict[str, Any]] = []
        self._faults: list[Fault] = []
        self._stopping = asyncio.Event()

    def fail_next(self, fault: Fault) -> None:
        self._faults.append(fault)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            payload = self.verifier.verify(body, dict(request.headers))
        except WebhookVerificationError:
            return web.json_response({"error": "bad signature"}, status=401)
        fault = self._faults.pop(0) if self._faults else None
        if fault == "timeout":
            await self._stopping.wait()
        if fault == "5xx":
            return web.json_response({"error": "busy"}, status=503)
        if fault == "reject_recipient":
            return web.json_response({"error": "no such hook"}, status=404)
        self.received.append(payload)
        return web.Response(status=204)

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[Receiver]:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        self.url = str(server.make_url("/hook"))
        try:
            yield self
        finally:
            self._stopping.set()
            await server.close()


def serve() -> Any:
    return Receiver().serving()


KIT = Kit(
    plugin=WebhookProvider,
    serve=serve,
    config=lambda _fake: {"secret": SECRET, "timeout_seconds": 0.3},
    message=lambda fake: outbound("webhook", fake.url, {"url": fake.url}),
    secrets=(SECRET,),
)
