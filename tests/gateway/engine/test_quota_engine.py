"""The quota engine on its own: the bucket's arithmetic, refunds, reloads, thresholds, and the event-ingestion rate.

What the HTTP API does with it (429s, headers, persistence, events) is in tests/gateway/http/test_quotas.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import FakeClock

from gateway.engine.quotas import Quotas, rate_limit_headers, refusal, seconds_to_midnight, thresholds, utc_day
from gateway.errors import PayloadTooLargeError, TooManyRequestsError
from gateway.plugins import PluginCatalog
from gateway.policy.loading import load_policies
from gateway.policy.models import QuotaPolicy
from gateway.policy.view import PolicySet
from gateway.store import Threshold

PolicyOf = Callable[[str], PolicySet]


@pytest.fixture
def policy_of(tmp_path: Path, plugin_catalog: PluginCatalog) -> PolicyOf:
    """A policy set with tenants shop and free, and ``quota`` (YAML) as shop's entry under ``quotas``."""
    count = 0

    def build(quota: str) -> PolicySet:
        nonlocal count
        count += 1
        directory = tmp_path / f"policy{count}"
        directory.mkdir()
        (directory / "policy.yaml").write_text(f"tenants:\n  shop: {{}}\n  free: {{}}\nquotas:\n  shop: {quota}\n")
        return load_policies(directory, plugin_catalog)

    return build


def test_a_full_bucket_takes_a_burst_then_refills_at_the_sustained_rate(policy_of: PolicyOf, clock: FakeClock) -> None:
    policy, quotas = policy_of("{burst_per_minute: 5, sustained_per_minute: 2}"), Quotas(clock)
    assert quotas.take(policy, "shop", "live", 5).granted
    refused = quotas.take(policy, "shop", "live", 1)
    assert (refused.granted, refused.code, refused.retry_after) == (False, "rate_limited", 30)
    clock.advance(30)
    assert quotas.take(policy, "shop", "live", 1).granted
    assert not quotas.take(policy, "shop", "live", 1).granted


@pytest.mark.parametrize(
    ("quota", "policy_line"),
    [
        ("{burst_per_minute: 6}", '"rate";q=6;w=60'),  # alone, the burst is also the rate per minute
        ("{sustained_per_minute: 6}", '"rate";q=6;w=60'),  # and the sustained rate also the burst
        ("{burst_per_minute: 100, sustained_per_minute: 20}", '"rate";q=100;w=300'),  # 100 at once, 100 per 5 min on average
        ("{daily: 50}", '"daily";q=50;w=86400'),
    ],
)
def test_each_limit_is_one_item_of_ratelimit_policy(policy_of: PolicyOf, clock: FakeClock, quota: str, policy_line: str) -> None:
    decision = Quotas(clock).state(policy_of(quota), "shop", "live")
    assert rate_limit_headers(decision)["RateLimit-Policy"] == policy_line


def test_a_tenant_without_a_quota_or_with_only_an_event_rate_has_no_message_limits(policy_of: PolicyOf, clock: FakeClock) -> None:
    quotas = Quotas(clock)
    policy = policy_of("{events_per_minute: 5}")
    for tenant in ("free", "shop"):
        decision = quotas.take(policy, tenant, "live", 1_000_000)
        assert decision.granted and decision.charge is None and rate_limit_headers(decision) == {}


def test_a_refund_gives_back_the_messages_and_the_days_count(policy_of: PolicyOf, clock: FakeClock) -> None:
    policy, quotas = policy_of("{burst_per_minute: 3, sustained_per_minute: 1, daily: 3}"), Quotas(clock)
    taken = quotas.take(policy, "shop", "live", 3)
    assert taken.charge is not None and taken.charge.count == 3 and taken.charge.tokens == 0
    quotas.refund(taken)
    state = quotas.state(policy, "shop", "live")
    assert [(w.name, w.remaining) for w in state.windows] == [("rate", 3), ("daily", 3)]


def test_a_reload_keeps_the_level_so_it_neither_grants_a_fresh_burst_nor_starves(policy_of: PolicyOf, clock: FakeClock) -> None:
    quotas = Quotas(clock)
    assert quotas.take(policy_of("{burst_per_minute: 10}"), "shop", "live", 8).granted
    bigger = policy_of("{burst_per_minute: 20}")
    assert [w.remaining for w in quotas.state(bigger, "shop", "live").windows] == [2]
    smaller = policy_of("{burst_per_minute: 1}")
    assert [w.remaining for w in quotas.state(smaller, "shop", "live").windows] == [1]


def test_a_count_no_limit_can_ever_hold_is_refused_as_too_large(policy_of: PolicyOf, clock: FakeClock) -> None:
    quotas = Quotas(clock)
    for quota in ("{burst_per_minute: 5}", "{daily: 5}"):
        decision = quotas.take(policy_of(quota), "shop", "live", 6)
        assert (decision.granted, decision.code, decision.retry_after) == (False, "larger_than_quota", None)
        assert isinstance(refusal(decision), PayloadTooLargeError)


def test_past_the_daily_cap_the_wait_is_until_midnight_utc_even_when_the_rate_would_allow_sooner(
    policy_of: PolicyOf, clock: FakeClock
) -> None:
    policy, quotas = policy_of("{burst_per_minute: 2, sustained_per_minute: 1, daily: 3}"), Quotas(clock)
    assert quotas.take(policy, "shop", "live", 2).granted
    clock.advance(120)
    assert quotas.take(policy, "shop", "live", 1).granted
    refused = quotas.take(policy, "shop", "live", 1)
    assert refused.code == "daily_quota_exceeded" and refused.retry_after == round(seconds_to_midnight(clock.now()))
    error = refusal(refused)
    assert isinstance(error, TooManyRequestsError) and error.code == "daily_quota_exceeded"
    assert error.headers["Retry-After"] == str(refused.retry_after) and error.headers["RateLimit-Limit"] == "3"


@pytest.mark.parametrize(
    ("daily", "warn_at", "expected"),
    [
        (100, 0.8, [(0.8, 80), (1.0, 100)]),
        (4, 0.5, [(0.5, 2), (1.0, 4)]),
        (100, 0.07, [(0.07, 7), (1.0, 100)]),  # 0.07 * 100 is 7.000000000000001 in floats: still 7
        (3, 0.1, [(0.1, 1), (1.0, 3)]),  # at least one message
        (10, 1.0, [(1.0, 10)]),  # warning at the cap: one event, not two
        (None, 0.8, []),  # no cap, nothing to warn about
    ],
)
def test_thresholds_fire_at_warn_at_and_at_the_cap(daily: int | None, warn_at: float, expected: list[tuple[float, int]]) -> None:
    assert thresholds(QuotaPolicy(daily=daily, warn_at=warn_at)) == tuple(Threshold(f, c) for f, c in expected)


def test_the_day_is_the_utc_date() -> None:
    assert utc_day(1_800_000_000) == "2027-01-15"
    assert utc_day(1_800_057_599.9) == "2027-01-15" and utc_day(1_800_057_600) == "2027-01-16"
    assert seconds_to_midnight(1_800_000_000) == 57_600


def test_event_ingestion_has_a_rate_of_its_own_per_tenant_and_mode(policy_of: PolicyOf, clock: FakeClock) -> None:
    policy, quotas = policy_of("{events_per_minute: 6, burst_per_minute: 1}"), Quotas(clock)
    assert all(quotas.take_events(policy, "shop", "live").granted for _ in range(6))
    refused = quotas.take_events(policy, "shop", "live")
    assert (refused.granted, refused.code, refused.retry_after) == (False, "rate_limited", 10)
    headers = rate_limit_headers(refused)
    assert headers["RateLimit-Policy"] == '"events";q=6;w=60' and headers["RateLimit"] == '"events";r=0;t=60'
    assert refusal(refused, "event").message == "The tenant is over its rate limit (6 per minute) for 1 event more; try again in 10 s."
    assert quotas.take_events(policy, "shop", "test").granted, "test keys have a budget of their own"
    assert quotas.take(policy, "shop", "live", 1).granted, "events taken in leave the message budget alone"
    clock.advance(10)
    assert quotas.take_events(policy, "shop", "live").granted
    assert quotas.take_events(policy, "shop", "live", 7).code == "larger_than_quota"
    assert quotas.take_events(policy, "free", "live", 1000).granted, "no events_per_minute: no limit"
    assert [w.remaining for w in quotas.events_state(policy, "shop", "live").windows] == [0]
