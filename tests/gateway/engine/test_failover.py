"""Provider failover, circuit breakers and throughput limits against two fake vendors on loopback.

Each test runs the gateway with two instances of the fake SMS vendor's plugin, ``primary``
then ``backup``, and makes them fail on cue.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from conftest import LIVE_KEY, Api, FakeClock, key_entry
from fakes.vendor import PLUGIN_NAME, FakeVendor, FakeVendorProvider

from gateway.clock import isoformat
from gateway.http.appkeys import POLICIES, STORE
from gateway.plugins import PluginCatalog

SMS = "+14155550100"


@pytest.fixture
async def primary() -> AsyncIterator[FakeVendor]:
    async with FakeVendor(token="primary-token") as vendor:
        yield vendor


@pytest.fixture
async def backup() -> AsyncIterator[FakeVendor]:
    async with FakeVendor(token="backup-token") as vendor:
        yield vendor


@pytest.fixture
def plugin_catalog() -> PluginCatalog:
    return PluginCatalog.from_classes({PLUGIN_NAME: FakeVendorProvider})


def write_policy(
    policy_dir: Path, primary: FakeVendor, backup: FakeVendor, *, primary_extra: str = "", backup_extra: str = "", primary_timeout: float = 10
) -> None:
    primary_entry = primary.provider_policy("primary", policy_dir).replace("config: {", f"config: {{timeout_seconds: {primary_timeout}, ")
    (policy_dir / "policy.yaml").write_text(
        f"tenants:\n  acme:\n    api_keys: [{key_entry(LIVE_KEY)}]\n"
        "providers:\n"
        + primary_entry + primary_extra
        + backup.provider_policy("backup", policy_dir) + backup_extra
        + "channels:\n  sms: {providers: [primary, backup]}\n"
        + "retry_schedules:\n  default: {delays: [10s], max_attempts: 3}\n"
    )


@pytest.fixture
async def start(
    aiohttp_client: Any, make_app: Callable[..., web.Application], policy_dir: Path, primary: FakeVendor, backup: FakeVendor
) -> Callable[..., Any]:
    async def run(primary_extra: str = "", backup_extra: str = "", primary_timeout: float = 10) -> Api:
        write_policy(policy_dir, primary, backup, primary_extra=primary_extra, backup_extra=backup_extra, primary_timeout=primary_timeout)
        return Api(await aiohttp_client(make_app()))

    return run


def sms(to: str = SMS) -> dict[str, Any]:
    return {"recipient": {"phone": to}, "notification": {"channels": ["sms"], "body": "Your code is 1234"}}


async def sent_by(api: Api, nid: str) -> dict[str, Any]:
    done = await api.wait_for(nid, lambda n: n["status"] in ("sent", "failed"))
    return done["deliveries"][0]  # type: ignore[no-any-return]


async def test_a_transient_failure_hands_the_delivery_to_the_next_instance_at_once(
    start: Callable[..., Any], primary: FakeVendor, backup: FakeVendor
) -> None:
    api = await start()
    primary.script(SMS, ["503"])
    _, body = await api.send(sms())
    delivery = await sent_by(api, body["notification_id"])
    assert delivery["provider"] == "backup"
    assert [(a["provider"], a["outcome"]) for a in delivery["attempts"]] == [("primary", "transient"), ("backup", "sent")]
    assert delivery["attempt_count"] == 1, "failover is part of the same attempt, not a retry"
    assert [m.to for m in backup.messages] == [SMS]
    assert primary.requests[0].idempotency_key == backup.requests[0].idempotency_key == delivery["delivery_id"]


async def test_a_permanent_rejection_is_not_tried_elsewhere(start: Callable[..., Any], primary: FakeVendor, backup: FakeVendor) -> None:
    api = await start()
    primary.script(SMS, ["400"])
    _, body = await api.send(sms())
    delivery = await sent_by(api, body["notification_id"])
    assert (delivery["status"], delivery["dead_reason"]) == ("failed", "permanent")
    assert backup.requests == []


async def test_refused_credentials_fail_over_and_count_against_the_instance_circuit(
    start: Callable[..., Any], primary: FakeVendor, backup: FakeVendor
) -> None:
    api = await start(primary_extra="    circuit_breaker: {failures: 2, window: 60s, cooldown: 30s}\n")
    primary.token = "rotated-at-the-vendor"  # the instance's token no longer works: every send would fail
    for _ in range(2):
        _, body = await api.send(sms())
        delivery = await sent_by(api, body["notification_id"])
        assert [(a["provider"], a["outcome"]) for a in delivery["attempts"]] == [("primary", "permanent"), ("backup", "sent")]
        assert "credentials" in delivery["attempts"][0]["error"]
    _, body = await api.send(sms())
    delivery = await sent_by(api, body["notification_id"])
    assert [a["provider"] for a in delivery["attempts"]] == ["backup"], "the circuit opened on refused credentials"
    assert len(primary.requests) == 2


async def test_when_every_instance_fails_the_delivery_waits_for_its_schedule_honouring_retry_after(
    start: Callable[..., Any], primary: FakeVendor, backup: FakeVendor, clock: FakeClock
) -> None:
    api = await start()
    primary.script(SMS, ["500", "ok"])
    backup.script(SMS, ["429"])
    backup.retry_after = 120
    _, body = await api.send(sms())
    nid = body["notification_id"]
    waiting = await api.wait_for(nid, lambda n: len(n["deliveries"][0]["attempts"]) == 2 and n["deliveries"][0]["next_attempt_at"])
    retry_after = backup.retry_after  # longer than the schedule's 10s, so it wins
    assert waiting["deliveries"][0]["next_attempt_at"] == isoformat(clock.now() + retry_after)
    clock.advance(retry_after)
    api.wake()
    delivery = await sent_by(api, nid)
    assert delivery["provider"] == "primary" and delivery["attempt_count"] == 2


async def test_a_circuit_opens_after_repeated_failures_and_a_probe_closes_it(
    start: Callable[..., Any], primary: FakeVendor, backup: FakeVendor, clock: FakeClock
) -> None:
    api = await start(primary_extra="    circuit_breaker: {failures: 2, window: 60s, cooldown: 30s}\n")
    primary.go_down()
    for _ in range(2):
        _, body = await api.send(sms())
        assert (await sent_by(api, body["notification_id"]))["provider"] == "backup"
    assert len(primary.requests) == 2

    _, body = await api.send(sms())
    delivery = await sent_by(api, body["notification_id"])
    assert [a["provider"] for a in delivery["attempts"]] == ["backup"], "an open circuit is passed over"
    assert len(primary.requests) == 2

    primary.come_up()
    clock.advance(31)
    _, body = await api.send(sms())
    assert (await sent_by(api, body["notification_id"]))["provider"] == "primary", "the probe after the cooldown"
    events = [(e.type, e.subject) for e in reversed(await api.app[STORE].list_events()) if e.type.startswith("provider.")]
    assert events == [("provider.circuit_opened", "primary"), ("provider.circuit_closed", "primary")]


async def test_an_instance_rate_limit_is_never_exceeded(start: Callable[..., Any], primary: FakeVendor, clock: FakeClock) -> None:
    api = await start(primary_extra="    rate: 2/s\n")
    for index in range(5):
        await api.send(sms(f"+1415555020{index}"))
    api.wake()
    await primary.wait_for(lambda v: len(v.messages) == 2)
    assert len(primary.messages) == 2, "a full bucket holds one second's worth"
    clock.advance(1)
    await primary.wait_for(lambda v: len(v.messages) == 4)
    clock.advance(0.5)
    await primary.wait_for(lambda v: len(v.messages) == 5)
    assert len(primary.messages) == 5


async def test_a_vendor_that_does_not_answer_in_time_is_failed_over(start: Callable[..., Any], primary: FakeVendor, backup: FakeVendor) -> None:
    api = await start(primary_timeout=0.05)
    primary.script(SMS, ["timeout"])
    policy = api.app[POLICIES].current
    assert policy.provider_instances["primary"].config.get("timeout_seconds") == 0.05
    _, body = await api.send(sms())
    delivery = await sent_by(api, body["notification_id"])
    assert [(a["provider"], a["outcome"]) for a in delivery["attempts"]] == [("primary", "transient"), ("backup", "sent")]
    primary.release()


async def test_failures_that_are_the_recipients_never_open_the_circuit_nor_go_to_another_instance(
    start: Callable[..., Any], primary: FakeVendor, backup: FakeVendor, clock: FakeClock
) -> None:
    """One unreachable handset must not close an instance for every other recipient (and tenant)."""
    api = await start(primary_extra="    circuit_breaker: {failures: 2, window: 60s, cooldown: 30s}\n")
    absent, invalid = "+14155550666", "+14155550667"
    primary.script(absent, ["absent"] * 3)
    primary.script(invalid, ["400"] * 2)
    bodies = [sms(absent), sms(invalid), sms(invalid)]
    nids = [(await api.send(body))[1]["notification_id"] for body in bodies]
    await api.idle()
    for _ in range(2):  # the unreachable handset's retries, 10 s apart
        clock.advance(10)
        await api.idle()
    for nid in nids:
        delivery = (await api.notification(nid))["deliveries"][0]
        assert delivery["status"] == "failed" and delivery["dead_letter"] is not None
        assert {a["provider"] for a in delivery["attempts"]} == {"primary"}, "another instance would fare no better"
    assert [a["outcome"] for a in (await api.notification(nids[0]))["deliveries"][0]["attempts"]] == ["transient"] * 3
    _, good = await api.send(sms())
    assert (await sent_by(api, good["notification_id"]))["provider"] == "primary", "five recipient faults later, the circuit is closed"
    assert backup.requests == []
    assert "provider.circuit_opened" not in [event.type for event in await api.app[STORE].list_events()]


async def test_a_delivery_dead_lettered_behind_open_circuits_names_the_instance_that_stopped_it(
    start: Callable[..., Any], primary: FakeVendor, backup: FakeVendor, clock: FakeClock
) -> None:
    breaker = "    circuit_breaker: {failures: 1, window: 60s, cooldown: 1h}\n"
    api = await start(primary_extra=breaker, backup_extra=breaker)
    for vendor in (primary, backup):
        vendor.go_down()
    await api.send(sms("+14155550111"))
    await api.idle()  # both instances fail, and both circuits open for an hour
    deadline = isoformat(clock.now() + 600)
    _, body = await api.send({"recipient": {"phone": SMS}, "notification": {"channels": ["sms"], "body": "Your code is 1234", "expires_at": deadline}})
    await api.idle()
    delivery = (await api.notification(body["notification_id"]))["deliveries"][0]
    assert (delivery["status"], delivery["dead_reason"]) == ("failed", "expired"), "the circuits reopen after its deadline"
    assert [a["provider"] for a in delivery["attempts"]] == ["backup"], "the last instance in failover order, passed over"
    assert "circuit open for primary, backup" in delivery["attempts"][0]["error"]
    status, listing = await api.get("/api/v1/dead-letters")
    assert status == 200 and [item["provider"] for item in listing["items"]] == ["backup"]
