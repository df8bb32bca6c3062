"""A receiver for the webhook provider: verifies Standard Webhooks signatures, and fails on cue.

Also the webhook plugin's conformance kit. The receiver checks each POST the way a careful
tenant would, with the ``standardwebhooks`` package: a bad signature gets 401.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError

from fakes.loopback import LoopbackFake
from gateway.conformance import Fault, Kit, outbound
from plugins.webhook import WebhookProvider

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class Receiver(LoopbackFake):
    """A tenant's endpoint on loopback; ``received`` holds each verified payload."""

    def __init__(self, secret: str = SECRET) -> None:
        super().__init__()
        self.verifier = Webhook(secret)
        self.received: list[dict[str, Any]] = []
        self._faults: list[Fault] = []

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
            await self.held()
        if fault == "5xx":
            return web.json_response({"error": "busy"}, status=503)
        if fault == "reject_recipient":
            return web.json_response({"error": "no such hook"}, status=404)
        self.received.append(payload)
        return web.Response(status=204)

    url_path = "/hook"

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/hook", self.handle)


def serve() -> Any:
    return Receiver().serving()


KIT = Kit(
    plugin=WebhookProvider,
    serve=serve,
    config=lambda _fake: {"secret": SECRET, "timeout_seconds": 0.3, "allow_private": True},  # the fake is on loopback
    message=lambda fake: outbound("webhook", fake.url, {"url": fake.url}),
    secrets=(SECRET,),
)
