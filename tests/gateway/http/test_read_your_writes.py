"""After the 202, everything sees the notification: the API at once, and receipts in whatever order they race the send."""

from __future__ import annotations

import asyncio
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from conftest import LIVE_KEY, Api, FakeClock, key_entry, serve, sms_body
from fakes.vendor import PLUGIN_NAME, FakeVendor, FakeVendorProvider

CLIENTS = 32
PAIRS_EACH = 30
RACING_SENDS = 150


async def test_every_notification_answered_202_reads_back_at_once_under_concurrency(api: Api) -> None:
    """Sends and reads side by side with the dispatcher and the event fan-out reading and writing too."""

    async def client(number: int) -> list[str]:
        missing = []
        for pair in range(PAIRS_EACH):
            status, accepted = await api.send(sms_body(f"+1415555{number:02d}{pair:02d}"))
            assert status == 202, accepted
            status, found = await api.get(f"/api/v1/notifications/{accepted['notification_id']}")
            if status != 200:
                missing.append(accepted["notification_id"])
        return missing

    missing = [nid for found in await asyncio.gather(*(client(n) for n in range(CLIENTS))) for nid in found]
    assert missing == [], f"{len(missing)} of {CLIENTS * PAIRS_EACH} notifications read as not found right after their 202"


def raw_sms(phone: str) -> dict[str, Any]:
    return {"recipient": {"phone": phone}, "notification": {"channels": ["sms"], "body": "Your code is 123456"}}


@pytest.fixture
async def vendor() -> AsyncIterator[FakeVendor]:
    async with FakeVendor(token="racing-token") as fake:
        yield fake


@pytest.fixture
async def racing_api(aiohttp_client: Any, tmp_path: Path, clock: FakeClock, vendor: FakeVendor) -> Api:
    """The gateway sending through a vendor that posts a receipt back for every message it accepts."""
    clock.value = time.time()  # the plugin checks the vendor's signature timestamps against the gateway's clock
    policy_dir = tmp_path / "racing-policies"
    policy_dir.mkdir()
    policy = textwrap.dedent(
        f"""
        tenants:
          acme:
            api_keys: [{key_entry(LIVE_KEY)}]
        channels:
          sms: {{providers: [vendor_sms]}}
        """
    ) + "providers:\n" + vendor.provider_policy("vendor_sms", policy_dir)
    (policy_dir / "policy.yaml").write_text(policy)
    api = await serve(aiohttp_client, policy_dir, {PLUGIN_NAME: FakeVendorProvider}, clock)
    vendor.receipt_url = str(api.client.make_url("/api/v1/webhooks/vendor_sms"))
    return api


@pytest.mark.parametrize("receipt_first", [True, False], ids=["receipt-before-answer", "receipt-racing-answer"])
async def test_receipts_racing_their_sends_each_end_applied(racing_api: Api, vendor: FakeVendor, receipt_first: bool) -> None:
    """Acknowledged before its send's answer (held until the attempt is recorded) or racing it: each receipt ends applied."""
    vendor.receipt_first = receipt_first
    sends = await asyncio.gather(*(racing_api.send(raw_sms(f"+14155{n:06d}")) for n in range(RACING_SENDS)))
    assert {status for status, _ in sends} == {202}
    await vendor.wait_for(lambda v: len(v.receipts) == RACING_SENDS)
    assert {receipt.get("callback_status") for receipt in vendor.receipts} == {200}, "every receipt acknowledged"
    for _, accepted in sends:
        found = await racing_api.wait_for(accepted["notification_id"], lambda n: n["deliveries"][0]["status"] == "delivered")
        [receipt] = [event for event in found["audit"] if event["action"] == "receipt"]
        assert receipt["to_status"] == "delivered"
