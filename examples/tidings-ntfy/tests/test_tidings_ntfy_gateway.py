"""End to end: the gateway, finding this plugin by its entry point, sends over the ``ntfy`` channel.

A real Tidings app on loopback over real SQLite, a policy directory on disk (the token through
``{$file: …}``, never in clear), requests through the HTTP API, and the fake ntfy server at the
other end. Time is a hand-moved clock: nothing sleeps.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from gateway.app import create_app
from gateway.clock import isoformat
from gateway.http.appkeys import DISPATCHER, STORE
from gateway.plugins import PluginCatalog
from gateway.policy.loading import load_policies
from gateway.policy.secret_values import SecretResolver
from gateway.settings import Settings
from tidings_ntfy.testing import TOKEN, TOPIC, FakeNtfy

API_KEY = "tdk_acme_live_key_for_ntfy_0001"
README = Path(__file__).resolve().parents[1] / "README.md"


class HandClock:
    """The gateway's clock, moved by the test (retry delays pass without waiting)."""

    def __init__(self) -> None:
        self.value = 1_800_000_000.0
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def now(self) -> float:
        return self.value

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.value + seconds, woken))
        await woken

    def advance(self, seconds: float) -> None:
        self.value += seconds
        for until, woken in self._sleepers:
            if until <= self.value and not woken.done():
                woken.set_result(None)
        self._sleepers = [(until, woken) for until, woken in self._sleepers if not woken.done()]


def policy(server: str) -> str:
    digest = hashlib.sha256(API_KEY.encode()).hexdigest()
    return textwrap.dedent(
        f"""
        tenants:
          acme:
            api_keys:
              - {{prefix: {API_KEY[:12]}, sha256: {digest}, mode: live}}
        providers:
          ntfy-main:
            plugin: ntfy
            config:
              server: {server}
              token: {{$file: secrets/ntfy-token}}
              priority: high
        channels:
          ntfy: {{providers: [ntfy-main]}}
        templates:
          disk_full:
            channels:
              ntfy:
                subject: "Disk full on {{{{ host }}}}"
                body: "{{{{ host }}}} is at {{{{ pct }}}}%"
        """
    )


class Gateway:
    """The HTTP API as these tests use it."""

    def __init__(self, client: Any, clock: HandClock) -> None:
        self.client = client
        self.clock = clock

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        response = await self.client.request(method, path, json=body, headers={"X-API-Key": API_KEY})
        return response.status, await response.json()

    async def wait_for(self, notification_id: str, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """Re-read the notification after each commit of the gateway's store until ``done`` (5 s at most)."""
        store = self.client.server.app[STORE]

        async def poll() -> dict[str, Any]:
            while True:
                seen = store.commits
                status, body = await self.call("GET", f"/api/v1/notifications/{notification_id}")
                assert status == 200, body
                if done(body):
                    return body
                await store.wait_for_commit(seen)

        return await asyncio.wait_for(poll(), 5)


@pytest.fixture
async def ntfy() -> AsyncIterator[FakeNtfy]:
    async with FakeNtfy().serving() as fake:
        yield fake


@pytest.fixture
async def gateway(aiohttp_client: Any, tmp_path: Path, ntfy: FakeNtfy) -> Gateway:
    policies = tmp_path / "policies"
    (policies / "secrets").mkdir(parents=True)
    (policies / "secrets" / "ntfy-token").write_text(TOKEN + "\n")
    (policies / "policy.yaml").write_text(policy(ntfy.url))
    options: dict[str, Any] = {"data_dir": tmp_path / "data", "policy_dir": policies, "policy_reload": False, "_env_file": None}
    settings = Settings(**options)
    clock = HandClock()
    # discover(): the plugin is found the way a deployment finds it, by its installed entry point.
    app = create_app(settings, plugins=PluginCatalog.discover(), clock=clock)
    return Gateway(await aiohttp_client(app), clock)


def send_body(**notification: Any) -> dict[str, Any]:
    content = {"channels": ["ntfy"], "template_id": "disk_full", "data": {"host": "db-1", "pct": 91}} | notification
    return {"recipient": {"ntfy_topic": TOPIC}, "notification": content}


async def test_a_send_through_the_api_reaches_ntfy_as_a_titled_push(gateway: Gateway, ntfy: FakeNtfy) -> None:
    status, accepted = await gateway.call("POST", "/api/v1/notifications/send", send_body())
    assert status == 202, accepted
    done = await gateway.wait_for(accepted["notification_id"], lambda n: n["status"] == "sent")
    delivery = done["deliveries"][0]
    [published] = ntfy.messages
    assert (delivery["channel"], delivery["address"], delivery["provider"]) == ("ntfy", TOPIC, "ntfy-main")
    assert delivery["provider_message_id"] == published["id"]
    assert published == {
        "topic": TOPIC, "title": "Disk full on db-1", "message": "db-1 is at 91%", "priority": 4,
        "sequence_id": delivery["delivery_id"], "id": published["id"], "user": "tidings-bot",
    }


async def test_a_raw_message_with_a_unicode_subject_and_a_per_message_priority(gateway: Gateway, ntfy: FakeNtfy) -> None:
    body = {
        "recipient": {"ntfy_topic": TOPIC},
        "notification": {"channels": ["ntfy"], "subject": "Sauvegarde terminée ✅", "body": "Nightly backup done"},
        "metadata": {"ntfy_priority": "low"},
    }
    status, accepted = await gateway.call("POST", "/api/v1/notifications/send", body)
    assert status == 202, accepted
    await gateway.wait_for(accepted["notification_id"], lambda n: n["status"] == "sent")
    assert (ntfy.messages[0]["title"], ntfy.messages[0]["priority"]) == ("Sauvegarde terminée ✅", 2)


async def test_a_rate_limited_publish_is_retried_after_retry_after_and_shown_once(gateway: Gateway, ntfy: FakeNtfy) -> None:
    ntfy.fail_next("429", retry_after=120)
    _status, accepted = await gateway.call("POST", "/api/v1/notifications/send", send_body())
    retrying = await gateway.wait_for(accepted["notification_id"], lambda n: bool(n["deliveries"][0]["last_error"]))
    assert retrying["deliveries"][0]["attempts"][0]["outcome"] == "transient"
    assert "too many requests" in retrying["deliveries"][0]["last_error"]
    assert retrying["deliveries"][0]["next_attempt_at"] == isoformat(gateway.clock.now() + 120), "ntfy's Retry-After wins"
    assert ntfy.messages == []

    gateway.clock.advance(120)
    gateway.client.server.app[DISPATCHER].wake()
    done = await gateway.wait_for(accepted["notification_id"], lambda n: n["status"] == "sent")
    assert [attempt["outcome"] for attempt in done["deliveries"][0]["attempts"]] == ["transient", "sent"]
    publishes = [path for method, path, _headers in ntfy.requests if method == "POST"]
    assert publishes == ["/", "/"] and [m["sequence_id"] for m in ntfy.messages] == [done["deliveries"][0]["delivery_id"]]


async def test_a_disallowed_topic_fails_for_good(gateway: Gateway, ntfy: FakeNtfy) -> None:
    ntfy.fail_next("reject_recipient")
    _status, accepted = await gateway.call("POST", "/api/v1/notifications/send", send_body())
    done = await gateway.wait_for(accepted["notification_id"], lambda n: n["status"] == "failed")
    delivery = done["deliveries"][0]
    assert delivery["dead_reason"] == "permanent" and delivery["dead_letter"]["reason"] == "permanent"
    assert "topic name is disallowed" in delivery["last_error"]
    assert [attempt["outcome"] for attempt in delivery["attempts"]] == ["permanent"]


async def test_the_api_validates_and_describes_the_ntfy_channel(gateway: Gateway, ntfy: FakeNtfy) -> None:
    status, refused = await gateway.call("POST", "/api/v1/notifications/send", send_body() | {"recipient": {"email": "ops@example.com"}})
    assert status == 422
    assert refused["error"]["details"][0]["message"] == "channel 'ntfy' needs recipient ntfy_topic"

    status, capabilities = await gateway.call("GET", "/api/v1/channels/capabilities")
    assert status == 200
    [entry] = [entry for entry in capabilities["channels"] if entry["channel"] == "ntfy"]
    assert entry["recipient_fields"] == ["ntfy_topic"] and entry["subject"] is True
    assert entry["providers"] == ["ntfy-main"] and entry["available"] is True
    assert ntfy.requests == []


def test_the_readme_policy_snippet_loads_with_the_installed_plugin(tmp_path: Path) -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(), flags=re.DOTALL)
    [snippet] = [block for block in blocks if "plugin: ntfy" in block]
    (tmp_path / "ntfy.yaml").write_text(snippet)
    loaded = load_policies(tmp_path, PluginCatalog.discover(), secrets=SecretResolver(environ={"NTFY_TOKEN": TOKEN}))
    assert {spec.name for spec in loaded.channels} >= {"ntfy"}
    assert loaded.providers_for("acme", "ntfy")
    assert YAML(typ="safe").load(snippet)["providers"]
