"""Business events meet contacts and quotas: an event names a contact as a send does, and its fan-out counts messages.

A real server on loopback over a real SQLite file, the routes of ``events_support`` plus a
security route whose template has a category, and a quota for the ``acme`` tenant.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from conftest import TEST_KEY, Api, FakeClock, MemoryProvider
from events_support import ROUTES, certificate, post_event, processed, shipped, wait_event

SECURITY = """
templates:
  security_alert:
    category: security
    channels:
      email: {subject: "Security: {{ what }}", body: "{{ what }}"}
      sms: {body: "Security: {{ what }}"}
routes:
  security:
    match: {event: account.suspicious_login}
    notify: {template: security_alert, channels: [email, sms]}
"""
QUOTA = "quotas:\n  acme: {daily: 4, events_per_minute: 3}\n"


@pytest.fixture
def policy_dir(policy_dir: Path) -> Path:
    (policy_dir / "routes.yaml").write_text(ROUTES)
    (policy_dir / "security.yaml").write_text(SECURITY)
    (policy_dir / "quotas.yaml").write_text(QUOTA)
    return policy_dir


async def contact(api: Api, body: dict[str, Any], key: str | None = None) -> str:
    response = await api.client.post("/api/v1/contacts", json=body, headers=api.headers(key))
    assert response.status == 201, await response.text()
    contact_id: str = (await response.json())["contact_id"]
    return contact_id


def login(event_id: str, severity: str, **recipient: str) -> dict[str, Any]:
    return {"event_id": event_id, "event_name": "account.suspicious_login", "severity": severity, "data": {"what": "new login"}} | recipient


async def test_an_event_to_a_contact_goes_to_its_addresses_and_skips_the_channels_it_turned_off(
    api: Api, memory_provider: type[MemoryProvider]
) -> None:
    await contact(api, {"external_id": "u-7", "phone": "+14155550107", "email": "u7@example.com", "preferences": {"channels": {"email": False}}})
    event = await processed(api, login("evt-contact", "medium", external_id="u-7"))
    [outcome] = event["outcomes"]
    assert outcome["result"] == "notified", outcome
    notification = await api.wait_for(outcome["notification_id"], lambda n: n["status"] == "sent")
    by_channel = {d["channel"]: d for d in notification["deliveries"]}
    assert (by_channel["email"]["status"], by_channel["email"]["skip_reason"]) == ("skipped", "channel_opted_out")
    assert by_channel["sms"]["status"] == "sent"
    assert [message.to for message in memory_provider.sent] == ["+14155550107"]
    assert notification["contact_id"].startswith("ctc_") and notification["severity"] == "medium"


async def test_a_critical_event_passes_a_category_opt_out_and_a_medium_one_does_not(api: Api) -> None:
    await contact(api, {"external_id": "u-8", "email": "u8@example.com", "phone": "+14155550108",
                        "preferences": {"categories": {"security": False}}})
    medium = await processed(api, login("evt-medium", "medium", external_id="u-8"))
    skipped = await api.notification(medium["outcomes"][0]["notification_id"])
    assert skipped["status"] == "skipped"
    assert {d["skip_reason"] for d in skipped["deliveries"]} == {"category_opted_out"}
    critical = await processed(api, login("evt-critical", "critical", external_id="u-8"))
    sent = await api.wait_for(critical["outcomes"][0]["notification_id"], lambda n: n["status"] == "sent")
    assert sent["severity"] == "critical"
    assert {d["status"] for d in sent["deliveries"]} == {"sent"}


async def test_an_event_naming_no_contact_of_the_keys_mode_is_suppressed_as_contact_not_found(api: Api) -> None:
    await contact(api, {"external_id": "u-live", "phone": "+14155550109"})
    event = await processed(api, shipped("evt-no-contact", recipient={"external_id": "u-live"}), key=TEST_KEY)
    [outcome] = event["outcomes"]
    assert (outcome["result"], outcome["reason"]) == ("suppressed", "contact_not_found")
    body = shipped("evt-by-id")
    body.pop("recipient")
    body["contact_id"] = "ctc_01J0000000000000000000000"
    missing = await processed(api, body)
    assert missing["outcomes"][0]["reason"] == "contact_not_found"


async def test_a_daily_digest_to_a_contact_is_due_at_nine_in_the_contacts_time_zone(api: Api, clock: FakeClock) -> None:
    await contact(api, {"external_id": "u-tokyo", "email": "tokyo@example.com", "timezone": "Asia/Tokyo"})
    report = {"event_id": "rep-1", "event_name": "report.ready", "external_id": "u-tokyo", "data": {"order_id": "r1"}}
    event = await processed(api, report)
    [outcome] = event["outcomes"]
    assert outcome["result"] == "digested"
    due = datetime.fromisoformat(outcome["digest"]["due_at"].replace("Z", "+00:00")).astimezone(ZoneInfo("Asia/Tokyo"))
    assert (due.hour, due.minute) == (9, 0)
    assert due.timestamp() > clock.now()
    assert due.timestamp() - clock.now() <= 86_400


async def test_an_events_fan_out_counts_its_messages_and_is_suppressed_whole_when_they_do_not_fit(
    api: Api, memory_provider: type[MemoryProvider]
) -> None:
    many = shipped("evt-three")
    many.pop("recipient")
    many["recipients"] = [{"phone": f"+1415555020{n}"} for n in range(3)]
    event = await processed(api, many)
    assert [o["result"] for o in event["outcomes"]] == ["notified"] * 3
    over = shipped("evt-two")
    over.pop("recipient")
    over["recipients"] = [{"phone": "+14155550210"}, {"phone": "+14155550211"}]
    refused = await processed(api, over)
    assert [(o["result"], o["reason"]) for o in refused["outcomes"]] == [("suppressed", "daily_quota_exceeded")] * 2
    fits = await processed(api, shipped("evt-one", phone="+14155550212"))
    assert fits["outcomes"][0]["result"] == "notified", "the last message of the day still fits"
    response = await api.client.post("/api/v1/notifications/send", headers=api.headers(), json={
        "recipient": {"phone": "+14155550213"}, "notification": {"channels": ["sms"], "body": "hi"}})
    assert response.status == 429 and (await response.json())["error"]["code"] == "daily_quota_exceeded"


async def test_deduplicated_events_spend_no_quota(api: Api, clock: FakeClock) -> None:
    for n in range(3):
        clock.advance(20)  # events_per_minute: 3, one more every 20 s
        event = await processed(api, certificate(f"evt-cert-{n}"))
    assert event["outcomes"][0]["reason"] == "deduplicated"
    status, page = await api.get("/api/v1/notifications?limit=10")
    assert status == 200 and len(page["items"]) == 1
    for n in range(3):
        clock.advance(20)
        ok = await processed(api, shipped(f"evt-after-dedupe-{n}", phone=f"+1415555030{n}"))
        assert ok["outcomes"][0]["result"] == "notified", "two deduplicated events left their messages in the quota"


async def test_posting_events_is_held_to_events_per_minute_with_the_ratelimit_headers(api: Api, clock: FakeClock) -> None:
    answers = []
    for n in range(3):
        response = await api.client.post("/api/v1/events", json=shipped(f"evt-rate-{n}"), headers=api.headers())
        answers.append((response.status, response.headers.get("RateLimit-Remaining")))
    assert answers == [(202, "2"), (202, "1"), (202, "0")]
    duplicate = await api.client.post("/api/v1/events", json=shipped("evt-rate-0"), headers=api.headers())
    assert duplicate.status == 200 and (await duplicate.json())["status"] == "duplicate", "a retry of a kept event is told so, limit or not"
    clock.advance(20)
    again = await api.client.post("/api/v1/events", json=shipped("evt-rate-0"), headers=api.headers())
    assert again.status == 200 and (await again.json())["status"] == "duplicate"
    assert again.headers["RateLimit-Remaining"] == "1", "a duplicate gives back the event it took"
    await post_event(api, shipped("evt-rate-3"))
    refused = await api.client.post("/api/v1/events", json=shipped("evt-rate-4"), headers=api.headers())
    body = await refused.json()
    assert (refused.status, body["error"]["code"]) == (429, "rate_limited")
    assert int(refused.headers["Retry-After"]) >= 1
    status, _ = await api.get("/api/v1/events/evt-rate-4")
    assert status == 404, "a refused event is not kept"
    await wait_event(api, "evt-rate-3")
