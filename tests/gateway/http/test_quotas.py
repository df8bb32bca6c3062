"""Quotas through the API: messages counted per tenant and key mode, 429 with RateLimit headers, kept across a restart.

acme's quota in these tests: a bucket of 3 messages refilled at 1 a minute (``"rate";q=3;w=180``),
and 10 messages per UTC day with a warning at half of them. The FakeClock starts at 08:00 UTC,
16 hours (57,600 s) before the day ends.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestServer
from conftest import LIVE_KEY, OTHER_KEY, TEST_KEY, Api, FakeClock, MemoryProvider, run_cli, sms_body
from faults.servers import gateway

from gateway.http.appkeys import EVENT_WEBHOOKS

SEND = "/api/v1/notifications/send"
BULK = "/api/v1/notifications/bulk"
QUOTA = "quotas:\n  acme: {burst_per_minute: 3, sustained_per_minute: 1, daily: 10, warn_at: 0.5}\n"
TO_MIDNIGHT = 57_600
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture
def quota_dir(policy_dir: Path) -> Path:
    (policy_dir / "quotas.yaml").write_text(QUOTA)
    return policy_dir


@pytest.fixture
async def api(aiohttp_client: Any, make_app: Callable[..., web.Application], quota_dir: Path) -> Api:
    return Api(await aiohttp_client(make_app()))


async def post(api: Api, path: str, body: dict[str, Any], key: str = LIVE_KEY, **headers: str) -> ClientResponse:
    response = await api.client.post(path, json=body, headers=api.headers(key, **headers))
    await response.read()
    return response


def limits(response: ClientResponse) -> dict[str, str]:
    return {name: value for name, value in response.headers.items() if name.lower().startswith("ratelimit") or name == "Retry-After"}


def bulk(*phones: str) -> dict[str, Any]:
    return {"channels": ["sms"], "template_id": "otp", "data": {"code": "1"}, "recipients": [{"phone": phone} for phone in phones]}


async def listed(api: Api, key: str = LIVE_KEY) -> int:
    status, page = await api.get("/api/v1/notifications?limit=100", key=key)
    assert status == 200, page
    return len(page["items"])


async def test_every_answer_under_the_limit_carries_the_ratelimit_headers(api: Api) -> None:
    accepted = await post(api, SEND, sms_body())
    assert accepted.status == 202
    assert limits(accepted) == {
        "RateLimit-Policy": '"rate";q=3;w=180, "daily";q=10;w=86400',
        "RateLimit": f'"rate";r=2;t=60, "daily";r=9;t={TO_MIDNIGHT}',
        "RateLimit-Limit": "3", "RateLimit-Remaining": "2", "RateLimit-Reset": "60",
    }
    refused = await post(api, SEND, sms_body(phone="not a phone"))
    assert refused.status == 422
    assert limits(refused)["RateLimit"] == f'"rate";r=2;t=60, "daily";r=9;t={TO_MIDNIGHT}', "a refused request spends nothing"


async def test_past_the_burst_a_send_is_429_rate_limited_and_nothing_is_written(api: Api, clock: FakeClock) -> None:
    for _ in range(3):
        assert (await post(api, SEND, sms_body())).status == 202
    refused = await post(api, SEND, sms_body())
    assert refused.status == 429
    assert (await refused.json())["error"]["code"] == "rate_limited"
    assert limits(refused) == {
        "RateLimit-Policy": '"rate";q=3;w=180, "daily";q=10;w=86400',
        "RateLimit": f'"rate";r=0;t=180, "daily";r=7;t={TO_MIDNIGHT}',
        "RateLimit-Limit": "3", "RateLimit-Remaining": "0", "RateLimit-Reset": "180", "Retry-After": "60",
    }
    assert await listed(api) == 3
    clock.advance(59)
    assert (await post(api, SEND, sms_body())).status == 429, "one message a minute comes back, not sooner"
    clock.advance(1)
    assert (await post(api, SEND, sms_body())).status == 202


async def test_past_the_daily_cap_a_send_is_429_until_the_next_utc_day(api: Api, clock: FakeClock) -> None:
    for _ in range(10):
        assert (await post(api, SEND, sms_body())).status == 202
        clock.advance(60)
    refused = await post(api, SEND, sms_body())
    assert refused.status == 429
    assert (await refused.json())["error"]["code"] == "daily_quota_exceeded"
    to_midnight = TO_MIDNIGHT - 600
    assert limits(refused)["Retry-After"] == str(to_midnight)
    assert (limits(refused)["RateLimit-Limit"], limits(refused)["RateLimit-Remaining"]) == ("10", "0"), "the limit that refused is the one named"
    assert await listed(api) == 10
    clock.advance(to_midnight)
    accepted = await post(api, SEND, sms_body())
    assert accepted.status == 202
    assert limits(accepted)["RateLimit"] == '"rate";r=2;t=60, "daily";r=9;t=86400'


async def test_a_bulk_counts_its_accepted_rows_and_is_refused_whole_when_they_do_not_fit(api: Api) -> None:
    first = await post(api, BULK, bulk("+14155550100", "nope"))
    assert first.status == 202 and (await first.json())["accepted"] == 1
    assert limits(first)["RateLimit-Remaining"] == "2", "the row refused for validation does not count"
    whole = await post(api, BULK, bulk("+14155550101", "+14155550102", "+14155550103"))
    assert whole.status == 429
    assert (await whole.json())["error"]["code"] == "rate_limited" and limits(whole)["Retry-After"] == "60"
    assert await listed(api) == 1, "none of the rows was accepted"
    fits = await post(api, BULK, bulk("+14155550101", "+14155550102"))
    assert fits.status == 202 and limits(fits)["RateLimit-Remaining"] == "0"


async def test_a_bulk_larger_than_the_quota_can_ever_hold_is_413_not_429(api: Api) -> None:
    too_big = await post(api, BULK, bulk(*(f"+1415555{n:04d}" for n in range(4))))
    assert too_big.status == 413
    body = await too_big.json()
    assert body["error"]["code"] == "larger_than_quota" and "split it" in body["error"]["message"]
    assert "Retry-After" not in too_big.headers and limits(too_big)["RateLimit-Remaining"] == "3"


async def test_an_idempotent_replay_is_not_counted_again(api: Api) -> None:
    first = await post(api, SEND, sms_body(), **{"Idempotency-Key": "order-1"})
    again = await post(api, SEND, sms_body(), **{"Idempotency-Key": "order-1"})
    assert again.status == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert limits(again)["RateLimit"] == limits(first)["RateLimit"] == f'"rate";r=2;t=60, "daily";r=9;t={TO_MIDNIGHT}'


async def test_two_requests_racing_with_one_idempotency_key_spend_one_message(api: Api) -> None:
    """Both may pass the replay check before either commits; the one the store answers as a replay gives its message back."""
    answers = await asyncio.gather(*(post(api, SEND, sms_body(), **{"Idempotency-Key": "race"}) for _ in range(2)))
    assert sorted(response.status for response in answers) == [202, 202]
    after = await post(api, SEND, sms_body(phone="not a phone"))
    assert limits(after)["RateLimit"] == f'"rate";r=2;t=60, "daily";r=9;t={TO_MIDNIGHT}'
    assert await listed(api) == 1


async def test_test_and_live_keys_each_have_a_budget_of_the_same_size(api: Api) -> None:
    for _ in range(3):
        assert (await post(api, SEND, sms_body(), key=TEST_KEY)).status == 202
    assert (await post(api, SEND, sms_body(), key=TEST_KEY)).status == 429, "an integration meets its 429 with a test key"
    live = await post(api, SEND, sms_body())
    assert live.status == 202 and limits(live)["RateLimit-Remaining"] == "2", "a test flood leaves the live budget alone"
    assert await listed(api, TEST_KEY) == 3


async def test_a_tenant_without_quotas_gets_no_headers_and_no_limit(api: Api) -> None:
    for _ in range(5):
        response = await post(api, SEND, sms_body(), key=OTHER_KEY)
        assert response.status == 202
        assert limits(response) == {}


async def test_quota_state_survives_a_restart(aiohttp_client: Any, make_app: Callable[..., web.Application], quota_dir: Path, clock: FakeClock) -> None:
    first = Api(await aiohttp_client(make_app()))
    for _ in range(2):
        assert (await post(first, SEND, sms_body())).status == 202
    await first.client.close()
    clock.advance(30)
    second = Api(await aiohttp_client(make_app()))
    response = await post(second, SEND, sms_body())
    assert response.status == 202
    # 3 - 2 + half a message refilled in 30 s - 1: half a message left, full again in 150 s; 3 of the day's 10 spent.
    assert limits(response)["RateLimit"] == f'"rate";r=0;t=150, "daily";r=7;t={TO_MIDNIGHT - 30}'
    assert (await post(second, SEND, sms_body())).status == 429


class Receiver:
    """The tenant's event endpoint on loopback: the quota.threshold events it was sent."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.events.append(orjson.loads(await request.read()))
        return web.Response(status=204)

    def thresholds(self) -> list[tuple[float, int, str, str]]:
        return [(e["data"]["threshold"], e["data"]["used"], e["data"]["mode"], e["data"]["day"]) for e in self.events]


@pytest.fixture
async def receiver(aiohttp_server: Callable[..., Awaitable[TestServer]], quota_dir: Path) -> Receiver:
    found = Receiver()
    app = web.Application()
    app.router.add_post("/events", found.handle)
    server = await aiohttp_server(app, host="127.0.0.1")
    found.url = str(server.make_url("/events"))
    (quota_dir / "webhooks.yaml").write_text(
        f"webhooks:\n  acme:\n    main: {{url: '{found.url}', events: [quota.threshold], secret: {SECRET}, allow_private: true}}\n"
    )
    (quota_dir / "quotas.yaml").write_text("quotas:\n  acme: {burst_per_minute: 100, daily: 4, warn_at: 0.5}\n")
    return found


async def settled(api: Api) -> None:
    await asyncio.wait_for(api.app[EVENT_WEBHOOKS].until_idle(), 5)


async def test_each_threshold_fires_once_a_day_across_a_restart_and_again_the_next_day(
    aiohttp_client: Any, make_app: Callable[..., web.Application], receiver: Receiver, clock: FakeClock
) -> None:
    first = Api(await aiohttp_client(make_app()))
    for _ in range(2):
        assert (await post(first, SEND, sms_body())).status == 202
    await settled(first)
    assert receiver.thresholds() == [(0.5, 2, "live", "2027-01-15")]
    await first.client.close()

    second = Api(await aiohttp_client(make_app()))
    assert (await post(second, BULK, bulk("+14155550100", "+14155550101"))).status == 202
    assert (await post(second, SEND, sms_body())).status == 429, "the cap refuses without telling again"
    await settled(second)
    assert receiver.thresholds() == [(0.5, 2, "live", "2027-01-15"), (1.0, 4, "live", "2027-01-15")]
    event = receiver.events[-1]
    assert event["type"] == "quota.threshold"
    assert event["data"] | {"seq": 0} == {
        "tenant": "acme", "mode": "live", "threshold": 1.0, "daily_limit": 4, "used": 4, "day": "2027-01-15", "seq": 0,
    }

    clock.advance(TO_MIDNIGHT)
    for _ in range(2):
        assert (await post(second, SEND, sms_body())).status == 202
    assert (await post(second, SEND, sms_body(), key=TEST_KEY)).status == 202
    await settled(second)
    assert receiver.thresholds()[2:] == [(0.5, 2, "live", "2027-01-16")], "a new day counts from zero; test keys count apart"


def mailgun_callback(clock: FakeClock, n: int) -> bytes:
    """A delivered receipt signed with the ``mail`` instance's key, as Mailgun sends one."""
    timestamp, token = str(int(clock.now())), f"token-{n}"
    signature = hmac.new(b"mailgun-signing-value-0001", (timestamp + token).encode(), hashlib.sha256).hexdigest()
    event = {"event": "delivered", "id": f"ev-{n}", "timestamp": clock.now(), "message": {"headers": {"message-id": f"m-{n}"}}}
    return orjson.dumps({"signature": {"timestamp": timestamp, "token": token, "signature": signature}, "event-data": event})


async def test_callbacks_past_their_instance_rate_are_429_while_sends_go_through(
    aiohttp_client: Any, tmp_path: Path, clock: FakeClock, memory_provider: type[MemoryProvider]
) -> None:
    api = await gateway(
        aiohttp_client, tmp_path, clock, {"memory": memory_provider}, providers="memory: {plugin: memory}\n",
        policy="channels:\n  sms: {providers: [memory]}\n", inbound_rate_per_instance=2, inbound_burst_per_instance=3,
    )

    async def callback(n: int) -> tuple[int, str | None]:
        response = await api.client.post("/api/v1/webhooks/mail", data=mailgun_callback(clock, n), headers={"Content-Type": "application/json"})
        return response.status, response.headers.get("Retry-After")

    assert [await callback(n) for n in range(5)] == [(200, None)] * 3 + [(429, "1")] * 2, "genuine callbacks count too"
    sent = await post(api, SEND, {"recipient": {"phone": "+14155550100"}, "notification": {"channels": ["sms"], "body": "hi"}})
    assert sent.status == 202, "sends are not held back by a flood of callbacks"
    clock.advance(0.5)
    assert await callback(5) == (200, None), "the instance's budget comes back at its rate"
    assert await callback(6) == (429, "1")


def test_tidings_check_refuses_a_malformed_quota_with_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text(
        "tenants:\n  shop: {}\nquotas:\n  shop:\n    burst_per_minute: 10\n    sustained_per_minute: 20\n    warn_at: 0.9\n"
    )
    code, out = run_cli("check", str(tmp_path))
    assert code != 0
    assert "policy.yaml:5: quotas.shop.burst_per_minute: must be at least sustained_per_minute (20)" in out
    assert "policy.yaml:7: quotas.shop.warn_at: is a share of the daily cap: set daily, or leave warn_at out" in out
