"""Schedule times are bounded (a year either way) and every stored time renders: reads never answer 500."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from conftest import Api, FakeClock, MemoryProvider, sms_body

from gateway.clock import isoformat

YEAR = 365 * 86400


def iso(clock: FakeClock, seconds_from_now: float) -> str:
    text = isoformat(clock.now() + seconds_from_now)
    assert text is not None
    return text


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("send_at", "9999-12-31T23:59:59-23:59"),
        ("expires_at", "9999-12-31T23:59:59-23:59"),
        ("send_at", "0001-01-01T00:00:00+23:59"),
        ("send_at", "2100-01-01T00:00:00Z"),
    ],
    ids=["send_at-year-9999", "expires_at-year-9999", "send_at-year-1", "send_at-2100"],
)
async def test_a_time_beyond_the_schedule_limit_is_a_422_and_nothing_is_written(
    api: Api, memory_provider: type[MemoryProvider], field: str, value: str
) -> None:
    status, answer = await api.send(sms_body(**{field: value}))
    assert status == 422, answer
    assert answer["error"]["code"] == "invalid_schedule"
    assert [detail["field"] for detail in answer["error"]["details"]] == [f"notification.{field}"]
    status, listing = await api.get("/api/v1/notifications")
    assert (status, listing["items"]) == (200, [])
    await api.idle()
    assert memory_provider.sent == []


async def test_a_bulk_with_a_far_send_at_is_a_422(api: Api) -> None:
    body = {"channels": ["sms"], "template_id": "otp", "data": {"code": "1"}, "send_at": "9999-12-31T23:59:59-23:59", "recipients": [{"phone": "+14155550100"}]}
    status, answer = await api.send_bulk(body)
    assert (status, answer["error"]["code"]) == (422, "invalid_schedule")


async def test_a_fallback_after_of_more_than_a_year_is_a_422(api: Api) -> None:
    body = sms_body(strategy="fallback", fallback_after="366d")
    body["recipient"]["email"] = "ada@example.com"
    body["notification"]["channels"] = ["sms", "email"]
    status, answer = await api.send(body)
    assert (status, answer["error"]["code"]) == (422, "invalid_schedule")


async def test_times_within_a_year_are_accepted_and_read_back(api: Api, clock: FakeClock) -> None:
    send_at, expires_at = iso(clock, YEAR - 60), iso(clock, YEAR)
    status, answer = await api.send(sms_body(send_at=send_at, expires_at=expires_at))
    assert status == 202, answer
    notification = await api.notification(answer["notification_id"])
    assert notification["expires_at"] == expires_at
    assert notification["deliveries"][0]["next_attempt_at"] == send_at


async def test_a_stored_time_beyond_year_9999_still_renders_in_reads_and_lists(
    aiohttp_client: Any, make_app: Callable[..., web.Application], policy_dir: Path, memory_provider: type[MemoryProvider]
) -> None:
    """A template ``ttl`` of 100,000,000 days puts ``expires_at`` in year ~275,000: reads answer 200, showing the last time ISO 8601 can."""
    (policy_dir / "forever.yaml").write_text('templates:\n  forever:\n    ttl: 100000000d\n    channels:\n      sms: {body: "hi"}\n')
    api = Api(await aiohttp_client(make_app()))
    body: dict[str, Any] = {"recipient": {"phone": "+14155550100"}, "notification": {"channels": ["sms"], "template_id": "forever"}}
    status, answer = await api.send(body)
    assert status == 202, answer
    status, one = await api.get(f"/api/v1/notifications/{answer['notification_id']}")
    assert status == 200, one
    assert one["expires_at"].startswith("9999-12-31T23:59:59")
    status, listing = await api.get("/api/v1/notifications")
    assert status == 200, listing
    assert [item["notification_id"] for item in listing["items"]] == [answer["notification_id"]]
    await api.idle()
    assert len(memory_provider.sent) == 1
