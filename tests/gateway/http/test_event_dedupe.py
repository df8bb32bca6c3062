"""A route's dedupe window: the same fingerprint for the same recipient inside it is suppressed, naming the first event."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import TEST_KEY, Api, FakeClock
from events_support import ROUTES, certificate, processed

from gateway.http.appkeys import STORE


@pytest.fixture
def policy_dir(policy_dir: Path) -> Path:
    (policy_dir / "routes.yaml").write_text(ROUTES)
    return policy_dir


def outcome(event: dict[str, Any]) -> tuple[str, str | None, str | None]:
    [found] = event["outcomes"]
    return found["result"], found.get("reason"), found.get("first_event_id")


async def test_the_same_fingerprint_inside_the_window_is_suppressed_naming_the_first_event(api: Api) -> None:
    first = await processed(api, certificate("cert-1", "c-1"))
    assert outcome(first) == ("notified", None, None)
    again = await processed(api, certificate("cert-2", "c-1", data={"certificate_id": "c-1"}))
    assert outcome(again) == ("suppressed", "deduplicated", "cert-1")
    assert "cert-1" in again["outcomes"][0]["message"]
    _, listed = await api.get("/api/v1/notifications")
    assert len(listed["items"]) == 1


async def test_another_fingerprint_or_another_recipient_is_not_a_duplicate(api: Api) -> None:
    await processed(api, certificate("cert-a", "c-1"))
    assert outcome(await processed(api, certificate("cert-b", "c-2")))[0] == "notified"
    other_person = certificate("cert-c", "c-1", recipient={"email": "dev@example.com", "phone": "+14155550188"})
    assert outcome(await processed(api, other_person))[0] == "notified"  # the fingerprint is per recipient


async def test_after_the_window_the_fingerprint_sends_again(api: Api, clock: FakeClock) -> None:
    await processed(api, certificate("cert-early", "c-9"))
    clock.advance(6 * 3600 + 1)
    assert outcome(await processed(api, certificate("cert-late", "c-9")))[0] == "notified"


async def test_windows_are_per_mode(api: Api) -> None:
    await processed(api, certificate("cert-live", "c-5"))
    assert outcome(await processed(api, certificate("cert-test", "c-5"), key=TEST_KEY))[0] == "notified"


async def test_a_window_survives_a_restart(aiohttp_client: Any, make_app: Any) -> None:
    first = Api(await aiohttp_client(make_app()))
    await processed(first, certificate("cert-before", "c-7"))
    await first.client.close()
    second = Api(await aiohttp_client(make_app()))
    assert outcome(await processed(second, certificate("cert-after", "c-7"))) == ("suppressed", "deduplicated", "cert-before")


async def test_ended_windows_are_purged(api: Api, clock: FakeClock) -> None:
    await processed(api, certificate("cert-old", "c-3"))
    store = api.app[STORE]
    assert await store.purge_event_windows(clock.now()) == 0  # still open
    clock.advance(6 * 3600 + 1)
    assert await store.purge_event_windows(clock.now()) == 1
