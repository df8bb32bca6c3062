"""Business events and digests keep tenants and modes apart in time: a flood in one (tenant, mode) lane delays another's
event or digest by one batch at most; a batch commits at once, and one event that cannot be committed holds up none.

The background processor and digest sender are stopped and driven one batch at a time, so the
tests count batches, not seconds.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from conftest import OTHER_KEY, TEST_KEY, Api, FakeClock
from events_support import ROUTES, post_event, shipped, wait_event

from gateway.engine.event_processor import BATCH
from gateway.http.appkeys import DIGESTS, EVENT_PROCESSOR
from gateway.store.sqlite import business_events as sqlite_events


@pytest.fixture
def policy_dir(policy_dir: Path) -> Path:
    (policy_dir / "routes.yaml").write_text(ROUTES)
    return policy_dir


async def flood(api: Api, prefix: str, count: int, *, key: str | None = None) -> None:
    """``count`` events posted ten at a time, each accepted."""
    for start in range(0, count, 10):
        answers = await asyncio.gather(*(post_event(api, shipped(f"{prefix}-{n}"), key=key) for n in range(start, min(start + 10, count))))
        assert {status for status, _ in answers} == {202}


async def statuses(api: Api, *, key: str | None = None) -> list[str]:
    """Every event's status in ``key``'s tenant and mode, a page at a time."""
    found: list[str] = []
    path = "/api/v1/events?limit=200"
    while path:
        status, page = await api.get(path, key=key)
        assert status == 200, page
        found += [item["status"] for item in page["items"]]
        path = f"/api/v1/events?limit=200&cursor={page['next_cursor']}" if page["next_cursor"] else ""
    return found


async def test_another_tenants_event_is_processed_in_the_first_batch_behind_a_flood(api: Api) -> None:
    processor = api.app[EVENT_PROCESSOR]
    await processor.stop()
    await flood(api, "acme", 2 * BATCH + 20)
    assert (await post_event(api, shipped("theirs"), key=OTHER_KEY))[0] == 202

    assert await processor.process_pending() == BATCH
    theirs = await wait_event(api, "theirs", key=OTHER_KEY)
    assert theirs["outcomes"][0]["result"] == "notified", "the other tenant waited behind acme's whole backlog"
    mine = await statuses(api)
    assert (mine.count("processed"), mine.count("pending")) == (BATCH - 1, BATCH + 21), "a batch is shared: one event a lane per turn"

    while await processor.process_pending():
        pass
    assert set(await statuses(api)) == {"processed"}


async def test_a_test_key_flood_does_not_delay_the_same_tenants_live_event(api: Api) -> None:
    processor = api.app[EVENT_PROCESSOR]
    await processor.stop()
    await flood(api, "sandbox", BATCH + 10, key=TEST_KEY)
    assert (await post_event(api, shipped("live-one")))[0] == 202

    await processor.process_pending()
    live = await wait_event(api, "live-one")
    assert live["outcomes"][0]["result"] == "notified"
    assert (await statuses(api, key=TEST_KEY)).count("pending") == 11


async def test_lanes_take_turns_from_batch_to_batch_with_the_oldest_of_each_first(api: Api) -> None:
    processor = api.app[EVENT_PROCESSOR]
    await processor.stop()
    await flood(api, "acme", 3)
    await flood(api, "other", 3, key=OTHER_KEY)
    await flood(api, "sandbox", 3, key=TEST_KEY)
    order: list[str] = []
    real = processor.decide

    async def noting(event: Any) -> Any:
        order.append(event.event_id)
        return await real(event)

    processor.decide = noting  # type: ignore[method-assign]
    assert await processor.process_pending() == 9
    assert order == ["acme-0", "sandbox-0", "other-0", "acme-1", "sandbox-1", "other-1", "acme-2", "sandbox-2", "other-2"]


async def test_a_batch_is_committed_at_once_and_one_event_it_cannot_commit_is_recorded_as_failed_alone(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    processor = api.app[EVENT_PROCESSOR]
    await processor.stop()
    for name in ("good-1", "bad", "good-2"):
        assert (await post_event(api, shipped(name)))[0] == 202
    real = sqlite_events._record_processing

    def refusing(conn: Any, processing: Any, now: float) -> Any:
        if processing.event_id == "bad" and processing.candidates[0].reason != "processing_failed":
            raise ValueError("a row this store cannot keep")
        return real(conn, processing, now)

    monkeypatch.setattr(sqlite_events, "_record_processing", refusing)
    assert await processor.process_pending() == 3
    for name in ("good-1", "good-2"):
        event = await wait_event(api, name)
        assert event["outcomes"][0]["result"] == "notified"
    bad = await wait_event(api, "bad")
    assert bad["outcomes"] == [{"route": None, "recipient_index": None, "result": "suppressed", "reason": "processing_failed",
                                "message": "the gateway could not process this event; the error is logged"}]
    _, listed = await api.get("/api/v1/notifications")
    assert len(listed["items"]) == 2


async def test_another_tenants_digest_goes_out_in_the_first_batch_of_a_flood_of_due_digests(api: Api, clock: FakeClock) -> None:
    sender = api.app[DIGESTS]
    await sender.stop()
    many = {"event_id": "builds", "event_name": "build.finished", "recipients": [{"email": f"dev{n}@example.com"} for n in range(BATCH + 20)],
            "data": {"order_id": "b-1"}}
    assert (await post_event(api, many))[0] == 202
    theirs = {"event_id": "their-build", "event_name": "build.finished", "recipient": {"email": "ops@example.com"}, "data": {"order_id": "b-2"}}
    assert (await post_event(api, theirs, key=OTHER_KEY))[0] == 202
    await wait_event(api, "builds")
    await wait_event(api, "their-build", key=OTHER_KEY)
    clock.advance(3600)

    assert await sender.send_due() == BATCH
    sent = await wait_event(api, "their-build", lambda e: e["outcomes"][0]["digest"]["status"] == "sent", key=OTHER_KEY)
    assert sent["outcomes"][0]["notification_id"]
    _, mine = await api.get("/api/v1/events/builds")
    assert [o["digest"]["status"] for o in mine["outcomes"]].count("sent") == BATCH - 1

    while await sender.send_due():
        pass
    _, mine = await api.get("/api/v1/events/builds")
    assert {o["digest"]["status"] for o in mine["outcomes"]} == {"sent"}
