"""Retention through the running gateway: each tenant's finished notifications go after its retention, in small writes.

The purger runs on the fake clock: a test moves the clock past the next round and waits for
that round to end. Reads go through the API where a user would look, and into the SQLite file
for what the API does not show (rows of history and attempts, pages).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from contextlib import closing
from pathlib import Path
from typing import Any, cast

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from conftest import LIVE_KEY, OTHER_KEY, Api, FakeClock, MemoryProvider, key_entry, serve, sms_body

from gateway.clock import isoformat
from gateway.engine.retention import Retention, TenantRetentions, interval
from gateway.http.appkeys import EVENT_WEBHOOKS, POLICY_WATCHER, PURGER, SETTINGS, STORE
from gateway.policy.loading import load_policies
from gateway.policy.view import PolicyHolder
from gateway.store import PurgedBatch, Store

HOUR = 3600.0
DAY = 86400.0
KEEPER_KEY = "tdk_keep_live_key_for_tests_0005"


def policy(acme: str = "1d", other: str = "90d", keeper: str = "0", extra: str = "") -> str:
    return f"""
tenants:
  acme:
    retention: {acme}
    api_keys: [{key_entry(LIVE_KEY)}]
  other:
    retention: {other}
    api_keys: [{key_entry(OTHER_KEY)}]
  keeper:
    retention: {keeper}
    api_keys: [{key_entry(KEEPER_KEY)}]
providers:
  memory: {{plugin: memory}}
channels:
  sms: {{providers: [memory]}}
templates:
  otp:
    channels:
      sms: {{body: "Your code is {{{{ code }}}}"}}
retry_schedules:
  default: {{delays: [5d]}}
  webhooks: {{delays: [2d]}}
{extra}"""


@pytest.fixture
def start(
    aiohttp_client: Any, tmp_path: Path, clock: FakeClock, memory_provider: type[MemoryProvider]
) -> Callable[..., Awaitable[Api]]:
    async def build(text: str | None = None, **settings: Any) -> Api:
        directory = tmp_path / "policies"
        directory.mkdir(exist_ok=True)
        (directory / "policy.yaml").write_text(text or policy())
        return await serve(aiohttp_client, directory, {"memory": memory_provider}, clock, **settings)

    return build


async def until(predicate: Callable[[], bool]) -> None:
    """Let the background tasks run until ``predicate`` holds (5 s at most); they move on the fake clock."""
    async with asyncio.timeout(5):
        while not predicate():
            await asyncio.sleep(0)


async def settled(api: Api) -> None:
    """Everything due at the clock's time sent and recorded, every event fanned out to the endpoints."""
    await api.idle()
    await api.app[EVENT_WEBHOOKS].until_idle()


async def purge_after(api: Api, clock: FakeClock, seconds: float = HOUR) -> None:
    """Move the clock ``seconds`` on (at least the hour between rounds) and wait for the round that wakes for it."""
    purger = api.app[PURGER]
    await until(lambda: purger.asleep)
    runs = purger.runs
    clock.advance(seconds)
    await until(lambda: purger.runs > runs)


async def send(api: Api, key: str = LIVE_KEY, phone: str = "+14155550100", **notification: Any) -> str:
    status, body = await api.send(sms_body(phone, **notification), key=key)
    assert status == 202, body
    return str(body["notification_id"])


async def found(api: Api, notification_id: str, key: str = LIVE_KEY) -> int:
    status, _ = await api.get(f"/api/v1/notifications/{notification_id}", key=key)
    return status


async def listed(api: Api, key: str = LIVE_KEY) -> list[str]:
    status, page = await api.get("/api/v1/notifications?limit=100", key=key)
    assert status == 200, page
    return [item["notification_id"] for item in page["items"]]


def rows(api: Api, sql: str, *params: Any) -> int:
    with closing(sqlite3.connect(f"file:{api.app[SETTINGS].database_path}?mode=ro", uri=True)) as conn:
        return int(conn.execute(sql, params).fetchone()[0])


async def test_a_finished_notification_older_than_the_retention_is_purged_and_a_younger_one_stays(
    start: Callable[..., Awaitable[Api]], clock: FakeClock, memory_provider: type[MemoryProvider]
) -> None:
    api = await start()
    memory_provider.script["+14155550199"] = ["permanent"]
    old_sent, old_dead = await send(api), await send(api, phone="+14155550199")
    await settled(api)
    assert [(await api.notification(n))["status"] for n in (old_sent, old_dead)] == ["sent", "failed"]
    await purge_after(api, clock, 20 * HOUR)
    young = await send(api)
    await settled(api)

    await purge_after(api, clock, 5 * HOUR)  # the old ones are 25 h old, the young one 5 h

    status, body = await api.get(f"/api/v1/notifications/{old_sent}")
    assert (status, body["error"]["code"]) == (404, "notification_not_found")
    assert await found(api, old_dead) == 404
    assert await found(api, young) == 200
    assert await listed(api) == [young]
    _, dead_letters = await api.get("/api/v1/dead-letters")
    assert dead_letters["items"] == []
    for table in ("deliveries", "history"):
        assert rows(api, f"SELECT count(*) FROM {table} WHERE notification_id IN (?, ?)", old_sent, old_dead) == 0, table
        assert rows(api, f"SELECT count(*) FROM {table} WHERE notification_id = ?", young) > 0, table


async def test_each_tenant_keeps_its_notifications_for_its_own_retention(start: Callable[..., Awaitable[Api]], clock: FakeClock) -> None:
    api = await start()
    acme, other, keeper = await send(api), await send(api, OTHER_KEY), await send(api, KEEPER_KEY)
    await settled(api)

    await purge_after(api, clock, 2 * DAY)
    assert [await found(api, acme), await found(api, other, OTHER_KEY), await found(api, keeper, KEEPER_KEY)] == [404, 200, 200]

    await purge_after(api, clock, 89 * DAY)  # 91 days on: past other's 90 days; keeper keeps everything
    assert [await found(api, other, OTHER_KEY), await found(api, keeper, KEEPER_KEY)] == [404, 200]
    assert await listed(api, KEEPER_KEY) == [keeper]


async def test_notifications_still_on_their_way_are_not_purged_however_old(
    start: Callable[..., Awaitable[Api]], clock: FakeClock, memory_provider: type[MemoryProvider]
) -> None:
    api = await start()
    scheduled = await send(api, send_at=isoformat(clock.now() + 3 * DAY))
    memory_provider.script["+14155550150"] = ["transient", "ok"]
    retrying = await send(api, phone="+14155550150")  # failed once; its retry is 5 days away
    await settled(api)

    await purge_after(api, clock, 2 * DAY)
    assert (await api.notification(scheduled))["status"] == "queued"
    waiting_to_retry = (await api.notification(retrying))["deliveries"][0]
    assert (waiting_to_retry["status"], waiting_to_retry["attempt_count"]) == ("sending", 1)

    await purge_after(api, clock, DAY + HOUR)  # the scheduled one is due, and sent
    await settled(api)
    assert (await api.notification(scheduled))["status"] == "sent"
    await purge_after(api, clock)
    assert await found(api, scheduled) == 200, "sent an hour ago: kept a retention from then, though made 3 days ago"
    await purge_after(api, clock, DAY)
    assert await found(api, scheduled) == 404
    assert await found(api, retrying) == 200


async def test_a_purge_goes_in_batches_and_sends_are_written_between_them(
    start: Callable[..., Awaitable[Api]], clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = await start(retention_batch=50)
    response = await api.client.post(
        "/api/v1/notifications/bulk", headers=api.headers(),
        json={"channels": ["sms"], "template_id": "otp", "data": {"code": "1"}, "recipients": [{"phone": f"+1415{n:07d}"} for n in range(120)]},
    )
    assert response.status == 202, await response.text()
    await settled(api)
    store = api.app[STORE]
    purge_batch = store.purge_notifications
    batches: list[int] = []
    between: list[str] = []

    async def batch_then_a_send(tenant: str, before: float, *, limit: int, after: str | None = None) -> PurgedBatch:
        if tenant == "acme" and batches:  # a batch has been written: a send goes through before the next one
            between.append(await asyncio.wait_for(send(api), 5))
        done = await purge_batch(tenant, before, limit=limit, after=after)
        if tenant == "acme" and done.purged:  # a round that came before the clock moved finds nothing: not a batch
            batches.append(done.purged)
        return done

    monkeypatch.setattr(store, "purge_notifications", batch_then_a_send)
    await purge_after(api, clock, 2 * DAY)

    assert batches == [50, 50, 20]
    assert len(between) == 2
    await settled(api)
    assert sorted(await listed(api)) == sorted(between), "the sends made during the purge are kept, and sent"
    assert {(await api.notification(n))["status"] for n in between} == {"sent"}


async def test_the_file_gives_the_pages_of_a_purge_back(start: Callable[..., Awaitable[Api]], clock: FakeClock) -> None:
    api = await start()
    response = await api.client.post(
        "/api/v1/notifications/bulk", headers=api.headers(),
        json={"channels": ["sms"], "template_id": "otp", "data": {"code": "1" * 200}, "recipients": [{"phone": f"+1415{n:07d}"} for n in range(300)]},
    )
    assert response.status == 202
    await settled(api)
    pages = rows(api, "PRAGMA page_count")

    await purge_after(api, clock, 2 * DAY)

    assert await listed(api) == []
    assert rows(api, "PRAGMA freelist_count") == 0
    assert rows(api, "PRAGMA page_count") < pages / 2


class FailingEndpoint:
    """A tenant's event webhook endpoint that answers 500 to everything, keeping what it was sent."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.ids.append(request.headers["webhook-id"])
        return web.Response(status=500)


async def test_an_event_webhook_still_pending_keeps_its_notification_until_it_is_done(
    start: Callable[..., Awaitable[Api]], clock: FakeClock, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> None:
    endpoint = FailingEndpoint()
    app = web.Application()
    app.router.add_post("/hook", endpoint.handle)
    url = (await aiohttp_server(app)).make_url("/hook")
    webhooks = (
        f"webhooks:\n  acme:\n    main:\n      url: {url}\n      events: [message.queued]\n      allow_private: true\n"
        "      signing: ed25519\n      disable_after: null\n"
    )
    api = await start(policy(extra=webhooks))  # event webhooks are retried once, 2 days on
    notification = await send(api)
    await settled(api)
    assert len(endpoint.ids) == 1

    await purge_after(api, clock, DAY + 12 * HOUR)  # past the retention; the event's retry is half a day away
    assert await found(api, notification) == 200
    _, listing = await api.get("/api/v1/webhook-deliveries")
    assert [(item["type"], item["status"]) for item in listing["items"]] == [("message.queued", "pending")]

    await purge_after(api, clock, 12 * HOUR)  # the retry is due: sent again, the same event, and now dead
    await settled(api)
    assert endpoint.ids == [endpoint.ids[0]] * 2, "the pending event was still there to send"
    await purge_after(api, clock)
    assert await found(api, notification) == 404
    _, listing = await api.get("/api/v1/webhook-deliveries")
    assert listing["items"] == [], "its dead webhook delivery went with it"


async def test_a_reload_applies_from_the_next_round_and_a_tenant_taken_out_of_policy_keeps_its_data(
    start: Callable[..., Awaitable[Api]], clock: FakeClock, tmp_path: Path
) -> None:
    api = await start(policy(acme="0"))
    acme, other = await send(api), await send(api, OTHER_KEY)
    await settled(api)
    await purge_after(api, clock, 2 * DAY)
    assert await found(api, acme) == 200, "kept under retention 0"

    without_other = policy(acme="1d").replace(f"  other:\n    retention: 90d\n    api_keys: [{key_entry(OTHER_KEY)}]\n", "")
    (tmp_path / "policies" / "policy.yaml").write_text(without_other)
    assert await api.app[POLICY_WATCHER].reload() is True
    await purge_after(api, clock)

    assert await found(api, acme) == 404, "purged under the new retention"
    assert rows(api, "SELECT count(*) FROM notifications WHERE id = ?", other) == 1, "a tenant no longer in policy keeps its data"


@pytest.mark.parametrize(
    ("keeper", "no_tenant"), [("0", None), ("7d", 90 * DAY)]
)
def test_each_tenant_in_policy_has_its_retentions_and_lines_of_no_tenant_follow_the_longest(
    tmp_path: Path, plugin_catalog: Any, keeper: str, no_tenant: float | None
) -> None:
    (tmp_path / "policy.yaml").write_text(policy(keeper=keeper))
    holder = PolicyHolder(load_policies(tmp_path, plugin_catalog))
    found = {retention.what: retention.keep_seconds for retention in TenantRetentions(cast(Store, None), holder, batch=10)()}
    expected = {
        "notifications of tenant 'acme'": DAY, "history lines of tenant 'acme'": DAY, "business events of tenant 'acme'": DAY,
        "notifications of tenant 'other'": 90 * DAY, "history lines of tenant 'other'": 90 * DAY,
        "business events of tenant 'other'": 90 * DAY,
    }
    if no_tenant is not None:
        expected |= {
            "notifications of tenant 'keeper'": 7 * DAY, "history lines of tenant 'keeper'": 7 * DAY,
            "business events of tenant 'keeper'": 7 * DAY,
        }
        expected["history lines of no tenant"] = no_tenant
    assert found == expected


@pytest.mark.parametrize(
    ("shortest", "every"), [(30 * DAY, HOUR), (HOUR, 360.0), (20.0, 2.0), (0.5, 1.0)]
)
def test_rounds_come_every_tenth_of_the_shortest_retention_within_a_second_and_an_hour(shortest: float, every: float) -> None:
    async def nothing(_before: float) -> int:
        return 0

    retentions = [Retention("long", 90 * DAY, nothing), Retention("short", shortest, nothing)]
    assert interval(retentions) == every
