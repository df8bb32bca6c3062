"""SIGKILL mid-dispatch: after a restart every accepted notification is delivered, none twice at once.

A real ``tidings serve`` process sends through the built-in webhook plugin to a receiver in this
test that holds every request, so sends are in flight when the process is killed. The second
process reclaims the deliveries whose leases the first one held, once those leases expire.

The two processes sign with different secrets, and the receiver refuses whatever the first
one signed, however late it reads it: a request the first process wrote just before it died
can still be read after the kill, and a real vendor would then take it (the reclaimed send
carries the same Idempotency-Key for that case). So every acceptance is the second process's,
and each delivery accepted twice would be a send the live process repeated by mistake.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import standardwebhooks
from aiohttp import web
from aiohttp.test_utils import TestServer
from conftest import LIVE_KEY, key_entry

COUNT = 20
FIRST_SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SECOND_SECRET = "whsec_" + "c2Vjb25kIHByb2Nlc3MgaW4gdGhpcyB0ZXN0"
pytestmark = pytest.mark.timeout(60)


class Receiver:
    """Webhook endpoint that holds the first process's requests, then refuses them; tracks who is in flight."""

    def __init__(self) -> None:
        self.first = standardwebhooks.Webhook(FIRST_SECRET)
        self.released = asyncio.Event()
        self.in_flight: Counter[str] = Counter()
        self.overlapping: set[str] = set()
        self.accepted: Counter[str] = Counter()
        self.arrived = asyncio.Event()

    async def hook(self, request: web.Request) -> web.Response:
        key = request.headers["Idempotency-Key"]
        body = await request.read()
        self.in_flight[key] += 1
        if self.in_flight[key] > 1:
            self.overlapping.add(key)
        self.arrived.set()
        try:
            if self.signed_by_first(body, request.headers):
                await self.released.wait()
                return web.Response(status=503)  # whatever the first process sent is refused, to be sent again
            self.accepted[key] += 1
            return web.json_response({"ok": True})
        finally:
            self.in_flight[key] -= 1

    def signed_by_first(self, body: bytes, headers: Any) -> bool:
        try:
            self.first.verify(body, {name.lower(): value for name, value in headers.items()})
        except standardwebhooks.WebhookVerificationError:
            return False
        return True


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    found = Receiver()
    app = web.Application()
    app.router.add_post("/hook", found.hook)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield found, str(server.make_url("/hook"))
    finally:
        found.released.set()
        await server.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_gateway(tmp_path: Path, port: int, secret: str) -> subprocess.Popen[bytes]:
    policies = tmp_path / "policies"
    policies.mkdir(exist_ok=True)
    (policies / "policy.yaml").write_text(
        f"tenants:\n  acme:\n    api_keys: [{key_entry(LIVE_KEY)}]\n"
        f"providers:\n  hook: {{plugin: webhook, config: {{secret: {secret}, allow_private: true}}}}\n"
        "channels:\n  webhook: {providers: [hook]}\n"
    )
    env = os.environ | {
        "TIDINGS_PORT": str(port), "TIDINGS_DATA_DIR": str(tmp_path / "data"), "TIDINGS_POLICY_DIR": str(policies),
        "TIDINGS_LOG_LEVEL": "WARNING", "TIDINGS_POLICY_RELOAD": "false",
        "TIDINGS_LEASE_SECONDS": "2", "TIDINGS_SEND_TIMEOUT_SECONDS": "1", "TIDINGS_RETRY_BASE_SECONDS": "0.2",
    }
    with open(tmp_path / f"gateway-{port}-{len(list(tmp_path.glob('gateway-*.log')))}.log", "wb") as log:
        return subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve"], env=env, stdout=subprocess.DEVNULL, stderr=log)


async def until_ready(session: aiohttp.ClientSession, base: str) -> None:
    for _ in range(300):
        try:
            async with session.get(f"{base}/readyz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.02)  # polling a process we do not control
    raise AssertionError("gateway did not become ready")


async def statuses(session: aiohttp.ClientSession, base: str) -> dict[str, str]:
    async with session.get(f"{base}/api/v1/notifications?limit=100", headers={"X-API-Key": LIVE_KEY}) as response:
        listing: dict[str, Any] = await response.json()
    return {item["notification_id"]: item["status"] for item in listing["items"]}


async def test_sigkill_mid_dispatch_loses_nothing_and_never_overlaps_attempts(tmp_path: Path, receiver: tuple[Receiver, str]) -> None:
    hook, url = receiver
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    first = start_gateway(tmp_path, port, FIRST_SECRET)
    second: subprocess.Popen[bytes] | None = None
    try:
        async with aiohttp.ClientSession() as session:
            await until_ready(session, base)
            accepted = []
            for index in range(COUNT):
                body = {"recipient": {"url": url}, "notification": {"channels": ["webhook"], "body": f"event {index}"}}
                async with session.post(f"{base}/api/v1/notifications/send", json=body, headers={"X-API-Key": LIVE_KEY}) as response:
                    assert response.status == 202
                    accepted.append((await response.json())["notification_id"])
            await asyncio.wait_for(hook.arrived.wait(), 10)
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)

            hook.released.set()
            second = start_gateway(tmp_path, port, SECOND_SECRET)
            await until_ready(session, base)
            for _ in range(1000):
                found = await statuses(session, base)
                if all(found.get(nid) == "sent" for nid in accepted):
                    break
                await asyncio.sleep(0.02)
            assert {found[nid] for nid in accepted} == {"sent"}, found
            reclaimed = 0
            for nid in accepted:
                async with session.get(f"{base}/api/v1/notifications/{nid}", headers={"X-API-Key": LIVE_KEY}) as response:
                    audit = (await response.json())["audit"]
                reclaimed += any(event["action"] == "lease_expired" for event in audit)
            assert reclaimed >= 1, "the killed process's in-flight deliveries were reclaimed after their leases expired"
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
    assert hook.overlapping == set(), "two attempts of one delivery were in flight at once"
    assert len(hook.accepted) == COUNT and set(hook.accepted.values()) == {1}
