"""A channel claims ahead of its sends: up to its concurrency sends at once, as many waiting in hand, all of it sent once."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path
from typing import Any

from conftest import LIVE_KEY, Api, FakeClock, MemoryProvider, key_entry, serve

from gateway import OutboundMessage, SendReceipt

CONCURRENCY = 4


class GatedProvider(MemoryProvider):
    """Holds every send until ``gate`` opens; counts how many were held at once."""

    gate: asyncio.Event
    sending = 0
    most = 0

    async def send(self, message: OutboundMessage) -> SendReceipt:
        cls = type(self)
        cls.sending += 1
        cls.most = max(cls.most, cls.sending)
        try:
            receipt = await super().send(message)
            await cls.gate.wait()
            return receipt
        finally:
            cls.sending -= 1


async def start(aiohttp_client: Any, tmp_path: Path, clock: FakeClock) -> Api:
    directory = tmp_path / "policies"
    directory.mkdir()
    (directory / "policy.yaml").write_text(textwrap.dedent(f"""\
        tenants:
          acme:
            api_keys: [{key_entry(LIVE_KEY)}]
        providers:
          gated: {{plugin: gated}}
        channels:
          sms: {{providers: [gated]}}
    """))
    GatedProvider.sent, GatedProvider.waiters, GatedProvider.script = [], [], {}
    GatedProvider.gate, GatedProvider.sending, GatedProvider.most = asyncio.Event(), 0, 0
    return await serve(aiohttp_client, directory, {"gated": GatedProvider}, clock, dispatch_concurrency=CONCURRENCY)


async def delivery_statuses(api: Api) -> dict[str, int]:
    status, page = await api.get("/api/v1/notifications?limit=100")
    assert status == 200, page
    found: dict[str, int] = {}
    for item in page["items"]:
        for delivery in item["deliveries"]:
            found[delivery["status"]] = found.get(delivery["status"], 0) + 1
    return found


async def test_a_busy_channel_sends_at_its_concurrency_and_holds_as_many_more_in_hand(
    aiohttp_client: Any, tmp_path: Path, clock: FakeClock
) -> None:
    api = await start(aiohttp_client, tmp_path, clock)
    rows = [{"phone": f"+1415555{n:04d}"} for n in range(20)]
    status, body = await api.send_bulk({"channels": ["sms"], "body": "hello", "recipients": rows})
    assert (status, body["accepted"]) == (202, 20), body

    await GatedProvider.wait_for_sends(CONCURRENCY)
    in_hand = await delivery_statuses(api)
    assert GatedProvider.sending == CONCURRENCY  # every slot busy, none over
    assert in_hand.get("sending", 0) <= 2 * CONCURRENCY  # claimed ahead: at most as many again, waiting for a slot
    assert in_hand.get("queued", 0) >= 20 - 2 * CONCURRENCY  # the rest stays in the store, free for any worker

    GatedProvider.gate.set()
    await api.idle()
    assert await delivery_statuses(api) == {"sent": 20}
    assert sorted(message.to for message in GatedProvider.sent) == sorted(row["phone"] for row in rows)  # each once
    assert GatedProvider.most == CONCURRENCY
