"""Faults on the way out: where the gateway connects for a tenant, and endpoints that fail or hang.

Each case drives the real HTTP API of a gateway on loopback over a real SQLite file, and
asserts what a user sees: the delivery's status and attempt error, what a receiver got. Time is
a FakeClock; every case is bounded by the suite's timeout and by ``wait_for``'s five seconds.
"""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from conftest import LIVE_KEY, OTHER_KEY, Api, FakeClock, MemoryProvider, key_entry, serve

from gateway import signing
from gateway.engine import webhook_attempts
from gateway.http.appkeys import EVENT_WEBHOOKS, STORE
from gateway.policy.models import WebhookEndpointPolicy
from gateway.store import WebhookDelivery
from plugins.webhook import WebhookProvider

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
REFUSED = "the url is not on a public address; only an instance with allow_private: true sends there"


class Inside:
    """Something on the gateway's own host that a tenant must not reach: it keeps every request."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(await request.read())
        return web.Response(status=204)


@pytest.fixture
async def inside(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> tuple[Inside, int]:
    found = Inside()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", found.handle)
    server = await aiohttp_server(app, host="127.0.0.1")
    return found, int(server.port)


def write_policy(policy_dir: Path, *, allow_private: bool, webhooks: str) -> None:
    (policy_dir / "policy.yaml").write_text(textwrap.dedent(f"""
        tenants:
          acme:
            api_keys: [{key_entry(LIVE_KEY)}]
          other:
            api_keys: [{key_entry(OTHER_KEY)}]
        providers:
          hook:
            plugin: webhook
            config: {{secret: {SECRET}, allow_private: {str(allow_private).lower()}}}
          memory: {{plugin: memory}}
        channels:
          webhook: {{providers: [hook]}}
          sms: {{providers: [memory]}}
    """) + webhooks)


@pytest.fixture
def gateway(
    aiohttp_client: Any, tmp_path: Path, clock: FakeClock, memory_provider: type[MemoryProvider]
) -> Callable[..., Awaitable[Api]]:
    async def build(*, allow_private: bool = False, webhooks: str = "") -> Api:
        policy_dir = tmp_path / "policies"
        policy_dir.mkdir(exist_ok=True)
        write_policy(policy_dir, allow_private=allow_private, webhooks=webhooks)
        return await serve(aiohttp_client, policy_dir, {"webhook": WebhookProvider, "memory": memory_provider}, clock)

    return build


def endpoints(tenant: str, urls: dict[str, str], *, allow_private: bool = False, events: str = "[message.queued]") -> str:
    """A tenant's event webhook endpoints, by name, as policy."""
    lines = [f"  {tenant}:"]
    for name, url in urls.items():
        lines += [f"    {name}:", f"      url: {url}", f"      events: {events}", f"      secret: {SECRET}",
                  f"      allow_private: {str(allow_private).lower()}"]
    return "\n".join(lines) + "\n"


async def send_sms(api: Api, key: str = LIVE_KEY) -> str:
    status, body = await api.send({"recipient": {"phone": "+14155550100"}, "notification": {"channels": ["sms"], "body": "hi"}}, key=key)
    assert status == 202, body
    return str(body["notification_id"])


async def webhook_deliveries(api: Api, predicate: Callable[[list[WebhookDelivery]], bool], key: str = LIVE_KEY) -> list[dict[str, Any]]:
    """The tenant's webhook deliveries as ``GET /api/v1/webhook-deliveries`` shows them, once ``predicate`` holds of the stored rows."""
    tenant = "acme" if key == LIVE_KEY else "other"
    store = api.app[STORE]

    async def settled() -> None:
        while True:
            seen = store.commits  # before the read: a commit landing during it still wakes the wait
            if predicate((await store.list_webhook_deliveries(tenant)).items):
                return
            await store.wait_for_commit(seen)

    await asyncio.wait_for(settled(), 5)
    status, body = await api.get("/api/v1/webhook-deliveries", key=key)
    assert status == 200, body
    return body["items"]  # type: ignore[no-any-return]


async def send_to(api: Api, url: str) -> dict[str, Any]:
    """Send one webhook-channel message to ``url`` with the live key; its delivery once it has an attempt."""
    status, body = await api.send({"recipient": {"url": url}, "notification": {"channels": ["webhook"], "body": "hi"}})
    assert status == 202, body
    found = await api.wait_for(body["notification_id"], lambda n: bool(n["deliveries"][0]["attempts"]))
    return found["deliveries"][0]  # type: ignore[no-any-return]


def ssrf_targets(port: int) -> list[str]:
    """The issue's list: the gateway's host in every spelling, its network, the cloud's metadata services."""
    return [
        f"http://127.0.0.1:{port}/", f"http://[::1]:{port}/", f"http://localhost:{port}/", f"http://[::ffff:127.0.0.1]:{port}/",
        f"http://0.0.0.0:{port}/", "http://169.254.169.254/latest/meta-data/", "http://100.100.100.200/latest/meta-data/",
        "http://100.64.0.1/", "http://10.0.0.1/", "http://172.16.0.1/", "http://192.168.0.1/", "http://[fd00::1]/",
        "http://[fe80::1]/", "http://[2002:7f00:1::]/",
    ]


async def test_a_live_key_cannot_make_the_webhook_channel_post_inside(
    gateway: Callable[..., Awaitable[Api]], inside: tuple[Inside, int]
) -> None:
    found, port = inside
    api = await gateway()
    for url in ssrf_targets(port):
        delivery = await send_to(api, url)
        [attempt] = delivery["attempts"]
        assert delivery["status"] == "failed" and delivery["dead_reason"] == "permanent", url
        assert (attempt["error"], attempt["detail"]) == (REFUSED, {"code": "address_not_allowed"}), url
    assert found.requests == [], "nothing inside was reached"


async def test_an_open_and_a_closed_port_inside_look_the_same(
    gateway: Callable[..., Awaitable[Api]], inside: tuple[Inside, int], unused_tcp_port: int
) -> None:
    """No port scanner: the attempt says the same whether something listens there or not."""
    _found, port = inside
    api = await gateway()
    opened, closed = await send_to(api, f"http://127.0.0.1:{port}/"), await send_to(api, f"http://127.0.0.1:{unused_tcp_port}/")
    assert [(a["outcome"], a["error"], a["detail"]) for a in opened["attempts"]] == [
        (a["outcome"], a["error"], a["detail"]) for a in closed["attempts"]
    ]


async def test_with_allow_private_the_instance_reaches_loopback_and_a_closed_port_reads_generically(
    gateway: Callable[..., Awaitable[Api]], inside: tuple[Inside, int], unused_tcp_port: int
) -> None:
    found, port = inside
    api = await gateway(allow_private=True)
    delivery = await send_to(api, f"http://127.0.0.1:{port}/hook")
    assert delivery["status"] == "sent" and len(found.requests) == 1
    closed = await send_to(api, f"http://127.0.0.1:{unused_tcp_port}/hook")
    [attempt] = closed["attempts"]
    assert (attempt["outcome"], attempt["error"]) == ("transient", "could not connect to the endpoint")
    assert str(unused_tcp_port) not in str(closed["attempts"]), "no address, port or errno in what the attempt says"


async def test_event_endpoints_inside_are_refused_and_say_so_without_a_port_scan(
    gateway: Callable[..., Awaitable[Api]], inside: tuple[Inside, int], unused_tcp_port: int
) -> None:
    found, port = inside
    targets = {
        "loopback": f"http://127.0.0.1:{port}/", "localhost": f"http://localhost:{port}/", "mapped": f"http://[::ffff:127.0.0.1]:{port}/",
        "unspecified": f"http://0.0.0.0:{port}/", "closed": f"http://127.0.0.1:{unused_tcp_port}/",
        "metadata": "http://169.254.169.254/", "alibaba": "http://100.100.100.200/", "sixtofour": "http://[2002:7f00:1::]/",
    }
    api = await gateway(webhooks="webhooks:\n" + endpoints("acme", targets))
    await send_sms(api)
    items = await webhook_deliveries(api, lambda rows: len(rows) == len(targets) and all(r.status == "dead" for r in rows))
    assert {item["endpoint"] for item in items} == set(targets)
    errors = {item["last_error"] for item in items}
    assert errors == {"refused: the url is not on a public address; set allow_private on the endpoint to send there"}
    assert found.requests == []


async def test_an_event_endpoint_that_cannot_be_reached_says_so_in_the_same_words_whatever_the_cause(
    gateway: Callable[..., Awaitable[Api]], unused_tcp_port: int
) -> None:
    api = await gateway(webhooks="webhooks:\n" + endpoints("acme", {"closed": f"http://127.0.0.1:{unused_tcp_port}/"}, allow_private=True))
    await send_sms(api)
    [item] = await webhook_deliveries(api, lambda rows: len(rows) == 1 and rows[0].last_error is not None)
    assert (item["status"], item["last_error"]) == ("pending", "could not connect to the endpoint")
    _status, listed = await api.get("/api/v1/webhook-endpoints")
    assert [endpoint["last_error"] for endpoint in listed["items"]] == ["could not connect to the endpoint"]


class Endpoint:
    """A tenant's event endpoint: keeps each event; answers from ``script`` (then 204), or never while ``hang``."""

    def __init__(self, *, hang: bool = False) -> None:
        self.events: list[dict[str, Any]] = []
        self.script: list[int] = []
        self.hang = hang
        self.release = asyncio.Event()
        self._arrived = asyncio.Condition()

    async def handle(self, request: web.Request) -> web.Response:
        self.events.append(orjson.loads(await request.read()))
        async with self._arrived:
            self._arrived.notify_all()
        if self.hang:
            await self.release.wait()
        return web.Response(status=self.script.pop(0) if self.script else 204)

    async def until(self, count: int) -> None:
        """Wait, request by request, until ``count`` events have arrived (5 s at most)."""

        async def arrived() -> None:
            async with self._arrived:
                await self._arrived.wait_for(lambda: len(self.events) >= count)

        await asyncio.wait_for(arrived(), 5)


@pytest.fixture
def endpoint(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> Iterator[Callable[..., Awaitable[tuple[Endpoint, str]]]]:
    made: list[Endpoint] = []

    async def start(*, hang: bool = False) -> tuple[Endpoint, str]:
        found = Endpoint(hang=hang)
        app = web.Application()
        app.router.add_post("/events", found.handle)
        server = await aiohttp_server(app, host="127.0.0.1")
        made.append(found)
        return found, str(server.make_url("/events"))

    yield start
    for found in made:
        found.release.set()  # let a held request end, so its server closes at once


async def test_an_endpoint_that_never_answers_holds_up_no_other_tenants_events(
    gateway: Callable[..., Awaitable[Api]], endpoint: Callable[..., Awaitable[tuple[Endpoint, str]]]
) -> None:
    stuck, stuck_url = await endpoint(hang=True)
    healthy, healthy_url = await endpoint()
    policy = "webhooks:\n" + endpoints("other", {"stuck": stuck_url}, allow_private=True) + endpoints("acme", {"main": healthy_url}, allow_private=True)
    api = await gateway(webhooks=policy)
    await send_sms(api, OTHER_KEY)
    await stuck.until(1)  # in flight, and it will not answer
    first, second = await send_sms(api), await send_sms(api)
    await healthy.until(2)
    assert [event["data"]["notification_id"] for event in healthy.events] == [first, second], "in order"
    items = await webhook_deliveries(api, lambda rows: [r.status for r in rows] == ["succeeded", "succeeded"])
    assert [item["status"] for item in items] == ["succeeded", "succeeded"], "recorded as they finished, not with the stuck one"
    [held] = await webhook_deliveries(api, lambda rows: len(rows) == 1, key=OTHER_KEY)
    assert (held["status"], held["attempt_count"]) == ("pending", 1)
    assert len(stuck.events) == 1


async def test_a_failing_endpoint_backs_off_on_its_own_and_keeps_its_order(
    gateway: Callable[..., Awaitable[Api]], endpoint: Callable[..., Awaitable[tuple[Endpoint, str]]], clock: FakeClock
) -> None:
    failing, failing_url = await endpoint()
    healthy, healthy_url = await endpoint()
    failing.script = [503, 503]
    policy = "webhooks:\n" + endpoints("other", {"failing": failing_url}, allow_private=True) + endpoints("acme", {"main": healthy_url}, allow_private=True)
    api = await gateway(webhooks=policy)
    others = [await send_sms(api, OTHER_KEY) for _ in range(3)]
    await failing.until(1)
    await api.app[EVENT_WEBHOOKS].until_idle()
    assert len(failing.events) == 1, "the events behind the failed one wait for its retry"
    mine = [await send_sms(api) for _ in range(2)]
    await healthy.until(2)
    assert [event["data"]["notification_id"] for event in healthy.events] == mine
    clock.advance(5)  # the schedule's first retry: the failed event again, alone, and it fails again
    await failing.until(2)
    await api.app[EVENT_WEBHOOKS].until_idle()
    assert len(failing.events) == 2
    clock.advance(300)  # the next retry succeeds, and the rest follow in creation order
    await failing.until(5)
    assert [event["data"]["notification_id"] for event in failing.events] == [others[0], others[0], others[0], others[1], others[2]]


async def test_a_bug_signing_one_delivery_is_that_deliverys_failure_and_the_others_go_out(
    gateway: Callable[..., Awaitable[Api]], endpoint: Callable[..., Awaitable[tuple[Endpoint, str]]],
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """A secret that got past validation (or any bug in signing) must not take the batch down with it."""
    broken, broken_url = await endpoint()
    healthy, healthy_url = await endpoint()
    sign = webhook_attempts.signed_headers

    def signed_headers(endpoint: WebhookEndpointPolicy, *args: Any) -> dict[str, str]:
        if endpoint.url == broken_url:
            signing.secret_bytes("whsec_AAAAA")  # what a secret that does not decode raises
        return sign(endpoint, *args)

    monkeypatch.setattr(webhook_attempts, "signed_headers", signed_headers)
    policy = "webhooks:\n" + endpoints("other", {"broken": broken_url}, allow_private=True) + endpoints("acme", {"main": healthy_url}, allow_private=True)
    api = await gateway(webhooks=policy)
    await send_sms(api, OTHER_KEY)
    [failed] = await webhook_deliveries(api, lambda rows: len(rows) == 1 and rows[0].last_error is not None, key=OTHER_KEY)
    assert (failed["status"], failed["last_error"]) == ("pending", "internal error: SignatureError"), "retried on its schedule"
    mine = [await send_sms(api) for _ in range(2)]
    await healthy.until(2)
    assert [event["data"]["notification_id"] for event in healthy.events] == mine
    assert broken.events == []
    assert "failed unexpectedly" in caplog.text and SECRET not in caplog.text


async def test_one_tenants_dead_url_never_opens_the_shared_webhook_instance_for_another(
    aiohttp_client: Any, tmp_path: Path, clock: FakeClock, memory_provider: type[MemoryProvider],
    inside: tuple[Inside, int], unused_tcp_port: int,
) -> None:
    """The webhook channel's recipient is the url: its failures are the recipient's, so they never trip the instance's breaker."""
    found, port = inside
    policy_dir = tmp_path / "policies"
    policy_dir.mkdir()
    write_policy(policy_dir, allow_private=True, webhooks="")
    text = (policy_dir / "policy.yaml").read_text()
    (policy_dir / "policy.yaml").write_text(text.replace(
        "allow_private: true}\n", "allow_private: true}\n    circuit_breaker: {failures: 2, window: 60s, cooldown: 1h}\n"
    ))
    api = await serve(aiohttp_client, policy_dir, {"webhook": WebhookProvider, "memory": memory_provider}, clock)
    for _ in range(3):
        dead = await send_to(api, f"http://127.0.0.1:{unused_tcp_port}/gone")
        assert dead["attempts"][0]["error"] == "could not connect to the endpoint"
    status, body = await api.send({"recipient": {"url": f"http://127.0.0.1:{port}/hook"}, "notification": {"channels": ["webhook"], "body": "hi"}},
                                  key=OTHER_KEY)
    assert status == 202
    await api.wait_for(body["notification_id"], lambda n: n["status"] == "sent", key=OTHER_KEY)
    assert len(found.requests) == 1
    assert "provider.circuit_opened" not in [event.type for event in await api.app[STORE].list_events()]
