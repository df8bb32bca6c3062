"""Idempotency records are kept for a documented window (24 h unless set), then purged: the table does not grow for ever."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from conftest import Api, FakeClock, MemoryProvider, sms_body

from gateway.http.appkeys import PURGER

HOUR = 3600.0


async def until(predicate: Callable[[], bool]) -> None:
    """Let the purger's task run until ``predicate`` holds; it moves on the fake clock, not in real time."""
    async with asyncio.timeout(5):
        while not predicate():
            await asyncio.sleep(0)


async def purge_after(api: Api, clock: FakeClock, seconds: float) -> None:
    """Move the clock ``seconds`` on and wait for the purge that wakes for it."""
    purger = api.app[PURGER]
    await until(lambda: purger.asleep)  # its last round is over; it sleeps on the clock
    runs = purger.runs
    clock.advance(seconds)
    await until(lambda: purger.runs > runs)


async def send_keyed(api: Api, key: str) -> tuple[int, dict[str, object], bool]:
    response = await api.client.post("/api/v1/notifications/send", json=sms_body(), headers=api.headers(**{"Idempotency-Key": key}))
    return response.status, await response.json(), response.headers.get("Idempotent-Replayed") == "true"


async def test_a_key_is_remembered_within_the_window_and_forgotten_after_it(
    api: Api, clock: FakeClock, memory_provider: type[MemoryProvider]
) -> None:
    status, first, replayed = await send_keyed(api, "order-1")
    assert (status, replayed) == (202, False)

    await purge_after(api, clock, 23 * HOUR)  # within 24 h: the purge keeps it
    status, again, replayed = await send_keyed(api, "order-1")
    assert (status, replayed) == (202, True)
    assert again == first

    await purge_after(api, clock, 2 * HOUR)  # 25 h old: purged
    status, later, replayed = await send_keyed(api, "order-1")
    assert (status, replayed) == (202, False)
    assert later["notification_id"] != first["notification_id"]
    await api.idle()
    assert len(memory_provider.sent) == 2


async def test_the_window_is_a_setting(aiohttp_client: object, make_app: Callable[..., object], clock: FakeClock) -> None:
    api = Api(await aiohttp_client(make_app(idempotency_retention_hours=1)))  # type: ignore[operator]
    _, first, _ = await send_keyed(api, "order-2")
    await purge_after(api, clock, 1.5 * HOUR)
    status, later, replayed = await send_keyed(api, "order-2")
    assert (status, replayed) == (202, False)
    assert later["notification_id"] != first["notification_id"]
