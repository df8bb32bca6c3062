"""FakeVendorProvider against FakeVendor: every scripted outcome, and how the plugin classifies it.

Doubles as a check that the fake does what delivery-engine tests rely on: idempotent replays,
held requests released by the test, and the concurrency figures (``max_in_flight``,
``overlapping_keys``).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from fakes.vendor import ANY_RECIPIENT, PLUGIN_NAME, FakeVendor, FakeVendorProvider
from gateway import (
    InboundRequest,
    OutboundMessage,
    PermanentDeliveryError,
    ProviderContext,
    Sender,
    StatusUpdate,
    TransientDeliveryError,
    WebhookVerificationError,
)
from gateway.clock import SystemClock
from gateway.plugins import PluginCatalog
from gateway.policy.loading import load_policies

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "t0k_fake_vendor_for_tests"
PHONE = "+14155550100"


@pytest.fixture
async def vendor() -> AsyncIterator[FakeVendor]:
    async with FakeVendor(token=TOKEN) as vendor:
        yield vendor


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def provider_for(url: str, session: aiohttp.ClientSession, **config: Any) -> FakeVendorProvider:
    context = ProviderContext(session=session, clock=SystemClock(), report=lambda _updates: None)
    return FakeVendorProvider("vendor-a", {"url": url, "token": TOKEN} | config, context)


@pytest.fixture
def provider(vendor: FakeVendor, session: aiohttp.ClientSession) -> FakeVendorProvider:
    return provider_for(vendor.url, session)


def message(to: str = PHONE, delivery_id: str = "dlv_01FAKE", **fields: Any) -> OutboundMessage:
    content = {"body": "Your code is 123456"} | fields
    return OutboundMessage(
        delivery_id=delivery_id, notification_id="ntf_01FAKE", tenant="acme", channel="sms", to=to, recipient={"phone": to}, **content
    )


async def test_an_accepted_message_carries_token_sender_and_idempotency_key(vendor: FakeVendor, provider: FakeVendorProvider) -> None:
    receipt = await provider.send(message(sender=Sender("ACME")))
    [request] = vendor.requests
    assert receipt.provider_message_id == request.message_id == vendor.messages[0].id
    assert (request.authorized, request.status, request.outcome) == (True, 201, "ok")
    assert (request.to, request.body, request.sender, request.idempotency_key) == (PHONE, "Your code is 123456", "ACME", "dlv_01FAKE")


@pytest.mark.parametrize(
    ("outcome", "error", "code"),
    [
        ("500", TransientDeliveryError, "internal_error"),
        ("503", TransientDeliveryError, "service_unavailable"),
        ("429", TransientDeliveryError, "rate_limited"),
        ("400", PermanentDeliveryError, "invalid_recipient"),  # the vendor's invalid_number, in Tidings' words
    ],
)
async def test_scripted_faults_are_classified_transient_or_permanent_then_the_script_moves_on(
    vendor: FakeVendor, provider: FakeVendorProvider, outcome: str, error: type[Exception], code: str
) -> None:
    vendor.script(PHONE, [outcome])
    with pytest.raises(error) as caught:
        await provider.send(message())
    assert getattr(caught.value, "code") == code
    assert vendor.messages == []
    await provider.send(message())
    assert [r.status for r in vendor.requests] == [int(outcome), 201]


async def test_429_passes_the_vendors_retry_after_on(vendor: FakeVendor, provider: FakeVendorProvider) -> None:
    vendor.retry_after = 7
    vendor.script(PHONE, ["429"])
    with pytest.raises(TransientDeliveryError) as caught:
        await provider.send(message())
    assert caught.value.retry_after == 7.0


async def test_a_wrong_token_is_permanent_and_says_so(vendor: FakeVendor, session: aiohttp.ClientSession) -> None:
    wrong = FakeVendorProvider("vendor-a", {"url": vendor.url, "token": "nope"}, ProviderContext(session, SystemClock(), lambda _u: None))
    with pytest.raises(PermanentDeliveryError, match="token") as caught:
        await wrong.send(message())
    assert caught.value.code == "unauthorized"
    assert vendor.requests[0].authorized is False


async def test_a_message_without_body_is_refused_before_any_script_is_used(vendor: FakeVendor, provider: FakeVendorProvider) -> None:
    vendor.script(PHONE, ["503"])
    with pytest.raises(PermanentDeliveryError) as caught:
        await provider.send(message(body=None))
    assert caught.value.code == "missing_body"
    with pytest.raises(TransientDeliveryError):
        await provider.send(message())


async def test_a_timeout_is_transient_and_the_abandoned_request_is_not_accepted(vendor: FakeVendor, session: aiohttp.ClientSession) -> None:
    vendor.script(PHONE, ["timeout"])
    impatient = provider_for(vendor.url, session, timeout_seconds=0.05)
    with pytest.raises(TransientDeliveryError, match="timed out"):
        await impatient.send(message())
    await vendor.wait_for(lambda v: v.in_flight == 0)  # the client hung up; the vendor saw it go
    assert vendor.requests[0].abandoned and vendor.requests[0].status is None
    assert vendor.messages == []


async def test_a_held_request_released_by_the_test_is_accepted(vendor: FakeVendor, provider: FakeVendorProvider) -> None:
    vendor.script(PHONE, ["timeout"])
    sending = asyncio.create_task(provider.send(message()))
    await vendor.wait_for(lambda v: v.held == 1)
    vendor.release()
    receipt = await sending
    assert receipt.provider_message_id == vendor.messages[0].id


async def test_two_attempts_of_one_delivery_in_flight_at_once_are_reported_and_accepted_once(
    vendor: FakeVendor, provider: FakeVendorProvider
) -> None:
    vendor.script(PHONE, ["timeout", "timeout"])
    sending = [asyncio.create_task(provider.send(message())) for _ in range(2)]
    await vendor.wait_for(lambda v: v.held == 2)
    assert vendor.overlapping_keys == {"dlv_01FAKE"} and vendor.max_in_flight == 2
    vendor.release()
    first, second = await asyncio.gather(*sending)
    assert first.provider_message_id == second.provider_message_id
    assert len(vendor.messages) == 1 and [r.replayed for r in vendor.requests] == [False, True]


async def test_sequential_attempts_with_one_key_do_not_overlap(vendor: FakeVendor, provider: FakeVendorProvider) -> None:
    vendor.script(PHONE, ["500", "ok"])
    with pytest.raises(TransientDeliveryError):
        await provider.send(message())
    await provider.send(message())
    await provider.send(message(delivery_id="dlv_02FAKE"))
    assert vendor.overlapping_keys == set() and vendor.max_in_flight == 1 and len(vendor.messages) == 2


async def test_an_outage_refuses_everything_for_n_requests_or_until_it_ends(vendor: FakeVendor, provider: FakeVendorProvider) -> None:
    vendor.script(PHONE, ["400"])
    vendor.go_down(requests=2)
    for _ in range(2):
        with pytest.raises(TransientDeliveryError) as caught:
            await provider.send(message())
        assert caught.value.code == "service_down"
    vendor.go_down(status=503)
    with pytest.raises(TransientDeliveryError):
        await provider.send(message())
    vendor.come_up()
    with pytest.raises(PermanentDeliveryError):  # the script was kept for after the outage
        await provider.send(message())


async def test_a_script_for_any_recipient_plays_where_a_number_has_none(vendor: FakeVendor, provider: FakeVendorProvider) -> None:
    vendor.script(ANY_RECIPIENT, ["503"])
    vendor.script(PHONE, ["ok"])
    await provider.send(message())
    with pytest.raises(TransientDeliveryError):
        await provider.send(message(to="+14155550199"))
    vendor.default_outcome = "400"
    with pytest.raises(PermanentDeliveryError):
        await provider.send(message())


async def test_an_unreachable_vendor_is_transient(session: aiohttp.ClientSession) -> None:
    async with FakeVendor() as gone:
        url = gone.url
    with pytest.raises(TransientDeliveryError, match="could not reach"):
        await provider_for(url, session).send(message())


def test_a_misspelt_outcome_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown outcomes"):
        FakeVendor().script(PHONE, ["oops"])


class ReceiptSink:
    """Where the fake posts delivery receipts: kept as the InboundRequest the gateway would build."""

    def __init__(self) -> None:
        self.received: list[InboundRequest] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append(InboundRequest("POST", str(request.url), dict(request.headers), dict(request.query), body))
        return web.Response(status=204)


@pytest.mark.parametrize("outcome", ["ok", "ok_no_receipt"])
async def test_an_accepted_message_gets_a_signed_receipt_unless_scripted_without(
    session: aiohttp.ClientSession, outcome: str
) -> None:
    sink = ReceiptSink()
    app = web.Application()
    app.router.add_post("/receipts", sink.handle)
    async with TestServer(app, host="127.0.0.1") as server:
        async with FakeVendor(token=TOKEN, receipt_url=str(server.make_url("/receipts"))) as vendor:
            vendor.script(PHONE, [outcome])
            receipt = await provider_for(vendor.url, session).send(message())
            await vendor.wait_for(lambda v: len(v.messages) == 1)
    if outcome == "ok_no_receipt":
        assert sink.received == [] and vendor.receipts == []
        return
    provider = provider_for(vendor.url, session)
    await provider.verify_webhook(sink.received[0])
    [update] = await provider.parse_webhook(sink.received[0])
    assert isinstance(update, StatusUpdate)
    assert (update.provider_message_id, update.status) == (receipt.provider_message_id, "delivered")


async def test_a_receipt_with_a_wrong_signature_fails_verification(provider: FakeVendorProvider) -> None:
    headers = {"X-Fake-Timestamp": str(int(time.time())), "X-Fake-Signature": "00"}
    forged = InboundRequest("POST", "http://gw/hook", headers, {}, b'{"id": "msg_1", "status": "delivered"}')
    with pytest.raises(WebhookVerificationError):
        await provider.verify_webhook(forged)


def test_the_policy_entry_loads_with_the_token_from_a_file(tmp_path: Path) -> None:
    vendor = FakeVendor(token=TOKEN)
    vendor.url = "http://127.0.0.1:9"
    policy = tmp_path / "policies"
    policy.mkdir()
    providers = vendor.provider_policy("vendor-a", policy)
    (policy / "p.yaml").write_text(f"providers:\n{providers}channels:\n  sms: {{providers: [vendor-a]}}\n")
    loaded = load_policies(policy, PluginCatalog.from_classes({PLUGIN_NAME: FakeVendorProvider}))
    config = loaded.provider_instances["vendor-a"].config
    assert (config["url"], config["token"]) == ("http://127.0.0.1:9", TOKEN)
    assert TOKEN not in providers


async def test_runs_in_its_own_process_driven_over_http(session: aiohttp.ClientSession) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.fakes.vendor", "--token", TOKEN, cwd=ROOT, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        url = (await asyncio.wait_for(process.stdout.readline(), 15)).decode().split()[-1]
        async with session.post(f"{url}/_fake/script", json={"to": PHONE, "outcomes": ["503"]}) as response:
            assert response.status == 200
        with pytest.raises(TransientDeliveryError):
            await provider_for(url, session).send(message())
        async with session.get(f"{url}/_fake/state") as response:
            state = await response.json()
        assert [r["status"] for r in state["requests"]] == [503] and state["max_in_flight"] == 1
    finally:
        process.terminate()
        await process.wait()
