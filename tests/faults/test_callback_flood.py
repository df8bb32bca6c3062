"""A flood of callbacks nobody signed: the data directory stays within a budget, and the flooder is told to wait.

A real server on loopback over a real SQLite file, with a mailgun instance (whose signature
check needs no vendor) and the sandbox (which takes no callbacks). Refused callbacks are kept
as summaries only, the newest ``MAX_ROWS`` of them, and each source address is held to a rate.
"""

from __future__ import annotations

import hashlib
import hmac
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import Api, FakeClock

from faults.servers import gateway
from gateway.http.appkeys import SETTINGS, STORE
from plugins.sandbox import SandboxProvider

MAX_ROWS = 50
RATE, BURST = 10, 20
BODY_BYTES = 200 * 1024  # under the 256 KiB callback limit: each one is read and checked
BUDGET = 4 * 1024 * 1024  # the whole data directory, WAL included, after the flood


@pytest.fixture
async def api(aiohttp_client: Any, tmp_path: Path, clock: FakeClock) -> Api:
    return await gateway(
        aiohttp_client, tmp_path, clock, {"sandbox": SandboxProvider}, providers="sandbox: {plugin: sandbox}\n",
        inbound_refused_max_rows=MAX_ROWS, inbound_refused_rate_per_source=RATE, inbound_refused_burst_per_source=BURST,
    )


def signed(clock: FakeClock, n: int) -> bytes:
    """A Mailgun callback signed with the instance's key, as Mailgun sends one."""
    timestamp, token = str(int(clock.now())), f"token-ok-{n}"
    signature = hmac.new(b"mailgun-signing-value-0001", (timestamp + token).encode(), hashlib.sha256).hexdigest()
    event = {"event": "delivered", "id": f"ev-{n}", "timestamp": clock.now(), "message": {"headers": {"message-id": f"m-{n}"}}}
    return orjson.dumps({"signature": {"timestamp": timestamp, "token": token, "signature": signature}, "event-data": event})


def forged(clock: FakeClock, n: int) -> bytes:
    """A Mailgun-shaped callback with a wrong signature, padded to :data:`BODY_BYTES`."""
    signature = {"timestamp": str(int(clock.now())), "token": f"token-{n}", "signature": "0" * 64}
    head = orjson.dumps({"signature": signature, "event-data": {"event": "delivered"}, "pad": ""})[:-2]
    return head + b"x" * (BODY_BYTES - len(head) - 2) + b'"}'


def data_dir_bytes(api: Api) -> int:
    return sum(path.stat().st_size for path in api.app[SETTINGS].data_dir.iterdir() if path.is_file())


def rows(api: Api, table: str) -> int:
    """Rows in a table of the server's own SQLite file, read as an operator would."""
    with sqlite3.connect(f"file:{api.app[SETTINGS].database_path}?mode=ro", uri=True) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


async def post(api: Api, instance: str, body: bytes) -> tuple[int, str | None, str | None]:
    response = await api.client.post(f"/api/v1/webhooks/{instance}", data=body, headers={"Content-Type": "application/json"})
    answer = await response.json()
    return response.status, answer["error"]["code"], response.headers.get("Retry-After")


async def test_a_flood_of_refused_callbacks_stays_within_a_disk_budget(api: Api, clock: FakeClock) -> None:
    answers: Counter[tuple[int, str | None, str | None]] = Counter()
    rounds, per_round = 6, 30
    for round_number in range(rounds):
        for n in range(per_round):
            answers[await post(api, "mail", forged(clock, round_number * per_round + n))] += 1
        clock.advance(BURST / RATE)  # the bucket fills again
    refused = BURST * rounds
    assert answers == {(401, "webhook_verification_failed", None): refused, (429, "rate_limited", "1"): rounds * per_round - refused}
    assert rows(api, "refused_callbacks") == MAX_ROWS and rows(api, "inbound_requests") == 0
    size = data_dir_bytes(api)
    print(f"\n{rounds * per_round} callbacks of {BODY_BYTES} bytes, {refused} refused and checked: data directory {size} bytes")
    assert size < BUDGET, f"the data directory grew to {size} bytes"


async def test_a_refused_callback_keeps_no_body_and_the_oldest_go_first(api: Api, clock: FakeClock) -> None:
    ids = []
    for n in range(MAX_ROWS + 5):
        clock.advance(1 / RATE)
        response = await api.client.post("/api/v1/webhooks/mail", data=forged(clock, n), headers={"Content-Type": "application/json"})
        assert response.status == 401
        ids.append((await response.json())["error"]["message"].rsplit("stored as ", 1)[1].rstrip(")."))
    store = api.app[STORE]
    assert [await store.get_refused(i) for i in ids[:5]] == [None] * 5
    newest = await store.get_refused(ids[-1])
    assert newest is not None and newest.size == BODY_BYTES and newest.provider == "mail" and "signature" in newest.reason


@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_an_instance_that_takes_no_callbacks_is_a_404_and_stores_nothing(api: Api, clock: FakeClock, method: str) -> None:
    response = await api.client.request(method, "/api/v1/webhooks/sandbox", data=forged(clock, 0) if method == "POST" else None)
    assert response.status == 404 and (await response.json())["error"]["code"] == "instance_takes_no_callbacks"
    assert rows(api, "refused_callbacks") == rows(api, "inbound_requests") == 0


async def test_past_its_rate_a_source_is_told_when_to_come_back(api: Api, clock: FakeClock) -> None:
    for n in range(BURST):
        assert (await post(api, "mail", forged(clock, n)))[0] == 401
    assert await post(api, "mail", forged(clock, BURST)) == (429, "rate_limited", "1")
    assert await post(api, "nobody", b"{}") == (429, "rate_limited", "1")  # counted before the instance is looked up
    clock.advance(1 / RATE)
    assert (await post(api, "mail", forged(clock, BURST + 1)))[0] == 401


async def test_a_vendors_genuine_callbacks_are_never_held_back_however_many(api: Api, clock: FakeClock) -> None:
    """Only refusals spend a source's budget: a busy tenant's receipts, all from one vendor address, all get through."""
    for n in range(BURST * 5):
        response = await api.client.post("/api/v1/webhooks/mail", data=signed(clock, n), headers={"Content-Type": "application/json"})
        assert response.status == 200, await response.text()
    assert rows(api, "refused_callbacks") == 0
