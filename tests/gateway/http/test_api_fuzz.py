"""schemathesis drives the live gateway from its own API description: no 5xx, and no answer the document does not describe.

The server runs on loopback with its own event loop in a thread (schemathesis calls it with a
blocking client), over a real SQLite file, with the shared test policy and a test key. Each
operation gets a bounded, derandomized set of generated requests, valid and invalid, so the
run is the same every time and stays a few seconds long. Besides schemathesis's own checks,
:func:`documented_error_code` holds every refusal to the codes the document lists for it.
"""

from __future__ import annotations

import asyncio
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from aiohttp import web
from conftest import POLICY, TEST_KEY, FakeClock, MemoryProvider
from hypothesis import HealthCheck, settings

from gateway.app import create_app
from gateway.http.openapi import describe
from gateway.http.routes import setup_routes
from gateway.plugins import PluginCatalog
from gateway.settings import Settings
from plugins.logsink import LogProvider
from plugins.sandbox import SandboxProvider
from plugins.webhook import WebhookProvider


def _document() -> dict[str, Any]:
    app = web.Application()
    setup_routes(app)
    return describe(app.router)


DOCUMENT = _document()
schema = schemathesis.openapi.from_dict(DOCUMENT, config=schemathesis.Config.from_dict({
    "generation": {"mode": "all", "max-examples": 20, "deterministic": True, "database": "none"},
    # A request the schemas allow may still be refused by policy (a channel it does not define, an
    # event naming no recipient): the document cannot know the policy, so that is no defect.
    "checks": {
        "positive_data_acceptance": {"enabled": False},
        # 413 is how the gateway refuses a body over a bound (too many recipients): a rejection too.
        "negative_data_rejection": {"expected-statuses": [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429]},
    },
}))


class LiveServer:
    """The gateway on a loopback port, served by an event loop of its own in a thread."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.runner = web.AppRunner(app)
        self.url = ""
        self.thread: threading.Thread | None = None

    def __enter__(self) -> LiveServer:
        started = threading.Event()
        self.thread = threading.Thread(target=self._serve, args=(started,), daemon=True)
        self.thread.start()
        assert started.wait(10), "the gateway did not start"
        return self

    def _serve(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        host, port = self.runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        started.set()
        self.loop.run_forever()

    def __exit__(self, *_: object) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        assert self.thread is not None
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("fuzz")
    policy_dir: Path = root / "policies"
    policy_dir.mkdir()
    (policy_dir / "policy.yaml").write_text(textwrap.dedent(POLICY))
    chosen = Settings(data_dir=root / "data", policy_dir=policy_dir, policy_reload=False, _env_file=None)  # type: ignore[call-arg]
    plugins = PluginCatalog.from_classes({"memory": MemoryProvider, "sandbox": SandboxProvider, "log": LogProvider, "webhook": WebhookProvider})
    with LiveServer(create_app(chosen, plugins=plugins, clock=FakeClock())) as server:
        yield server


def documented_error_code(_ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case) -> None:
    """A refusal's ``error.code`` is one the document lists for that operation and status."""
    if response.status_code < 400 or case.method.upper() != case.operation.method.upper():
        return  # an answer, or a method the document does not describe here (schemathesis checks its 405 itself)
    described = case.operation.definition.raw["responses"].get(str(response.status_code), {})
    listed = described.get("x-error-codes")
    code = response.json()["error"]["code"]
    assert listed is not None and code in listed, f"{case.method} {case.path}: {response.status_code} {code!r} is not among {listed}"


@schema.parametrize()
@settings(suppress_health_check=list(HealthCheck), deadline=None)
def test_the_gateway_answers_every_generated_request_as_its_document_says(case: schemathesis.Case, live_server: LiveServer) -> None:
    case.call_and_validate(base_url=live_server.url, headers={"X-API-Key": TEST_KEY}, additional_checks=[documented_error_code], timeout=10)
