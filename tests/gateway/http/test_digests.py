"""Digests: a route's events collected per recipient, then one notification rendered from them all, on the clock, once."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from conftest import Api, FakeClock, MemoryProvider
from events_support import ROUTES, processed, wait_event

from gateway.engine.digests import digest_due
from gateway.http.appkeys import DIGESTS, POLICIES, POLICY_LOADER
from gateway.policy.models import DigestPolicy
from gateway.store.sqlite import business_events


@pytest.fixture
def policy_dir(policy_dir: Path) -> Path:
    (policy_dir / "routes.yaml").write_text(ROUTES)
    return policy_dir


def build(event_id: str, order_id: str, email: str = "ada@example.com") -> dict[str, Any]:
    return {"event_id": event_id, "event_name": "build.finished", "recipient": {"email": email}, "data": {"order_id": order_id}}


def sent(event: dict[str, Any]) -> bool:
    return all(outcome.get("digest", {}).get("status") == "sent" for outcome in event["outcomes"])


async def test_events_are_collected_per_recipient_and_sent_as_one_notification_when_due(
    api: Api, clock: FakeClock, memory_provider: type[MemoryProvider]
) -> None:
    first = await processed(api, build("b-1", "A"))
    [outcome] = first["outcomes"]
    assert (outcome["result"], outcome["digest"]) == ("digested", {"due_at": "2027-01-15T09:00:00.000Z", "status": "open"})
    assert "notification_id" not in outcome
    clock.advance(600)
    await processed(api, build("b-2", "B"))
    await processed(api, build("b-3", "C", email="bob@example.com"))
    _, listed = await api.get("/api/v1/notifications")
    assert listed["items"] == []  # nothing is sent before the digest is due

    clock.advance(3000)  # the first digest is due; the second recipient's too (opened 10 minutes later, due then)
    ada = await wait_event(api, "b-1", sent)
    ada_two = await wait_event(api, "b-2", sent)
    assert ada["outcomes"][0]["notification_id"] == ada_two["outcomes"][0]["notification_id"]
    notification = await api.wait_for(ada["outcomes"][0]["notification_id"], lambda n: n["status"] == "sent")
    content = notification["deliveries"][0]["content"]
    assert (content["subject"], content["body"]) == ("2 events on hourly-builds", "A/b-1;B/b-2;")
    assert notification["route"] == "hourly-builds" and notification["recipient"] == {"email": "ada@example.com"}
    clock.advance(600)
    bob = await wait_event(api, "b-3", sent)
    assert bob["outcomes"][0]["notification_id"] != ada["outcomes"][0]["notification_id"]


async def test_an_event_after_a_digest_went_opens_the_next_one(api: Api, clock: FakeClock) -> None:
    await processed(api, build("b-1", "A"))
    clock.advance(3600)
    await wait_event(api, "b-1", sent)
    later = await processed(api, build("b-2", "B"))
    assert later["outcomes"][0]["digest"] == {"due_at": "2027-01-15T10:00:00.000Z", "status": "open"}


async def test_a_daily_digest_is_due_at_the_next_hour_and_minute_in_the_tenants_zone(api: Api) -> None:
    event = await processed(api, {"event_id": "r-1", "event_name": "report.ready", "recipient": {"email": "a@example.com"}, "data": {"order_id": "R"}})
    assert event["outcomes"][0]["digest"]["due_at"] == "2027-01-15T09:00:00.000Z"  # the clock reads 08:00 UTC; acme is on UTC


@pytest.mark.parametrize(
    ("opened", "zone", "due"),
    [
        ("2027-01-15T08:00:00+00:00", "UTC", "2027-01-15T09:00:00+00:00"),
        ("2027-01-15T09:00:00+00:00", "UTC", "2027-01-16T09:00:00+00:00"),  # at 09:00 sharp: tomorrow's
        ("2027-01-15T10:30:00+00:00", "Europe/Lisbon", "2027-01-16T09:00:00+00:00"),  # winter: Lisbon is UTC
        ("2027-07-15T07:30:00+00:00", "Europe/Lisbon", "2027-07-15T08:00:00+00:00"),  # summer: 09:00 WEST is 08:00 UTC
        ("2027-03-27T12:00:00+00:00", "Europe/Lisbon", "2027-03-28T08:00:00+00:00"),  # across the change to summer time
        ("2027-01-15T13:00:00+00:00", "America/New_York", "2027-01-15T14:00:00+00:00"),  # 08:00 there: 09:00 is still today
    ],
)
def test_daily_at_reads_the_time_in_the_zone(opened: str, zone: str, due: str) -> None:
    moment = digest_due(DigestPolicy(daily_at="09:00"), datetime.fromisoformat(opened).timestamp(), ZoneInfo(zone))
    assert datetime.fromtimestamp(moment, UTC) == datetime.fromisoformat(due)


async def test_a_digest_survives_a_restart_and_is_sent_once(aiohttp_client: Any, make_app: Any, clock: FakeClock) -> None:
    first = Api(await aiohttp_client(make_app()))
    await processed(first, build("b-r", "A"))
    await first.client.close()
    second = Api(await aiohttp_client(make_app()))
    clock.advance(3600)
    event = await wait_event(second, "b-r", sent)
    assert await second.app[DIGESTS].send_due() == 0  # settled: never sent again
    _, listed = await second.get("/api/v1/notifications")
    assert [item["notification_id"] for item in listed["items"]] == [event["outcomes"][0]["notification_id"]]


async def test_a_digest_whose_route_left_the_policy_records_why_it_was_not_sent(api: Api, clock: FakeClock, policy_dir: Path) -> None:
    await processed(api, build("b-gone", "A"))
    (policy_dir / "routes.yaml").write_text(ROUTES.replace("  hourly-builds:", "  hourly-builds-renamed:"))
    api.app[POLICIES].swap(api.app[POLICY_LOADER]())
    clock.advance(3600)
    event = await wait_event(api, "b-gone", lambda e: e["outcomes"][0]["digest"]["status"] != "open")
    outcome = event["outcomes"][0]
    assert (outcome["digest"]["status"], outcome["reason"]) == ("failed", "route_removed")
    _, listed = await api.get("/api/v1/notifications")
    assert listed["items"] == []


async def test_a_full_digest_goes_at_once_and_holds_no_more_until_it_has_gone(
    api: Api, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(business_events, "MAX_DIGEST_EVENTS", 3)
    sender = api.app[DIGESTS]
    await sender.stop()  # held back, so the full digest is still open when the fourth event comes
    for n in range(3):
        await processed(api, build(f"full-{n}", str(n)))
    fourth = await processed(api, build("full-3", "3"))
    [outcome] = fourth["outcomes"]
    assert (outcome["result"], outcome["reason"]) == ("suppressed", "digest_full")
    third = await wait_event(api, "full-2")
    assert third["outcomes"][0]["digest"]["due_at"] == datetime.fromtimestamp(clock.now(), UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    sender.start()
    done = await wait_event(api, "full-0", sent)  # due now: no clock advance needed
    notification = await api.notification(done["outcomes"][0]["notification_id"])
    assert notification["deliveries"][0]["content"]["subject"] == "3 events on hourly-builds"
    after = await processed(api, build("full-4", "4"))
    assert after["outcomes"][0]["result"] == "digested", "once the full one has gone, the next event opens a new digest"
