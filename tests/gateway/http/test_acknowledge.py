"""POST /api/v1/notifications/{id}/acknowledge: who and when, waiting fallbacks called off, repeats held, once only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import OTHER_KEY, TEST_KEY, Api, FakeClock, MemoryProvider, sms_body
from events_support import ROUTES, certificate, processed

from gateway.http.appkeys import STORE


@pytest.fixture
def policy_dir(policy_dir: Path) -> Path:
    (policy_dir / "routes.yaml").write_text(ROUTES)
    return policy_dir


async def acknowledge(api: Api, notification_id: str, body: dict[str, Any] | None = None, *, key: str | None = None) -> tuple[int, dict[str, Any]]:
    path = f"/api/v1/notifications/{notification_id}/acknowledge"
    response = await api.client.post(path, json=body, headers=api.headers(key)) if body is not None else await api.client.post(path, headers=api.headers(key))
    return response.status, await response.json()


async def alert(api: Api, event_id: str = "cert-1", certificate_id: str = "c-1") -> str:
    """A certificate alert: email first, SMS waiting its fallback turn; its notification's id once the email is sent."""
    event = await processed(api, certificate(event_id, certificate_id))
    notification_id: str = event["outcomes"][0]["notification_id"]
    await api.wait_for(notification_id, lambda n: n["deliveries"][0]["status"] == "sent")
    return notification_id


async def test_an_acknowledgement_records_who_when_and_the_note_and_calls_off_the_waiting_sms(
    api: Api, clock: FakeClock, memory_provider: type[MemoryProvider]
) -> None:
    notification_id = await alert(api)
    status, answer = await acknowledge(api, notification_id, {"note": "renewing now"})
    assert status == 200
    assert answer["acknowledged"] == {"by": "tdk_acme_liv", "at": "2027-01-15T08:00:00.000Z", "note": "renewing now"}
    notification = await api.notification(notification_id)
    assert notification["acknowledged"] == answer["acknowledged"]
    sms = notification["deliveries"][1]
    assert (sms["channel"], sms["status"]) == ("sms", "skipped")
    lines = [(line["action"], line["delivery_id"], line["reason"]) for line in notification["audit"] if line["action"] in ("acknowledged", "skipped")]
    assert lines == [("acknowledged", None, "acknowledged by tdk_acme_liv: renewing now"), ("skipped", sms["delivery_id"], "acknowledged by tdk_acme_liv")]
    clock.advance(11 * 60)  # past fallback_after: the SMS would have started
    api.wake()
    await api.idle()
    assert [message.channel for message in memory_provider.sent] == ["email"]


async def test_acknowledging_twice_is_the_same_as_once(api: Api, clock: FakeClock) -> None:
    notification_id = await alert(api)
    _, first = await acknowledge(api, notification_id, {"note": "mine"})
    clock.advance(60)
    status, second = await acknowledge(api, notification_id, {"note": "me too"}, key=None)
    assert (status, second) == (200, first)
    notification = await api.notification(notification_id)
    assert [line["action"] for line in notification["audit"]].count("acknowledged") == 1


async def test_an_acknowledgement_is_told_as_a_message_acknowledged_event(api: Api) -> None:
    notification_id = await alert(api)
    await acknowledge(api, notification_id)
    events = await api.app[STORE].list_events(tenant="acme")  # type: ignore[attr-defined]
    told = [event for event in events if event.type == "message.acknowledged"]
    assert len(told) == 1 and told[0].data["notification_id"] == notification_id


async def test_an_acknowledged_fingerprint_is_held_until_repeat_after_passes(api: Api, clock: FakeClock) -> None:
    notification_id = await alert(api, "cert-1", "c-1")
    await acknowledge(api, notification_id)
    clock.advance(7 * 3600)  # past the 6h dedupe window: only the acknowledgement holds it back
    held = await processed(api, certificate("cert-2", "c-1"))
    assert (held["outcomes"][0]["result"], held["outcomes"][0]["reason"]) == ("suppressed", "acknowledged_repeat")
    assert notification_id in held["outcomes"][0]["message"]
    assert (await processed(api, certificate("cert-3", "c-2")))["outcomes"][0]["result"] == "notified"  # another certificate
    clock.advance(18 * 3600)  # 25h after the acknowledgement
    assert (await processed(api, certificate("cert-4", "c-1")))["outcomes"][0]["result"] == "notified"


async def test_a_plain_send_can_be_acknowledged_and_holds_nothing(api: Api) -> None:
    _, sent = await api.send(sms_body())
    status, answer = await acknowledge(api, sent["notification_id"])
    assert status == 200 and answer["acknowledged"]["note"] is None
    notification = await api.notification(sent["notification_id"])
    assert (notification["event_id"], notification["route"], notification["acknowledged"]["by"]) == (None, None, "tdk_acme_liv")


@pytest.mark.parametrize("who", ["unknown", "other tenant", "other mode", "not an id"])
async def test_an_unknown_or_foreign_notification_is_404(api: Api, who: str) -> None:
    _, sent = await api.send(sms_body())
    notification_id, key = sent["notification_id"], None
    if who == "unknown":
        notification_id = "ntf_01HZZZZZZZZZZZZZZZZZZZZZZZ"
    elif who == "other tenant":
        key = OTHER_KEY
    elif who == "other mode":
        key = TEST_KEY
    else:
        notification_id = "evt-1"
    status, error = await acknowledge(api, notification_id, key=key)
    assert (status, error["error"]["code"]) == (404, "notification_not_found")
    assert (await api.notification(sent["notification_id"]))["acknowledged"] is None


@pytest.mark.parametrize("body", [{"note": "x" * 1001}, {"note": 5}, {"by": "me"}])
async def test_a_bad_acknowledgement_is_refused_and_changes_nothing(api: Api, body: dict[str, Any]) -> None:
    _, sent = await api.send(sms_body())
    status, error = await acknowledge(api, sent["notification_id"], body)
    assert (status, error["error"]["code"]) == (422, "validation_failed")
    assert (await api.notification(sent["notification_id"]))["acknowledged"] is None
