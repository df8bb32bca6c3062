"""The webhook provider against a real receiver on loopback, checked with the standardwebhooks package."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from standardwebhooks import Webhook

from gateway import OutboundMessage, PermanentDeliveryError, ProviderContext, TransientDeliveryError
from gateway.clock import SystemClock
from plugins.webhook import WebhookProvider

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class Receiver:
    def __init__(self) -> None:
        self.answers: list[tuple[int, dict[str, str]]] = []
        self.received: list[tuple[dict[str, str], bytes]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((dict(request.headers), await request.read()))
        status, headers = self.answers.pop(0) if self.answers else (204, {})
        return web.Response(status=status, headers=headers)


@pytest.fixture
async def receiver() -> Any:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    receiver.url = str(server.make_url("/hook"))
    yield receiver
    await server.close()


@pytest.fixture
async def provider() -> Any:
    # Real time: the receiver checks the signature's timestamp against its own clock.
    async with aiohttp.ClientSession() as session:
        yield WebhookProvider("hook", {"secret": SECRET}, ProviderContext(session=session, clock=SystemClock(), report=lambda _u: None))


def message(url: str) -> OutboundMessage:
    return OutboundMessage(
        delivery_id="dlv_01TEST", notification_id="ntf_01TEST", tenant="acme", channel="webhook", to=url,
        recipient={"url": url}, body="Order 1001 shipped",
    )


async def test_posts_json_signed_the_standard_webhooks_way(provider: WebhookProvider, receiver: Any) -> None:
    receipt = await provider.send(message(receiver.url))
    headers, body = receiver.received[0]
    lowered = {k.lower(): v for k, v in headers.items()}
    payload = Webhook(SECRET).verify(body, {k: lowered[k] for k in ("webhook-id", "webhook-timestamp", "webhook-signature")})
    assert payload["body"] == "Order 1001 shipped"
    assert lowered["webhook-id"] == "dlv_01TEST"
    assert lowered["idempotency-key"] == "dlv_01TEST"
    assert receipt.provider_message_id == "dlv_01TEST"


@pytest.mark.parametrize(
    ("status", "headers", "error", "retry_after"),
    [
        (500, {}, TransientDeliveryError, None),
        (503, {"Retry-After": "120"}, TransientDeliveryError, 120.0),
        (429, {"Retry-After": "7"}, TransientDeliveryError, 7.0),
        (408, {}, TransientDeliveryError, None),
        (400, {}, PermanentDeliveryError, None),
        (404, {}, PermanentDeliveryError, None),
        (302, {"Location": "http://127.0.0.1:1/"}, PermanentDeliveryError, None),
    ],
)
async def test_answers_are_classified_transient_or_permanent(
    provider: WebhookProvider, receiver: Any, status: int, headers: dict[str, str], error: type[Exception], retry_after: float | None
) -> None:
    receiver.answers.append((status, headers))
    with pytest.raises(error) as caught:
        await provider.send(message(receiver.url))
    if retry_after is not None:
        assert caught.value.retry_after == retry_after  # type: ignore[attr-defined]
    assert len(receiver.received) == 1, "redirects are not followed"


async def test_an_unreachable_endpoint_is_transient(provider: WebhookProvider, unused_tcp_port: int) -> None:
    with pytest.raises(TransientDeliveryError, match="could not reach"):
        await provider.send(message(f"http://127.0.0.1:{unused_tcp_port}/hook"))


def test_the_secret_is_masked_in_repr(provider: WebhookProvider) -> None:
    assert SECRET not in repr(provider)
    assert "********" in repr(provider)
