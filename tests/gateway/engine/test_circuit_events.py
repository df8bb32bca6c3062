"""Circuit events are told to the tenants an instance serves, not to every tenant."""

from __future__ import annotations

import asyncio
import textwrap
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from conftest import LIVE_KEY, OTHER_KEY, Api, FakeClock, MemoryProvider, key_entry, serve

from gateway import OutboundMessage, SendReceipt, TransientDeliveryError
from gateway.http.appkeys import EVENT_WEBHOOKS

THIRD_KEY = "tdk_thrd_live_key_for_tests_0005"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class DownProvider(MemoryProvider):
    """An instance whose vendor is down: every send fails, and counts against its breaker."""

    async def send(self, message: OutboundMessage) -> SendReceipt:
        raise TransientDeliveryError("vendor is down")


class Receivers:
    """One event endpoint per tenant on loopback; ``events[tenant]`` is what that tenant was told."""

    def __init__(self) -> None:
        self.events: dict[str, list[dict[str, Any]]] = {}
        self.urls: dict[str, str] = {}

    async def handle(self, request: web.Request) -> web.Response:
        self.events.setdefault(request.match_info["tenant"], []).append(orjson.loads(await request.read()))
        return web.Response(status=204)

    def types(self, tenant: str) -> list[tuple[str, str]]:
        return [(event["type"], event["data"].get("instance", "")) for event in self.events.get(tenant, [])]


@pytest.fixture
async def receivers(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> Receivers:
    found = Receivers()
    app = web.Application()
    app.router.add_post("/{tenant}", found.handle)
    server = await aiohttp_server(app, host="127.0.0.1")
    found.urls = {tenant: str(server.make_url(f"/{tenant}")) for tenant in ("acme", "other", "third")}
    return found


BREAKER = "circuit_breaker: {failures: 1, window: 60s, cooldown: 30s}"


def policy(receivers: Receivers, shared_route: str = "[memory]") -> str:
    """acme routes sms to the shared instance ``shared``; ``own`` belongs to other; the shared route is ``shared_route``."""
    hooks = "".join(
        f"  {tenant}:\n    main: {{url: '{url}', events: ['provider.circuit_opened', 'provider.circuit_closed'], "
        f"secret: {SECRET}, allow_private: true}}\n"
        for tenant, url in receivers.urls.items()
    )
    return textwrap.dedent(f"""\
        tenants:
          acme:
            api_keys: [{key_entry(LIVE_KEY)}]
            channels:
              sms: {{providers: [shared, memory]}}
          other:
            api_keys: [{key_entry(OTHER_KEY)}]
            channels:
              sms: {{providers: [own, memory]}}
          third:
            api_keys: [{key_entry(THIRD_KEY)}]
        providers:
          memory: {{plugin: memory}}
          shared: {{plugin: down, {BREAKER}}}
          own: {{plugin: down, tenant: other, {BREAKER}}}
        channels:
          sms: {{providers: {shared_route}}}
        webhooks:
    """) + hooks


async def start(aiohttp_client: Any, directory: Path, clock: FakeClock, text: str) -> Api:
    clock.value = time.time()  # receivers would check webhook-timestamp against their own clock
    directory.mkdir()
    (directory / "policy.yaml").write_text(text)
    return await serve(aiohttp_client, directory, {"memory": MemoryProvider, "down": DownProvider}, clock)


@pytest.fixture
async def api(aiohttp_client: Any, tmp_path: Path, clock: FakeClock, receivers: Receivers, memory_provider: type[MemoryProvider]) -> Api:
    return await start(aiohttp_client, tmp_path / "policies", clock, policy(receivers))


async def sms(api: Api, key: str) -> None:
    status, body = await api.send({"recipient": {"phone": "+14155550100"}, "notification": {"channels": ["sms"], "body": "hi"}}, key=key)
    assert status == 202, body
    await api.wait_for(body["notification_id"], lambda n: n["status"] == "sent", key=key)


async def settled(api: Api) -> None:
    """Every event fanned out and every endpoint sent what it is due."""
    await asyncio.wait_for(api.app[EVENT_WEBHOOKS].until_idle(), 5)


async def test_a_shared_instances_circuit_is_told_only_to_the_tenants_routed_to_it(api: Api, receivers: Receivers) -> None:
    await sms(api, LIVE_KEY)  # through shared (down: its circuit opens), then memory
    await settled(api)
    assert receivers.types("acme") == [("provider.circuit_opened", "shared")]
    assert receivers.types("other") == [] and receivers.types("third") == [], "no one else uses it: no one else hears of it"


async def test_an_owned_instances_circuit_is_told_only_to_its_owner(api: Api, receivers: Receivers) -> None:
    await sms(api, OTHER_KEY)
    await settled(api)
    assert receivers.types("other") == [("provider.circuit_opened", "own")]
    assert receivers.types("acme") == [] and receivers.types("third") == []


async def test_each_tenant_routed_to_a_shared_instance_gets_its_own_event(
    aiohttp_client: Any, tmp_path: Path, clock: FakeClock, receivers: Receivers, memory_provider: type[MemoryProvider]
) -> None:
    api = await start(aiohttp_client, tmp_path / "shared", clock, policy(receivers, shared_route="[shared, memory]"))
    await sms(api, THIRD_KEY)  # third's send opens the shared circuit; acme routes to it too; other has its own route
    await settled(api)
    assert receivers.types("third") == [("provider.circuit_opened", "shared")]
    assert receivers.types("acme") == [("provider.circuit_opened", "shared")]
    assert receivers.types("other") == []
    assert receivers.events["acme"][0]["data"]["seq"] != receivers.events["third"][0]["data"]["seq"], "one event per tenant told"
