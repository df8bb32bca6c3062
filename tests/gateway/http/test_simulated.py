"""``simulated``: what went through the sandbox says so, on the delivery, its attempts, the notification and the events.

A live key whose channel the policy routes to a sandbox instance gets deliveries that report
``delivered`` though nothing reached anyone; a live key through a real provider (a fake Twilio
on loopback) does not; a test key's deliveries always are. Recorded when the attempt is made,
so it holds whatever the policy says later.
"""

from __future__ import annotations

import asyncio
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from conftest import LIVE_KEY, TEST_KEY, Api, FakeClock, key_entry, serve
from fakes.twilio import ACCOUNT_SID, AUTH_TOKEN, FROM, FakeTwilio, message_status
from twilio.request_validator import RequestValidator

from gateway import signing
from gateway.http.appkeys import INBOUND, OUTCOMES
from plugins.sandbox import SandboxProvider
from plugins.twilio import TwilioProvider

PHONE = "+14155550100"
PUBLIC = "https://tidings.example/api/v1/webhooks/acme_twilio"


class Receiver:
    """The tenant's event webhook endpoint: keeps every payload, answers 200."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.arrived = asyncio.Condition()

    async def handle(self, request: web.Request) -> web.Response:
        self.events.append(orjson.loads(await request.read()))
        async with self.arrived:
            self.arrived.notify_all()
        return web.Response()

    async def until(self, predicate: Callable[[], bool]) -> None:
        async def wait() -> None:
            async with self.arrived:
                await self.arrived.wait_for(predicate)

        await asyncio.wait_for(wait(), 5)

    def of(self, notification_id: str) -> dict[str, dict[str, Any]]:
        """The events about one notification, by type."""
        return {event["type"]: event["data"] for event in self.events if event["data"].get("notification_id") == notification_id}


@pytest.fixture
async def twilio() -> AsyncIterator[FakeTwilio]:
    async with FakeTwilio().serving() as fake:
        yield fake


@pytest.fixture
async def receiver(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> tuple[Receiver, str]:
    found = Receiver()
    app = web.Application()
    app.router.add_post("/hook", found.handle)
    server = await aiohttp_server(app)
    return found, str(server.make_url("/hook"))


@pytest.fixture
async def api(aiohttp_client: Any, tmp_path: Path, clock: FakeClock, twilio: FakeTwilio, receiver: tuple[Receiver, str]) -> Api:
    """acme: sms through a real provider (the fake Twilio), whatsapp through a sandbox instance, voice through Twilio then the sandbox."""
    clock.value = time.time()
    policy_dir = tmp_path / "policies"
    policy_dir.mkdir()
    (policy_dir / "policy.yaml").write_text(textwrap.dedent(f"""
        tenants:
          acme:
            api_keys: [{key_entry(LIVE_KEY)}, {key_entry(TEST_KEY, "test")}]
        providers:
          acme_twilio:
            plugin: twilio
            config: {{account_sid: {ACCOUNT_SID}, auth_token: {AUTH_TOKEN}, from: "{FROM}", base_url: {twilio.url},
                      status_callback_url: {PUBLIC}}}
          play: {{plugin: sandbox}}
        channels:
          sms: {{providers: [acme_twilio]}}
          whatsapp: {{providers: [play]}}
          voice: {{providers: [acme_twilio, play]}}
        templates:
          otp:
            channels:
              whatsapp:
                provider_template: {{name: otp_code, language: en_US, parameters: ["{{{{ code }}}}"]}}
        webhooks:
          acme:
            main: {{url: {receiver[1]}, events: ["*"], secret: {signing.new_secret()}, allow_private: true}}
    """))
    return await serve(aiohttp_client, policy_dir, {"twilio": TwilioProvider, "sandbox": SandboxProvider}, clock)


async def send(api: Api, channel: str, *, key: str = LIVE_KEY) -> str:
    notification: dict[str, Any] = {"channels": [channel], "body": "Your code is 123456"}
    if channel == "whatsapp":
        notification = {"channels": [channel], "template_id": "otp", "data": {"code": "123456"}}
    status, accepted = await api.send({"recipient": {"phone": PHONE}, "notification": notification}, key=key)
    assert status == 202, accepted
    return str(accepted["notification_id"])


async def twilio_says_delivered(api: Api, found: dict[str, Any]) -> None:
    """Post Twilio's signed ``delivered`` callback for the notification's delivery."""
    delivery = found["deliveries"][0]
    url = f"{PUBLIC}?d={delivery['delivery_id']}"
    params = message_status(delivery["provider_message_id"], "delivered")
    headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": RequestValidator(AUTH_TOKEN).compute_signature(url, params)}
    parts = urlsplit(url)
    response = await api.client.post(f"{parts.path}?{parts.query}", data=urlencode(params), headers=headers)
    assert response.status == 200, await response.text()
    await api.app[INBOUND].drain()
    await api.app[OUTCOMES].drain()


async def test_a_live_send_routed_to_the_sandbox_is_simulated_on_the_delivery_notification_attempts_and_events(
    api: Api, receiver: tuple[Receiver, str]
) -> None:
    found, _url = receiver
    notification_id = await send(api, "whatsapp")
    done = await api.wait_for(notification_id, lambda n: n["status"] == "delivered")
    [delivery] = done["deliveries"]
    assert (done["mode"], done["simulated"]) == ("live", True)
    assert (delivery["provider"], delivery["simulated"]) == ("play", True)
    assert [attempt["simulated"] for attempt in delivery["attempts"]] == [True]
    _, listing = await api.get("/api/v1/notifications")
    [item] = listing["items"]
    assert item["simulated"] is True and item["deliveries"][0]["simulated"] is True
    await found.until(lambda: "message.delivered" in found.of(notification_id))
    events = found.of(notification_id)
    assert {kind: data["simulated"] for kind, data in events.items()} == {
        "message.queued": True, "message.sent": True, "message.delivered": True,
    }


async def test_a_live_send_through_a_real_provider_is_not_simulated(api: Api, twilio: FakeTwilio, receiver: tuple[Receiver, str]) -> None:
    found, _url = receiver
    notification_id = await send(api, "sms")
    sent = await api.wait_for(notification_id, lambda n: n["status"] == "sent")
    await twilio_says_delivered(api, sent)
    done = await api.notification(notification_id)
    [delivery] = done["deliveries"]
    assert (done["status"], done["simulated"]) == ("delivered", False)
    assert (delivery["provider"], delivery["simulated"]) == ("acme_twilio", False)
    assert [attempt["simulated"] for attempt in delivery["attempts"]] == [False]
    assert len(twilio.sends) == 1
    await found.until(lambda: "message.delivered" in found.of(notification_id))
    assert {kind: data["simulated"] for kind, data in found.of(notification_id).items()} == {
        "message.queued": False, "message.sent": False, "message.delivered": False,
    }


async def test_a_failover_to_the_sandbox_marks_that_attempt_and_the_delivery_but_not_the_real_attempt(
    api: Api, twilio: FakeTwilio
) -> None:
    twilio.fail_next("5xx")
    notification_id = await send(api, "voice")
    done = await api.wait_for(notification_id, lambda n: n["status"] == "delivered")
    [delivery] = done["deliveries"]
    assert [(a["provider"], a["outcome"], a["simulated"]) for a in delivery["attempts"]] == [
        ("acme_twilio", "transient", False), ("play", "sent", True),
    ]
    assert delivery["simulated"] is True and done["simulated"] is True


async def test_a_test_keys_deliveries_are_always_simulated(api: Api, twilio: FakeTwilio) -> None:
    notification_id = await send(api, "sms", key=TEST_KEY)  # sms is routed to Twilio, but test keys only use the sandbox
    done = await api.wait_for(notification_id, lambda n: n["status"] == "delivered", key=TEST_KEY)
    [delivery] = done["deliveries"]
    assert (done["mode"], done["simulated"], delivery["simulated"], delivery["provider"]) == ("test", True, True, "sandbox")
    assert twilio.sends == []
