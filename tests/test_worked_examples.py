"""The shipped policies' worked business-event examples, posted with the README's demo key to an app serving policies/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import Api, FakeClock
from events_support import processed, wait_event

from gateway.app import create_app
from gateway.plugins import PluginCatalog
from gateway.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DEMO_KEY = "tdk_demo_sandbox_key_for_local_use"


async def shipped_app(aiohttp_client: Any, tmp_path: Path, clock: FakeClock) -> Api:
    settings = Settings(data_dir=tmp_path, policy_dir=ROOT / "policies", policy_reload=False, _env_file=None)  # type: ignore[call-arg]
    return Api(await aiohttp_client(create_app(settings, plugins=PluginCatalog.discover(), clock=clock)), DEMO_KEY)


async def made(api: Api, event: dict[str, Any]) -> dict[str, Any]:
    [outcome] = (await processed(api, event))["outcomes"]
    assert outcome["result"] == "notified", outcome
    return await api.notification(outcome["notification_id"])


async def test_an_order_shipped_goes_whatsapp_then_sms_then_email(aiohttp_client: Any, tmp_path: Path, clock: FakeClock) -> None:
    api = await shipped_app(aiohttp_client, tmp_path, clock)
    notification = await made(api, {"event_id": "order-1001-shipped", "event_name": "order.shipped",
                                    "recipient": {"phone": "+14155550100", "email": "ada@example.com"}, "data": {"order_id": "1001"}})
    assert (notification["route"], notification["channels"], notification["strategy"]) == ("order-shipped", ["whatsapp", "sms", "email"], "fallback")
    assert notification["fallback_after"] == 120 and notification["mode"] == "test"


async def test_a_certificate_expiring_is_high_by_default_and_deduplicated(aiohttp_client: Any, tmp_path: Path, clock: FakeClock) -> None:
    api = await shipped_app(aiohttp_client, tmp_path, clock)
    event = {"event_id": "cert-1", "event_name": "ssl.certificate_expiring", "source": "monitoring-prod",
             "recipient": {"email": "ops@example.com", "phone": "+14155550100"},
             "data": {"certificate_id": "c-42", "domain": "shop.example", "days_left": 7, "expires_on": "2027-01-22"}}
    notification = await made(api, event)
    assert notification["priority"] == "high" and notification["channels"] == ["email", "sms"]
    assert notification["deliveries"][0]["content"]["subject"] == "[HIGH] Certificate for shop.example expires in 7 days"
    again = await processed(api, event | {"event_id": "cert-2"})
    assert again["outcomes"][0]["reason"] == "deduplicated"
    low = await processed(api, event | {"event_id": "cert-3", "severity": "medium"})
    assert low["outcomes"][0]["reason"] == "no_route_matched"


async def test_an_otp_goes_by_sms_falling_back_to_voice(aiohttp_client: Any, tmp_path: Path, clock: FakeClock) -> None:
    api = await shipped_app(aiohttp_client, tmp_path, clock)
    notification = await made(api, {"event_id": "otp-1", "event_name": "auth.otp_requested", "recipient": {"phone": "+14155550100"},
                                    "data": {"code": "123456", "product": "Demo"}})
    assert (notification["channels"], notification["strategy"], notification["priority"]) == (["sms", "voice"], "fallback", "high")
    assert notification["deliveries"][1]["status"] == "waiting"


async def test_comments_wait_for_the_daily_digest_at_nine_in_lisbon(aiohttp_client: Any, tmp_path: Path, clock: FakeClock) -> None:
    api = await shipped_app(aiohttp_client, tmp_path, clock)
    event = await processed(api, {"event_id": "comment-1", "event_name": "comment.posted", "recipient": {"email": "ada@example.com"},
                                  "data": {"notify": True, "author": "Bob", "post": "Hello", "excerpt": "Nice!"}})
    [outcome] = event["outcomes"]
    assert (outcome["result"], outcome["digest"]["due_at"]) == ("digested", "2027-01-15T09:00:00.000Z")  # Lisbon is on UTC in January
    clock.advance(3600)
    sent = await wait_event(api, "comment-1", lambda e: e["outcomes"][0]["digest"]["status"] == "sent")
    notification = await api.notification(sent["outcomes"][0]["notification_id"])
    assert notification["deliveries"][0]["content"]["subject"] == "1 new comment today"
    assert notification["deliveries"][0]["content"]["body"].strip() == "- Bob on Hello: Nice!"
