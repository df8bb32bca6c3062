"""Plugins' declared ``max_body_chars``: refused at the API when no instance takes the body, skipped at dispatch."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest
from aiohttp import web
from conftest import LIVE_KEY, TEST_KEY, Api, FakeClock, MemoryProvider, key_entry

from gateway import OutboundMessage, ProviderLimits, SendReceipt
from gateway.clock import isoformat
from gateway.http.appkeys import POLICY_WATCHER
from gateway.plugins import PluginCatalog
from plugins.sandbox import SandboxProvider

PHONE = "+14155550100"


class ShortProvider(MemoryProvider):
    """Takes SMS bodies of at most 20 characters."""

    limits = ProviderLimits(max_body_chars=20)
    taken: ClassVar[list[OutboundMessage]] = []

    async def send(self, message: OutboundMessage) -> SendReceipt:
        type(self).taken.append(message)
        return SendReceipt(provider_message_id=f"{self.name}-{message.delivery_id}")


class LongProvider(ShortProvider):
    """Takes SMS bodies of at most 100 characters."""

    limits = ProviderLimits(max_body_chars=100)
    taken: ClassVar[list[OutboundMessage]] = []


def policy(sms_providers: str) -> str:
    return textwrap.dedent(
        f"""
        tenants:
          acme:
            api_keys: [{key_entry(LIVE_KEY)}, {key_entry(TEST_KEY, "test")}]
        providers:
          short: {{plugin: short}}
          long: {{plugin: long}}
          sandbox: {{plugin: sandbox}}
        channels:
          sms: {{providers: [{sms_providers}]}}
        templates:
          receipt:
            channels:
              sms: {{body: "Your order: {{{{ items }}}}"}}
        """
    )


@pytest.fixture
def plugin_catalog() -> PluginCatalog:
    ShortProvider.taken, LongProvider.taken = [], []
    return PluginCatalog.from_classes({"short": ShortProvider, "long": LongProvider, "sandbox": SandboxProvider})


@pytest.fixture
async def api(aiohttp_client: Any, make_app: Callable[..., web.Application], policy_dir: Path) -> Api:
    (policy_dir / "policy.yaml").write_text(policy("short, long"))
    return Api(await aiohttp_client(make_app()))


def sms(body: str, **notification: Any) -> dict[str, Any]:
    return {"recipient": {"phone": PHONE}, "notification": {"channels": ["sms"], "body": body} | notification}


async def test_capabilities_say_how_long_a_body_the_channel_takes(api: Api) -> None:
    _, live = await api.get("/api/v1/channels/capabilities")
    assert [c["max_body_chars"] for c in live["channels"] if c["channel"] == "sms"] == [100]
    _, test = await api.get("/api/v1/channels/capabilities", key=TEST_KEY)
    assert [c["max_body_chars"] for c in test["channels"] if c["channel"] == "sms"] == [None]  # the sandbox takes anything


async def test_a_body_no_instance_takes_is_refused_and_nothing_is_stored(api: Api) -> None:
    status, refused = await api.send(sms("x" * 101))
    assert status == 422 and refused["error"]["code"] == "body_too_long"
    assert refused["error"]["details"] == [
        {"field": "notification.body", "message": "the body is 101 characters for sms; its provider instances take at most 100",
         "code": "body_too_long"}
    ]
    assert (await api.get("/api/v1/notifications"))[1]["items"] == []
    status, bulk = await api.send_bulk({"channels": ["sms"], "body": "x" * 101, "recipients": [{"phone": PHONE}]})
    assert status == 422 and bulk["error"]["code"] == "body_too_long"
    status, _ = await api.send(sms("x" * 101), key=TEST_KEY)
    assert status == 202, "test keys send through the sandbox, which takes any length"


async def test_a_template_rendering_too_long_is_refused_at_its_data(api: Api) -> None:
    status, refused = await api.send(
        {"recipient": {"phone": PHONE}, "notification": {"channels": ["sms"], "template_id": "receipt", "data": {"items": "y" * 90}}}
    )
    assert status == 422 and refused["error"]["details"][0]["field"] == "notification.data"
    assert "template 'receipt' renders 102 characters" in refused["error"]["message"]


async def test_an_instance_that_cannot_take_the_body_is_passed_over(api: Api) -> None:
    _, accepted = await api.send(sms("A body of forty characters, more or less"))
    done = await api.wait_for(accepted["notification_id"], lambda n: n["status"] == "sent")
    [delivery] = done["deliveries"]
    assert delivery["provider"] == "long" and [a["provider"] for a in delivery["attempts"]] == ["long"]
    assert ShortProvider.taken == [] and len(LongProvider.taken) == 1
    _, short = await api.send(sms("Short one"))
    done = await api.wait_for(short["notification_id"], lambda n: n["status"] == "sent")
    assert done["deliveries"][0]["provider"] == "short"


async def test_a_body_that_fits_no_instance_any_more_fails_for_good_at_dispatch(api: Api, policy_dir: Path, clock: FakeClock) -> None:
    """Accepted while ``long`` served the channel, due after a policy change left only ``short``."""
    _, accepted = await api.send(sms("A body of forty characters, more or less", send_at=isoformat(clock.now() + 3600)))
    (policy_dir / "policy.yaml").write_text(policy("short"))
    assert await api.app[POLICY_WATCHER].reload() is True
    clock.advance(3600)
    api.wake()
    done = await api.wait_for(accepted["notification_id"], lambda n: n["status"] not in ("queued", "sending"))
    [delivery] = done["deliveries"]
    assert delivery["status"] == "failed" and delivery["dead_reason"] == "permanent"
    assert delivery["last_error"] == "the body is 40 characters; its provider instances take at most 20"
    assert ShortProvider.taken == []
