"""A channel's rate is shared fairly between tenants, and sandbox (test-mode) traffic does not eat the live rate."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from conftest import OTHER_KEY, TEST_KEY, Api, FakeClock, MemoryProvider, sms_body


async def throttled_api(aiohttp_client: Any, make_app: Callable[..., web.Application], policy_dir: Path, rate: str) -> Api:
    policy = policy_dir / "policy.yaml"
    policy.write_text(policy.read_text().replace("sms: {providers: [memory]}", f"sms: {{providers: [memory], throughput: {rate}}}"))
    return Api(await aiohttp_client(make_app()))


def flood(count: int, **extra: Any) -> dict[str, Any]:
    rows = [{"phone": f"+141555{6000 + i:04d}"} for i in range(count)]
    return {"channels": ["sms"], "body": "Spring sale", "recipients": rows, **extra}


async def test_another_tenants_first_message_goes_out_within_its_fair_share_of_a_flooded_channel(
    aiohttp_client: Any, make_app: Callable[..., web.Application], policy_dir: Path,
    memory_provider: type[MemoryProvider], clock: FakeClock,
) -> None:
    api = await throttled_api(aiohttp_client, make_app, policy_dir, "1/s")
    status, _ = await api.send_bulk(flood(60, priority="bulk"))  # tenant acme: a minute's worth at 1/s
    assert status == 202
    await memory_provider.wait_for_sends(1)
    status, theirs = await api.send(sms_body("+14155559999", priority="bulk"), key=OTHER_KEY)  # same priority, queued later
    assert status == 202
    for _ in range(2):  # two tokens: acme's turn, then the other tenant's
        clock.advance(1)
        await api.idle()
    assert "+14155559999" in [m.to for m in memory_provider.sent], "the other tenant waited behind acme's whole backlog"
    assert len(memory_provider.sent) == 3
    done = await api.notification(theirs["notification_id"], OTHER_KEY)
    assert done["status"] == "sent"


async def test_tenants_with_backlogs_share_the_rate_in_turn(
    aiohttp_client: Any, make_app: Callable[..., web.Application], policy_dir: Path,
    memory_provider: type[MemoryProvider], clock: FakeClock,
) -> None:
    api = await throttled_api(aiohttp_client, make_app, policy_dir, "2/s")
    await api.send_bulk(flood(20))
    await api.send_bulk({**flood(20), "recipients": [{"phone": f"+141555{7000 + i:04d}"} for i in range(20)]}, key=OTHER_KEY)
    for _ in range(5):
        clock.advance(1)
        await api.idle()
    owners = ["acme" if m.to.startswith("+1415556") else "other" for m in memory_provider.sent]
    assert owners.count("other") >= 5 and owners.count("acme") >= 5, owners  # an even split, give or take the first burst


async def test_a_test_key_flood_leaves_the_live_rate_to_live_traffic(
    aiohttp_client: Any, make_app: Callable[..., web.Application], policy_dir: Path,
    memory_provider: type[MemoryProvider], clock: FakeClock,
) -> None:
    api = await throttled_api(aiohttp_client, make_app, policy_dir, "1/s")
    status, test_bulk = await api.send_bulk(flood(200), key=TEST_KEY)
    assert (status, test_bulk["accepted"]) == (202, 200)
    status, live = await api.send(sms_body("+14155559999"), key=OTHER_KEY)
    assert status == 202
    await api.idle()  # no clock time passes: the one token there is is the live message's
    assert [m.to for m in memory_provider.sent] == ["+14155559999"]
    assert (await api.notification(live["notification_id"], OTHER_KEY))["status"] == "sent"
    status, page = await api.get("/api/v1/notifications?limit=200", key=TEST_KEY)
    assert status == 200 and len(page["items"]) == 200
    assert {item["status"] for item in page["items"]} <= {"sent", "delivered"}, "the sandbox took them all at once too"
