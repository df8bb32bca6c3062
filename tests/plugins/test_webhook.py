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


async def webhook_provider(**config: Any) -> Any:
    # Real time: the receiver checks the signature's timestamp against its own clock.
    async with aiohttp.ClientSession() as session:
        found = WebhookProvider("hook", {"secret": SECRET, **config}, ProviderContext(session=session, clock=SystemClock(), report=lambda _u: None))
        yield found
        await found.aclose()


@pytest.fixture
async def provider() -> Any:
    """An instance that may send to the loopback receiver: ``allow_private: true``."""
    async for found in webhook_provider(allow_private=True):
        yield found


@pytest.fixture
async def guarded() -> Any:
    """An instance as configured by default: public addresses only."""
    async for found in webhook_provider():
        yield found


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


async def test_an_unreachable_endpoint_is_transient_in_words_that_do_not_map_the_network(provider: WebhookProvider, unused_tcp_port: int) -> None:
    with pytest.raises(TransientDeliveryError) as caught:
        await provider.send(message(f"http://127.0.0.1:{unused_tcp_port}/hook"))
    assert caught.value.message == "could not connect to the endpoint" and caught.value.code == "recipient_unavailable"
    assert caught.value.recipient_fault, "the url is the recipient: its failures never count against the instance"
    assert str(unused_tcp_port) not in str(caught.value.detail)


def ssrf_targets(port: int) -> list[str]:
    """Where a tenant's url must not lead: the gateway's own host, its network, the cloud's metadata service."""
    return [
        f"http://127.0.0.1:{port}/hook", f"http://127.9.9.9:{port}/hook", f"http://localhost:{port}/hook", f"http://[::1]:{port}/hook",
        f"http://[::ffff:127.0.0.1]:{port}/hook", f"http://0.0.0.0:{port}/hook", f"http://[::]:{port}/hook",
        "http://169.254.169.254/latest/meta-data/", "http://100.100.100.200/latest/meta-data/", "http://100.64.0.1/",
        "http://10.0.0.1/", "http://172.16.0.1/", "http://192.168.1.1/", "http://[fd00::1]/", "http://[fe80::1]/",
        "http://[2002:7f00:1::]/", "http://[64:ff9b::a9fe:a9fe]/",
    ]


async def test_without_allow_private_every_non_public_address_is_refused_before_connecting(guarded: WebhookProvider, receiver: Any) -> None:
    port = int(receiver.url.rsplit(":", 1)[1].split("/")[0])
    for url in ssrf_targets(port):
        with pytest.raises(PermanentDeliveryError) as caught:
            await guarded.send(message(url))
        assert caught.value.code == "address_not_allowed", url
        assert "allow_private" in caught.value.message and url not in caught.value.message
    assert receiver.received == [], "nothing reached the loopback receiver"


async def test_allow_private_is_off_unless_the_instance_sets_it() -> None:
    properties = WebhookProvider.config_schema["properties"]
    assert properties["allow_private"] == {**properties["allow_private"], "type": "boolean", "default": False}


def test_the_secret_is_masked_in_repr(provider: WebhookProvider) -> None:
    assert SECRET not in repr(provider)
    assert "********" in repr(provider)
