"""A provider plugin that never answers: its sends time out and wait for a retry, nothing is lost, and other tenants' messages go out meanwhile."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from gateway.plugin_api import OutboundMessage, Provider, SendReceipt
from tests.conftest import LIVE_KEY, OTHER_KEY, FakeClock, MemoryProvider, key_entry, serve

SEND_TIMEOUT = 0.2  # seconds of real time: the one wait here, bounded, and what the fault is about


def sms(phone: str) -> dict[str, Any]:
    return {"recipient": {"phone": phone}, "notification": {"channels": ["sms"], "body": "Your code is 1234"}}


class HangingProvider(Provider):
    """Never answers until ``recover`` is set: a plugin stuck on a connection that went silent."""

    channels = frozenset({"sms"})
    config_schema: Mapping[str, Any] = {"type": "object"}
    recover: ClassVar[asyncio.Event]
    sent: ClassVar[list[str]] = []

    async def send(self, message: OutboundMessage) -> SendReceipt:
        await type(self).recover.wait()
        type(self).sent.append(message.to)
        return SendReceipt(provider_message_id=f"stuck-{message.delivery_id}")


async def test_a_hanging_provider_times_out_retries_later_and_never_holds_up_another_tenant(
    aiohttp_client: Any, tmp_path: Path, clock: FakeClock, memory_provider: type[MemoryProvider]
) -> None:
    HangingProvider.recover, HangingProvider.sent = asyncio.Event(), []
    policy_dir = tmp_path / "policies"
    policy_dir.mkdir()
    (policy_dir / "policy.yaml").write_text(
        "tenants:\n"
        f"  acme:\n    api_keys: [{key_entry(LIVE_KEY)}]\n"
        "    channels: {sms: {providers: [stuck]}}\n"
        f"  other:\n    api_keys: [{key_entry(OTHER_KEY)}]\n"
        "providers:\n  stuck: {plugin: hanging}\n  memory: {plugin: memory}\n"
        "channels:\n  sms: {providers: [memory]}\n"
        "retry_schedules:\n  default: {delays: [30s]}\n"
    )
    api = await serve(aiohttp_client, policy_dir, {"hanging": HangingProvider, "memory": memory_provider}, clock, send_timeout_seconds=SEND_TIMEOUT)

    stuck = [(await api.send(sms(f"+1415555010{i}")))[1]["notification_id"] for i in range(3)]
    status, fine = await api.send(sms("+14155550199"), key=OTHER_KEY)
    assert status == 202
    await api.wait_for(fine["notification_id"], lambda n: n["status"] == "sent", key=OTHER_KEY)
    assert HangingProvider.sent == [], "the other tenant's message went out while acme's were still hanging"

    for nid in stuck:
        waiting = await api.wait_for(nid, lambda n: len(n["deliveries"][0]["attempts"]) == 1)
        delivery = waiting["deliveries"][0]
        assert delivery["status"] == "sending" and delivery["next_attempt_at"] is not None, "waiting for its retry, not given up"
        assert delivery["attempts"][0]["outcome"] == "transient"
        assert f"did not answer within {SEND_TIMEOUT:g}s" in delivery["attempts"][0]["error"]

    HangingProvider.recover.set()
    clock.advance(30)
    await api.idle()
    for nid in stuck:
        await api.wait_for(nid, lambda n: n["status"] == "sent")
    assert sorted(HangingProvider.sent) == ["+14155550100", "+14155550101", "+14155550102"], "each sent once, after recovering"
