from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from gateway import OutboundMessage, PermanentDeliveryError, ProviderContext, StatusUpdate, TransientDeliveryError
from plugins.sandbox import SandboxProvider


def message(to: str = "+14155550100") -> OutboundMessage:
    return OutboundMessage(delivery_id="dlv_1", notification_id="ntf_1", tenant="acme", channel="sms", to=to, recipient={"phone": to}, body="hi")


async def test_records_the_message_and_reports_delivered_on_close(clock: Any) -> None:
    reports: list[StatusUpdate] = []
    async with aiohttp.ClientSession() as session:
        sandbox = SandboxProvider("sandbox", {"delivery_delay_seconds": 3600}, ProviderContext(session, clock, reports.extend))
        receipt = await sandbox.send(message())
        assert receipt.provider_message_id == "sbx_dlv_1"
        assert [m.body for m in sandbox.messages] == ["hi"]
        assert reports == []
        await sandbox.aclose()
    assert [(r.provider_message_id, r.status) for r in reports] == [("sbx_dlv_1", "delivered")]


@pytest.mark.parametrize(("outcome", "error"), [("permanent", PermanentDeliveryError), ("transient", TransientDeliveryError)])
async def test_configured_addresses_fail_like_a_real_provider(clock: Any, outcome: str, error: type[Exception]) -> None:
    async with aiohttp.ClientSession() as session:
        sandbox = SandboxProvider("sandbox", {"fail": {"+15005550001": outcome}}, ProviderContext(session, clock, lambda _u: None))
        with pytest.raises(error):
            await sandbox.send(message("+15005550001"))
        assert not sandbox.messages
