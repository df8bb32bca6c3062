"""GET /metrics on a running gateway: what was sent, failed, dead-lettered, refused and reloaded, scraped and parsed as Prometheus does."""

from __future__ import annotations

import asyncio
import re
import textwrap
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, ClassVar

from aiohttp import web
from aiohttp.test_utils import TestServer
from conftest import LIVE_KEY, POLICY, TEST_KEY, Api, FakeClock, MemoryProvider, serve, sms_body
from events_support import ROUTES, processed, shipped
from prometheus_client.parser import text_string_to_metric_families

from gateway import OutboundMessage, SendReceipt, signing
from gateway.http.appkeys import EVENT_WEBHOOKS, POLICIES, POLICY_WATCHER
from gateway.http.appkeys import METRICS as METRICS_KEY
from plugins.sandbox import SandboxProvider

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(api: Api, **headers: str) -> Samples:
    """Every sample of ``/metrics``, by name and labels, parsed with prometheus-client's own parser."""
    response = await api.client.get("/metrics", headers=headers)
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    text = await response.text()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when the series does not exist (yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def policy(tmp_path: Path, extra: str = "", *, memory: str = "{plugin: memory}") -> Path:
    directory = tmp_path / "policies"
    directory.mkdir(parents=True, exist_ok=True)
    text = textwrap.dedent(POLICY).replace("  memory: {plugin: memory}", f"  memory: {memory}")
    (directory / "policy.yaml").write_text(text + textwrap.dedent(extra))
    return directory


async def test_a_send_is_counted_from_its_request_to_its_attempt_with_bounded_labels(api: Api) -> None:
    status, answer = await api.send(sms_body())
    assert status == 202
    await api.idle()
    samples = await scrape(api)
    send_route = {"method": "POST", "route": "/api/v1/notifications/send", "status": "202"}
    assert value(samples, "tidings_http_requests_total", **send_route) == 1
    assert value(samples, "tidings_http_request_duration_seconds_count", route="/api/v1/notifications/send") == 1
    assert value(samples, "tidings_notifications_accepted_total", tenant="acme", mode="live") == 1
    assert value(samples, "tidings_delivery_attempts_total", channel="sms", provider="memory", outcome="sent") == 1
    assert value(samples, "tidings_delivery_attempt_duration_seconds_count", channel="sms", provider="memory") == 1
    assert value(samples, "tidings_queue_depth", channel="sms") == 0
    assert value(samples, "tidings_provider_circuit", instance="memory", tidings_provider_circuit="closed") == 1
    assert value(samples, "tidings_policy_info", version=api.app[POLICIES].current.version) == 1
    read = await api.client.get(f"/api/v1/notifications/{answer['notification_id']}", headers=api.headers())
    assert read.status == 200
    samples = await scrape(api)
    assert value(samples, "tidings_http_requests_total", method="GET", route="/api/v1/notifications/{notification_id}", status="200") == 1
    labels = {value for _name, pairs in samples for _label, value in pairs}
    assert not [label for label in labels if re.match(r"(ntf|dlv|key|tdk)_", label) or "+1415" in label], "no id, key or recipient as a label"


async def test_a_request_no_route_matches_is_counted_under_one_label_whatever_its_path_and_method(api: Api) -> None:
    for path in ("/nope/1", "/nope/2", "/api/v1/notifications/ntf_x/nothing"):
        assert (await api.client.get(path)).status == 404
    traced = await api.client.request("TRACE", "/nope")
    samples = await scrape(api)
    assert value(samples, "tidings_http_requests_total", method="GET", route="unmatched", status="404") == 3
    assert value(samples, "tidings_http_requests_total", method="other", route="unmatched", status=str(traced.status)) == 1


async def test_failures_a_dead_letter_and_an_opened_circuit_are_counted(
    aiohttp_client: Any, tmp_path: Path, clock: FakeClock, memory_provider: type[MemoryProvider]
) -> None:
    directory = policy(tmp_path, memory="{plugin: memory, circuit_breaker: {failures: 1, window: 60s, cooldown: 30s}}")
    api = await serve(aiohttp_client, directory, {"memory": memory_provider, "sandbox": SandboxProvider}, clock, max_attempts=3)
    memory_provider.script = {"+14155550101": ["permanent"], "+14155550102": ["transient"]}
    await api.send(sms_body("+14155550101"))
    await api.idle()
    await api.send(sms_body("+14155550102"))
    await api.idle()
    samples = await scrape(api)
    assert value(samples, "tidings_delivery_attempts_total", channel="sms", provider="memory", outcome="permanent") == 1
    assert value(samples, "tidings_delivery_attempts_total", channel="sms", provider="memory", outcome="transient") == 1
    assert value(samples, "tidings_dead_letters_total", channel="sms", reason="permanent") == 1
    assert value(samples, "tidings_provider_circuit", instance="memory", tidings_provider_circuit="open") == 1
    assert value(samples, "tidings_provider_circuit", instance="memory", tidings_provider_circuit="closed") == 0
    assert value(samples, "tidings_provider_circuit", instance="sandbox", tidings_provider_circuit="closed") == 1
    assert value(samples, "tidings_queue_depth", channel="sms") == 1, "the transient failure waits for its retry"
    assert value(samples, "tidings_queue_oldest_due_seconds", channel="sms") == 0, "its retry is not due yet"


async def test_retries_exhausted_and_expired_dead_letters_are_counted_by_reason(
    aiohttp_client: Any, tmp_path: Path, clock: FakeClock, memory_provider: type[MemoryProvider]
) -> None:
    api = await serve(aiohttp_client, policy(tmp_path), {"memory": memory_provider, "sandbox": SandboxProvider}, clock, max_attempts=1)
    memory_provider.script = {"+14155550101": ["transient"]}
    await api.send(sms_body("+14155550101"))
    await api.idle()
    await api.send(sms_body("+14155550100", send_at="2027-01-15T08:00:00Z", expires_at="2027-01-15T09:00:00Z"))
    clock.advance(400 * 86400)  # well past its expiry: the claim dead-letters it instead of sending
    await api.idle()
    samples = await scrape(api)
    assert value(samples, "tidings_dead_letters_total", channel="sms", reason="retries_exhausted") == 1
    assert value(samples, "tidings_dead_letters_total", channel="sms", reason="expired") == 1


class HeldProvider(MemoryProvider):
    """Takes a send and holds it until the test lets it go."""

    release: ClassVar[asyncio.Event]
    holding: ClassVar[asyncio.Event]

    async def send(self, message: OutboundMessage) -> SendReceipt:
        type(self).holding.set()
        await type(self).release.wait()
        return SendReceipt(provider_message_id=f"held-{message.delivery_id}")


async def test_queue_depth_and_the_oldest_due_age_are_read_from_the_store_at_scrape_time(
    aiohttp_client: Any, tmp_path: Path, clock: FakeClock
) -> None:
    HeldProvider.release, HeldProvider.holding = asyncio.Event(), asyncio.Event()
    api = await serve(aiohttp_client, policy(tmp_path), {"memory": HeldProvider, "sandbox": SandboxProvider}, clock)
    await api.send(sms_body())
    await asyncio.wait_for(HeldProvider.holding.wait(), 5)
    await api.send(sms_body(send_at="2027-01-20T00:00:00Z"))  # queued, not due
    clock.advance(30)
    samples = await scrape(api)
    assert value(samples, "tidings_queue_depth", channel="sms") == 2
    assert value(samples, "tidings_queue_oldest_due_seconds", channel="sms") == 30, "the one in flight has waited 30 s since it was due"
    HeldProvider.release.set()
    await api.idle()
    samples = await scrape(api)
    assert value(samples, "tidings_queue_depth", channel="sms") == 1
    assert value(samples, "tidings_queue_oldest_due_seconds", channel="sms") == 0


async def test_policy_reloads_are_counted_and_the_version_in_force_is_shown(api: Api, policy_dir: Path) -> None:
    watcher = api.app[POLICY_WATCHER]
    first = (await scrape(api))
    [(_, version_labels)] = [key for key in first if key[0] == "tidings_policy_info"]
    (policy_dir / "broken.yaml").write_text("templates:\n  nope: [\n")
    assert await watcher.reload() is False
    samples = await scrape(api)
    assert value(samples, "tidings_policy_reloads_total", result="failed") == 1
    assert value(samples, "tidings_policy_info", **dict(version_labels)) == 1, "the last good set is still the one in force"
    (policy_dir / "broken.yaml").write_text("templates:\n  hello:\n    channels:\n      sms: {body: hi}\n")
    assert await watcher.reload() is True
    samples = await scrape(api)
    assert value(samples, "tidings_policy_reloads_total", result="ok") == 1
    [(_, now_labels)] = [key for key in samples if key[0] == "tidings_policy_info"]
    assert now_labels != version_labels


async def test_quota_refusals_are_counted_by_tenant_and_code(
    aiohttp_client: Any, tmp_path: Path, clock: FakeClock, memory_provider: type[MemoryProvider]
) -> None:
    directory = policy(tmp_path, "quotas:\n  acme: {burst_per_minute: 1, sustained_per_minute: 1}\n")
    api = await serve(aiohttp_client, directory, {"memory": memory_provider, "sandbox": SandboxProvider}, clock)
    assert (await api.send(sms_body()))[0] == 202
    status, error = await api.send(sms_body())
    assert (status, error["error"]["code"]) == (429, "rate_limited")
    samples = await scrape(api)
    assert value(samples, "tidings_quota_rejections_total", tenant="acme", code="rate_limited") == 1
    assert value(samples, "tidings_http_requests_total", method="POST", route="/api/v1/notifications/send", status="429") == 1
    assert value(samples, "tidings_notifications_accepted_total", tenant="acme", mode="live") == 1


async def test_business_events_accepted_and_processed_are_counted(
    aiohttp_client: Any, tmp_path: Path, clock: FakeClock, memory_provider: type[MemoryProvider]
) -> None:
    directory = policy(tmp_path)
    (directory / "routes.yaml").write_text(ROUTES)
    api = await serve(aiohttp_client, directory, {"memory": memory_provider, "sandbox": SandboxProvider}, clock)
    await processed(api, shipped("evt-1"))
    await processed(api, shipped("evt-2"), key=TEST_KEY)
    samples = await scrape(api)
    assert value(samples, "tidings_business_events_accepted_total", tenant="acme", mode="live") == 1
    assert value(samples, "tidings_business_events_accepted_total", tenant="acme", mode="test") == 1
    assert value(samples, "tidings_business_events_processed_total", tenant="acme", mode="live") == 1
    assert value(samples, "tidings_notifications_accepted_total", tenant="acme", mode="live") == 0, "an event's messages are not API sends"


async def test_event_webhook_outcomes_are_counted(
    aiohttp_client: Any, aiohttp_server: Callable[..., Awaitable[TestServer]], tmp_path: Path, clock: FakeClock,
    memory_provider: type[MemoryProvider],
) -> None:
    answers = iter([500] + [204] * 100)

    async def hook(_request: web.Request) -> web.Response:
        return web.Response(status=next(answers))

    receiver = web.Application()
    receiver.router.add_post("/hook", hook)
    url = (await aiohttp_server(receiver)).make_url("/hook")
    extra = f"""
    webhooks:
      acme:
        main: {{url: "{url}", events: ["message.sent"], secret: {signing.new_secret()}, allow_private: true}}
    """
    api = await serve(aiohttp_client, policy(tmp_path, extra), {"memory": memory_provider, "sandbox": SandboxProvider}, clock)
    await api.send(sms_body())
    await api.idle()
    webhooks = api.app[EVENT_WEBHOOKS]
    await asyncio.wait_for(webhooks.until_idle(), 5)
    clock.advance(3600)
    webhooks.wake()
    await asyncio.wait_for(webhooks.until_idle(), 5)
    samples = await scrape(api)
    assert value(samples, "tidings_event_webhook_attempts_total", tenant="acme", outcome="pending") == 1, "the 500 is retried"
    assert value(samples, "tidings_event_webhook_attempts_total", tenant="acme", outcome="succeeded") == 1


async def test_metrics_are_open_without_a_token_and_need_it_as_a_bearer_when_one_is_set(
    aiohttp_client: Any, tmp_path: Path, clock: FakeClock, memory_provider: type[MemoryProvider]
) -> None:
    api = await serve(
        aiohttp_client, policy(tmp_path), {"memory": memory_provider, "sandbox": SandboxProvider}, clock, metrics_token="scrape-secret-1"
    )
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": LIVE_KEY}, {"Authorization": "Basic scrape-secret-1"}):
        response = await api.client.get("/metrics", headers=headers)
        body = await response.json()
        assert (response.status, body["error"]["code"]) == (401, "invalid_metrics_token"), headers
        assert "scrape-secret-1" not in str(body)
    samples = await scrape(api, Authorization="Bearer scrape-secret-1")
    assert value(samples, "tidings_build_info", version=next(dict(k[1])["version"] for k in samples if k[0] == "tidings_build_info")) == 1


async def test_two_apps_in_one_process_count_apart(api: Api, aiohttp_client: Any, tmp_path: Path, clock: FakeClock) -> None:
    other = await serve(aiohttp_client, policy(tmp_path / "other"), {"memory": MemoryProvider, "sandbox": SandboxProvider}, clock)
    await api.send(sms_body())
    assert api.app[METRICS_KEY] is not other.app[METRICS_KEY]
    samples = await scrape(other)
    assert value(samples, "tidings_notifications_accepted_total", tenant="acme", mode="live") == 0
