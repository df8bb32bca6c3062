"""Shared fixtures: a real server on loopback over a real SQLite file, with policies on disk."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import textwrap
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway import OutboundMessage, PermanentDeliveryError, Provider, ProviderReport, SendReceipt, TransientDeliveryError, cli
from gateway.app import create_app
from gateway.http.appkeys import DISPATCHER, STORE
from gateway.plugins import PluginCatalog
from gateway.settings import Settings
from plugins.logsink import LogProvider
from plugins.sandbox import SandboxProvider
from plugins.webhook import WebhookProvider

LIVE_KEY = "tdk_acme_live_key_for_tests_0001"
TEST_KEY = "tdk_acme_test_key_for_tests_0002"
OTHER_KEY = "tdk_othr_live_key_for_tests_0003"
SUSPENDED_KEY = "tdk_gone_live_key_for_tests_0004"


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.value = start
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def now(self) -> float:
        return self.value

    def sleep(self, seconds: float) -> asyncio.Future[None]:
        """Wait until the test has advanced the clock ``seconds`` past the moment of this call.

        Not a coroutine: a coroutine would read the clock when it first runs, and a test that
        advanced the clock in between (``ensure_future(clock.sleep(...))`` then ``advance``)
        would leave it waiting for an advance that never comes.
        """
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] = loop.create_future()
        if seconds <= 0:
            loop.call_soon(_wake, woken)  # still a pass through the loop, as asyncio.sleep(0) is
        else:
            self._sleepers.append((self.value + seconds, woken))
        return woken

    def advance(self, seconds: float) -> None:
        self.value += seconds
        for until, woken in self._sleepers:
            if until <= self.value:
                _wake(woken)
        self._sleepers = [(until, woken) for until, woken in self._sleepers if not woken.done()]


def _wake(sleeper: asyncio.Future[None]) -> None:
    if not sleeper.done():  # a sleeper cancelled meanwhile stays cancelled
        sleeper.set_result(None)


class MemoryProvider(Provider):
    """Records every message; ``script`` maps an address to outcomes to play in order."""

    channels = frozenset({"*"})
    config_schema: Mapping[str, Any] = {"type": "object", "properties": {"token": {"type": "string", "x-secret": True}}}
    sent: list[OutboundMessage] = []
    script: dict[str, list[str]] = {}
    waiters: list[tuple[int, asyncio.Future[None]]] = []

    @classmethod
    async def wait_for_sends(cls, count: int) -> None:
        """Wait until ``count`` messages have reached the provider in all (5 s at most), woken by each send.

        A send's outcome may not be in the store yet (it may never be, when a test holds it
        back), so this waits on the provider, not on commits.
        """
        if len(cls.sent) < count:
            reached: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            cls.waiters.append((count, reached))
            await asyncio.wait_for(reached, 5)

    async def send(self, message: OutboundMessage) -> SendReceipt:
        outcome = self.script.get(message.to, ["ok"]).pop(0) if self.script.get(message.to) else "ok"
        cls = type(self)
        cls.sent.append(message)
        for count, reached in cls.waiters:
            if len(cls.sent) >= count and not reached.done():
                reached.set_result(None)
        if outcome == "transient":
            raise TransientDeliveryError("provider hiccup", retry_after=None)
        if outcome == "permanent":
            raise PermanentDeliveryError("recipient rejected", code="invalid_recipient")
        if outcome == "crash":
            raise KeyError("bug in plugin")
        return SendReceipt(provider_message_id=f"mem-{message.delivery_id}")


def key_entry(key: str, mode: str = "live") -> str:
    return f"{{prefix: {key[:12]}, sha256: {hashlib.sha256(key.encode()).hexdigest()}, mode: {mode}}}"


POLICY = f"""
tenants:
  acme:
    api_keys:
      - {key_entry(LIVE_KEY)}
      - {key_entry(TEST_KEY, "test")}
    senders:
      email: {{from: no-reply@acme.example, name: ACME, reply_to: help@acme.example}}
    templates:
      acme_only:
        channels:
          sms: {{body: "acme {{{{ code }}}}"}}
  other:
    api_keys: [{key_entry(OTHER_KEY)}]
  gone:
    status: suspended
    api_keys: [{key_entry(SUSPENDED_KEY)}]
providers:
  memory: {{plugin: memory}}
  sandbox: {{plugin: sandbox}}
channels:
  email: {{providers: [memory]}}
  sms: {{providers: [memory]}}
  whatsapp: {{providers: [memory]}}
  slack: {{providers: [memory]}}
  telegram: {{providers: [memory]}}
  voice: {{providers: [memory]}}
templates:
  otp:
    priority: high
    channels:
      sms: {{body: "Your code is {{{{ code }}}}"}}
      email: {{subject: "Code", body: "Your code is {{{{ code }}}}"}}
      whatsapp:
        provider_template: {{name: otp_code, language: en_US, parameters: ["{{{{ code }}}}"]}}
  shipped:
    channels:
      email:
        subject: "Order {{{{ order_id }}}} shipped"
        body: "Hi {{{{ name }}}}, order {{{{ order_id }}}} is on its way."
      sms: {{body: "Order {{{{ order_id }}}} shipped"}}
"""


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "policies"
    directory.mkdir()
    (directory / "policy.yaml").write_text(textwrap.dedent(POLICY))
    return directory


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def memory_provider() -> type[MemoryProvider]:
    MemoryProvider.sent = []
    MemoryProvider.script = {}
    MemoryProvider.waiters = []
    return MemoryProvider


@pytest.fixture
def plugin_catalog(memory_provider: type[MemoryProvider]) -> PluginCatalog:
    return PluginCatalog.from_classes(
        {"memory": memory_provider, "sandbox": SandboxProvider, "log": LogProvider, "webhook": WebhookProvider}
    )


@pytest.fixture
def settings(tmp_path: Path, policy_dir: Path) -> Settings:
    # No file watcher unless a test is about reloading: starting one per app costs more than the test.
    return Settings(  # type: ignore[call-arg]
        data_dir=tmp_path / "data", policy_dir=policy_dir, retry_base_seconds=60, max_attempts=3, policy_reload=False, _env_file=None
    )


@pytest.fixture
def make_app(settings: Settings, plugin_catalog: PluginCatalog, clock: FakeClock) -> Callable[..., web.Application]:
    def build(**overrides: Any) -> web.Application:
        chosen = settings.model_copy(update=overrides) if overrides else settings
        return create_app(chosen, plugins=plugin_catalog, clock=clock)

    return build


@pytest.fixture
async def app_client(aiohttp_client: Any, make_app: Callable[..., web.Application]) -> TestClient:
    return await aiohttp_client(make_app())


class Api:
    """The HTTP API as a test drives it, with helpers that wait on commits instead of sleeping."""

    def __init__(self, client: TestClient, key: str = LIVE_KEY) -> None:
        self.client = client
        self.key = key

    @property
    def app(self) -> web.Application:
        return self.client.server.app  # type: ignore[no-any-return]

    def headers(self, key: str | None = None, **extra: str) -> dict[str, str]:
        return {"X-API-Key": key or self.key, **extra}

    async def send(self, body: dict[str, Any], *, key: str | None = None, **headers: str) -> tuple[int, dict[str, Any]]:
        response = await self.client.post("/api/v1/notifications/send", json=body, headers=self.headers(key, **headers))
        return response.status, await response.json()

    async def send_bulk(self, body: dict[str, Any], *, key: str | None = None) -> tuple[int, dict[str, Any]]:
        response = await self.client.post("/api/v1/notifications/bulk", json=body, headers=self.headers(key))
        return response.status, await response.json()

    async def get(self, path: str, *, key: str | None = None) -> tuple[int, dict[str, Any]]:
        response = await self.client.get(path, headers=self.headers(key))
        return response.status, await response.json()

    async def notification(self, notification_id: str, key: str | None = None) -> dict[str, Any]:
        status, body = await self.get(f"/api/v1/notifications/{notification_id}", key=key)
        assert status == 200, body
        return body

    async def wait_for(self, notification_id: str, predicate: Callable[[dict[str, Any]], bool], key: str | None = None) -> dict[str, Any]:
        """Re-read the notification after every commit until ``predicate`` holds (5 s at most)."""
        store = self.app[STORE]

        async def poll() -> dict[str, Any]:
            while True:
                seen = store.commits
                body = await self.notification(notification_id, key)
                if predicate(body):
                    return body
                await store.wait_for_commit(seen)

        return await asyncio.wait_for(poll(), 5)

    def wake(self) -> None:
        self.app[DISPATCHER].wake()

    async def idle(self) -> None:
        """Let the dispatcher send all that is due at the clock's time and record what happened (5 s at most).

        After it, "nothing was sent" is a finding, not a guess: anything due would have gone.
        """
        await asyncio.wait_for(self.app[DISPATCHER].until_idle(), 5)


@pytest.fixture
def api(app_client: TestClient) -> Api:
    return Api(app_client)


async def serve(aiohttp_client: Any, policy_dir: Path, plugins: Mapping[str, type[Provider]], clock: FakeClock, **settings: Any) -> Api:
    """The gateway on loopback serving the policies in ``policy_dir`` with only ``plugins``; its data beside them."""
    chosen = Settings(data_dir=policy_dir.parent / "data", policy_dir=policy_dir, policy_reload=False, _env_file=None, **settings)  # type: ignore[call-arg]
    return Api(await aiohttp_client(create_app(chosen, plugins=PluginCatalog.from_classes(dict(plugins)), clock=clock)))


def sms_body(phone: str = "+14155550100", **notification: Any) -> dict[str, Any]:
    content = {"channels": ["sms"], "template_id": "otp", "data": {"code": "123456"}} | notification
    return {"recipient": {"phone": phone}, "notification": content}


@pytest.fixture
async def fresh_store(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Any]:
    from gateway.store import SqliteStore

    store = SqliteStore(tmp_path / "store.sqlite3", clock)
    await store.open()
    yield store
    await store.close()


def run_cli(*argv: str) -> tuple[int, str]:
    """Run the ``tidings`` command in this process; its exit code and what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(list(argv))
    return code, out.getvalue()


class Reports(list[ProviderReport]):
    """A plugin's ``ProviderContext.report``, keeping what it was told for the test to read."""

    def __call__(self, updates: Any) -> None:
        self.extend(updates)


@pytest.fixture
def reports() -> Reports:
    return Reports()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client for calling a plugin directly, as the gateway lends it one."""
    async with aiohttp.ClientSession() as client:
        yield client
