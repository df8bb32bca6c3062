"""SIGKILL while business events are processed in batches: after a restart every accepted event is processed once.

A real ``tidings serve`` takes a stream of events, each fanning out to twenty recipients, so
processing lags accepting and batches are being built and committed when the process is
killed. The second process claims what the first left pending; since a batch's notifications
commit with its events' processed marks, no event is processed twice or half.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import LIVE_KEY, key_entry

from tests.faults.test_kill_mid_load import free_port, until_ready

EVENTS = 400
RECIPIENTS = 20
KILL_AFTER = 200  # accepted events
CLIENTS = 16
pytestmark = pytest.mark.timeout(90)


def start_gateway(tmp_path: Path, port: int) -> subprocess.Popen[bytes]:
    policies = tmp_path / "policies"
    policies.mkdir(exist_ok=True)
    (policies / "policy.yaml").write_text(
        f"tenants:\n  acme:\n    api_keys: [{key_entry(LIVE_KEY)}]\n"
        "providers:\n  sandbox: {plugin: sandbox, config: {delivery_delay_seconds: 0}}\n"
        "channels:\n  sms: {providers: [sandbox]}\n"
        "templates:\n  shipped:\n    channels:\n      sms: {body: 'Order {{ order_id }} shipped'}\n"
        "routes:\n  order-shipped:\n    match: {event: order.shipped}\n    notify: {template: shipped, channels: [sms]}\n"
    )
    env = os.environ | {
        "TIDINGS_PORT": str(port), "TIDINGS_DATA_DIR": str(tmp_path / "data"), "TIDINGS_POLICY_DIR": str(policies),
        "TIDINGS_LOG_LEVEL": "WARNING", "TIDINGS_POLICY_RELOAD": "false",
    }
    with open(tmp_path / f"gateway-{len(list(tmp_path.glob('gateway-*.log')))}.log", "wb") as log:
        return subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve"], env=env, stdout=subprocess.DEVNULL, stderr=log)


def event(number: int) -> dict[str, Any]:
    recipients = [{"phone": f"+1415555{number % 100:02d}{r:02d}"} for r in range(RECIPIENTS)]
    return {"event_id": f"order-{number}", "event_name": "order.shipped", "recipients": recipients, "data": {"order_id": str(number)}}


def counts(database: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as conn:
        return conn.execute(sql).fetchall()


async def post_until_killed(session: aiohttp.ClientSession, base: str, process: subprocess.Popen[bytes]) -> set[str]:
    """Post the events from several clients; kill the process once KILL_AFTER are accepted. The ids answered 202."""
    accepted: set[str] = set()
    numbers = iter(range(EVENTS))

    async def client() -> None:
        for number in numbers:
            body = event(number)
            try:
                async with session.post(f"{base}/api/v1/events", json=body, headers={"X-API-Key": LIVE_KEY}) as response:
                    if response.status == 202:
                        accepted.add(body["event_id"])
            except aiohttp.ClientError:
                return  # the process is gone
            if len(accepted) >= KILL_AFTER and process.poll() is None:
                process.send_signal(signal.SIGKILL)

    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    return accepted


async def test_sigkill_mid_processing_loses_no_event_and_processes_none_twice(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    database = tmp_path / "data" / "tidings.sqlite3"
    first = start_gateway(tmp_path, port)
    second = None
    try:
        async with aiohttp.ClientSession() as session:
            await until_ready(session, base)
            accepted = await post_until_killed(session, base, first)
            first.wait(timeout=10)
            [(kept, pending)] = counts(database, "SELECT count(*), count(*) - count(processed_at) FROM business_events")
            assert kept >= len(accepted) >= KILL_AFTER
            assert pending > 0, "the kill came after processing had caught up: nothing was left to resume"

            second = start_gateway(tmp_path, port)
            await until_ready(session, base)
            for _ in range(1500):
                if counts(database, "SELECT count(*) FROM business_events WHERE processed_at IS NULL") == [(0,)]:
                    break
                await asyncio.sleep(0.02)  # polling a process we do not control
            for event_id in sorted(accepted)[:20]:
                async with session.get(f"{base}/api/v1/events/{event_id}", headers={"X-API-Key": LIVE_KEY}) as response:
                    shown = await response.json()
                assert shown["status"] == "processed"
                assert [o["result"] for o in shown["outcomes"]] == ["notified"] * RECIPIENTS
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
    assert counts(database, "SELECT count(*) FROM business_events WHERE processed_at IS NULL") == [(0,)]
    assert counts(database, "SELECT count(*) FROM business_events") == [(kept,)], "every event kept before the kill is still there"
    assert counts(database, "SELECT count(*) FROM notifications WHERE event_id IS NOT NULL") == [(kept * RECIPIENTS,)]
    per_event = "SELECT event_id, count(*) FROM notifications WHERE event_id IS NOT NULL GROUP BY event_id HAVING count(*) != ?"
    assert counts(database, per_event.replace("?", str(RECIPIENTS))) == [], "an event made its notifications twice, or half of them"
    outcomes = "SELECT event_seq FROM event_outcomes GROUP BY event_seq HAVING count(*) != ?"
    assert counts(database, outcomes.replace("?", str(RECIPIENTS))) == []
