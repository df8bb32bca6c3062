"""A suspended tenant's deliveries are held: not sent, not lost, not dead-lettered, no attempt counted; they go out once it is active."""

from __future__ import annotations

from pathlib import Path

from conftest import LIVE_KEY, Api, FakeClock, MemoryProvider, sms_body

from gateway.clock import isoformat
from gateway.http.appkeys import DISPATCHER, POLICY_WATCHER


async def set_status(api: Api, policy_dir: Path, status: str) -> None:
    """Suspend or reactivate tenant acme the way an operator does: edit its policy and reload."""
    policy = policy_dir / "policy.yaml"
    text = policy.read_text().replace("  acme:\n    status: suspended\n", "  acme:\n")
    if status == "suspended":
        text = text.replace("  acme:\n", "  acme:\n    status: suspended\n", 1)
    policy.write_text(text)
    assert await api.app[POLICY_WATCHER].reload() is True


async def test_a_scheduled_sms_of_a_suspended_tenant_waits_and_goes_out_once_it_is_active(
    api: Api, clock: FakeClock, policy_dir: Path, memory_provider: type[MemoryProvider]
) -> None:
    status, accepted = await api.send(sms_body(send_at=isoformat(clock.now() + 60)))
    assert status == 202, accepted
    await set_status(api, policy_dir, "suspended")
    status, refused = await api.send(sms_body())
    assert (status, refused["error"]["code"]) == (403, "tenant_suspended")

    for _ in range(3):  # well past its send_at, and past any lease or retry time
        clock.advance(60)
        await api.idle()
    assert memory_provider.sent == [], "nothing reaches the vendor while the tenant is suspended"

    await set_status(api, policy_dir, "active")
    notification = await api.notification(accepted["notification_id"])
    [delivery] = notification["deliveries"]
    assert (delivery["status"], delivery["attempt_count"], delivery["attempts"]) == ("queued", 0, []), "held, not attempted"
    _, dead = await api.get("/api/v1/dead-letters")
    assert dead["items"] == []

    api.wake()
    done = await api.wait_for(accepted["notification_id"], lambda n: n["status"] == "sent")
    assert done["deliveries"][0]["attempt_count"] == 1
    assert [m.notification_id for m in memory_provider.sent] == [accepted["notification_id"]]


async def test_a_send_waiting_for_a_slot_when_the_tenant_is_suspended_is_held_and_recorded_as_held(
    api: Api, clock: FakeClock, policy_dir: Path, memory_provider: type[MemoryProvider]
) -> None:
    policy = policy_dir / "policy.yaml"
    policy.write_text(policy.read_text().replace("memory: {plugin: memory}", "memory: {plugin: memory, rate: 1/s}"))
    assert await api.app[POLICY_WATCHER].reload() is True
    rows = [{"phone": "+14155550101"}, {"phone": "+14155550102"}]
    _, accepted = await api.send_bulk({"channels": ["sms"], "template_id": "otp", "data": {"code": "1"}, "recipients": rows})
    second = accepted["notifications"][1]  # claimed with the first, in one claim
    await memory_provider.wait_for_sends(1)  # the second waits for the instance's next token
    assert (await api.notification(second["notification_id"]))["deliveries"][0]["status"] == "sending"

    await set_status(api, policy_dir, "suspended")
    clock.advance(1)  # its token comes: the tenant is suspended by now
    await api.app[DISPATCHER].wait_in_flight()
    assert [m.to for m in memory_provider.sent] == ["+14155550101"]

    await set_status(api, policy_dir, "active")
    waiting = await api.notification(second["notification_id"], LIVE_KEY)
    [delivery] = waiting["deliveries"]
    assert (delivery["status"], delivery["attempt_count"], delivery["attempts"]) == ("queued", 0, []), "held, not attempted"
    assert [entry["action"] for entry in waiting["audit"]] == ["accepted", "held"]

    api.wake()
    clock.advance(1)
    done = await api.wait_for(second["notification_id"], lambda n: n["status"] == "sent")
    assert done["deliveries"][0]["attempt_count"] == 1
    assert [m.to for m in memory_provider.sent] == ["+14155550101", "+14155550102"]
