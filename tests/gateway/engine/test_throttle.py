from __future__ import annotations

import math
import random

import pytest
from conftest import FakeClock

from gateway.engine.throttle import SourceLimits, Throttles, TokenBucket


def test_a_bucket_starts_full_with_one_seconds_worth(clock: FakeClock) -> None:
    assert TokenBucket(10, clock=clock).available() == 10
    assert TokenBucket(0.5, clock=clock).available() == 1
    assert TokenBucket(10, 3, clock=clock).available() == 3


@pytest.mark.parametrize("step", [1 / 64, 0.1, 0.25, 1.0])  # a taker asking at least once per burst
def test_over_ten_seconds_at_10_per_second_exactly_100_plus_burst_are_granted(clock: FakeClock, step: float) -> None:
    bucket = TokenBucket(10, clock=clock)
    granted, start = 0, clock.now()
    while True:
        while bucket.try_take():
            granted += 1
        if clock.now() - start >= 10:
            break
        clock.advance(min(step, 10 - (clock.now() - start)))
    assert granted == 10 * 10 + 10


def test_take_up_to_is_as_exact_as_taking_one_by_one(clock: FakeClock) -> None:
    bucket = TokenBucket(10, 5, clock=clock)
    granted = bucket.take_up_to(1000)
    for _ in range(100):
        clock.advance(0.125)
        granted += bucket.take_up_to(1000)
    assert granted == 10 * 12.5 + 5


def test_uneven_clock_steps_never_grant_more_than_rate_times_time_plus_burst(clock: FakeClock) -> None:
    rand = random.Random(7)
    bucket = TokenBucket(7, 3, clock=clock)
    granted, start = 0, clock.now()
    for _ in range(2000):
        clock.advance(rand.uniform(0, 0.05))
        granted += bucket.take_up_to(rand.randint(1, 4))
        assert granted <= 7 * (clock.now() - start) + 3 + 1e-6
    assert granted >= 7 * (clock.now() - start) + 3 - 1


def test_an_idle_bucket_fills_only_up_to_its_burst(clock: FakeClock) -> None:
    bucket = TokenBucket(10, 4, clock=clock)
    assert bucket.take_up_to(4) == 4
    clock.advance(3600)
    assert bucket.available() == 4
    assert bucket.take_up_to(100) == 4
    assert bucket.try_take() is False


def test_try_take_takes_all_or_nothing(clock: FakeClock) -> None:
    bucket = TokenBucket(10, clock=clock)
    assert bucket.take_up_to(7) == 7
    assert bucket.try_take(4) is False
    assert bucket.available() == 3
    assert bucket.try_take(3) is True
    assert bucket.available() == 0


def test_take_up_to_takes_only_whole_tokens(clock: FakeClock) -> None:
    bucket = TokenBucket(10, clock=clock)
    bucket.take_up_to(10)
    clock.advance(0.25)
    assert bucket.take_up_to(10) == 2
    assert bucket.available() == pytest.approx(0.5)
    assert bucket.take_up_to(0) == 0


def test_waiting_wait_time_is_exactly_enough(clock: FakeClock) -> None:
    bucket = TokenBucket(10, clock=clock)
    assert bucket.wait_time() == 0
    bucket.take_up_to(10)
    assert bucket.wait_time() == pytest.approx(0.1)
    assert bucket.wait_time(3) == pytest.approx(0.3)

    clock.advance(bucket.wait_time(3) * 0.99)
    assert bucket.try_take(3) is False
    clock.advance(bucket.wait_time(3))
    assert bucket.wait_time(3) == 0
    assert bucket.try_take(3) is True


def test_waiting_wait_time_at_an_odd_rate_is_enough_at_todays_epoch(clock: FakeClock) -> None:
    bucket = TokenBucket(600 / 7, clock=clock)
    bucket.take_up_to(1000)
    for _ in range(1000):
        clock.advance(bucket.wait_time())
        assert bucket.try_take() is True


def test_more_than_the_burst_is_never_available(clock: FakeClock) -> None:
    bucket = TokenBucket(10, 4, clock=clock)
    assert bucket.wait_time(5) == math.inf
    assert bucket.try_take(5) is False


def test_tokens_put_back_can_be_taken_again_but_not_beyond_the_burst(clock: FakeClock) -> None:
    bucket = TokenBucket(10, clock=clock)
    assert bucket.take_up_to(10) == 10
    bucket.put_back(7)
    assert bucket.take_up_to(10) == 7
    bucket.put_back(50)
    assert bucket.available() == 10


def test_a_clock_stepped_back_grants_nothing_extra(clock: FakeClock) -> None:
    bucket = TokenBucket(10, clock=clock)
    bucket.take_up_to(10)
    clock.advance(-60)
    assert bucket.available() == 0
    clock.advance(0.5)
    assert bucket.take_up_to(10) == 5


@pytest.mark.parametrize(("rate", "burst"), [(0, None), (-1, None), (0.5, 0.5)])
def test_a_bucket_that_could_never_grant_is_refused(clock: FakeClock, rate: float, burst: float | None) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate, burst, clock=clock)


def test_throttles_keep_one_bucket_per_key(clock: FakeClock) -> None:
    throttles = Throttles(clock)
    sms = throttles.get("channel:sms", "10/s")
    assert sms is not None
    assert throttles.get("channel:sms", "10/s") is sms
    assert throttles.get("channel:sms", "600/m") is sms
    assert throttles.get("instance:twilio-main", "10/s") is not sms


def test_no_rate_means_unlimited(clock: FakeClock) -> None:
    assert Throttles(clock).get("channel:email", None) is None


def test_a_rate_change_keeps_the_tokens_left_capped_at_the_new_burst(clock: FakeClock) -> None:
    throttles = Throttles(clock)
    old = throttles.get("instance:twilio-main", "10/s")
    assert old is not None
    assert old.take_up_to(4) == 4

    faster = throttles.get("instance:twilio-main", "20/s")
    assert faster is not None and faster is not old
    assert (faster.rate, faster.burst, faster.available()) == (20, 20, 6)

    slower = throttles.get("instance:twilio-main", "2/s")
    assert slower is not None
    assert (slower.rate, slower.burst, slower.available()) == (2, 2, 2)
    assert slower.take_up_to(10) == 2
    clock.advance(1)
    assert slower.take_up_to(10) == 2


def test_lifting_a_limit_and_setting_it_again_starts_a_full_bucket(clock: FakeClock) -> None:
    throttles = Throttles(clock)
    bucket = throttles.get("channel:sms", "10/s")
    assert bucket is not None
    bucket.take_up_to(10)
    assert throttles.get("channel:sms", None) is None
    again = throttles.get("channel:sms", "10/s")
    assert again is not None and again.available() == 10


def spend(limits: SourceLimits, source: str, times: int = 1) -> float:
    """Refuse ``times`` callbacks from ``source``; how long it must then wait."""
    for _ in range(times):
        limits.refused(source)
    return limits.wait(source)


def test_source_limits_count_an_ipv6_64_as_one_caller_and_an_ipv4_mapped_address_as_ipv4(clock: FakeClock) -> None:
    limits = SourceLimits(1, 2, clock=clock)
    assert [spend(limits, "2001:db8::1"), limits.wait("2001:db8::ffff")] == [0.0, 0.0]
    assert spend(limits, "2001:db8::ffff") == pytest.approx(1.0)  # the same /64, its refusals spent
    assert limits.wait("2001:db8:0:0:1::2") == pytest.approx(1.0)
    assert limits.wait("2001:db8:0:1::1") == 0.0  # the next /64 is another caller
    assert spend(limits, "192.0.2.1") == 0.0
    assert spend(limits, "::ffff:192.0.2.1") > 0


def test_only_refusals_spend_a_source_budget(clock: FakeClock) -> None:
    limits = SourceLimits(1, 2, clock=clock)
    assert {limits.wait("192.0.2.1") for _ in range(1000)} == {0.0}, "asking never spends: verified callbacks are free"
    assert spend(limits, "192.0.2.1", 2) == pytest.approx(1.0)
    clock.advance(1)
    assert limits.wait("192.0.2.1") == 0.0


def test_source_limits_remember_a_bounded_number_of_callers(clock: FakeClock) -> None:
    limits = SourceLimits(1, 1, clock=clock, max_sources=2)
    assert spend(limits, "192.0.2.1") > 0
    limits.refused("192.0.2.2")
    limits.refused("192.0.2.3")  # the first is forgotten
    assert limits.wait("192.0.2.1") == 0.0
    assert len(limits._buckets) == 2


def test_a_rate_of_zero_limits_nothing(clock: FakeClock) -> None:
    limits = SourceLimits(0, 1, clock=clock)
    assert {spend(limits, "192.0.2.1") for _ in range(1000)} == {0.0}
