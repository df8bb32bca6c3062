from __future__ import annotations

import pytest
from conftest import FakeClock

from gateway.engine.breakers import BreakerBoard, BreakerPolicy, CircuitBreaker, Transition

POLICY = BreakerPolicy(failures=3, window=10.0, cooldown=30.0)


@pytest.fixture
def breaker(clock: FakeClock) -> CircuitBreaker:
    return CircuitBreaker("twilio-main", POLICY, clock)


def trip(breaker: CircuitBreaker) -> Transition | None:
    results = [breaker.record_failure() for _ in range(breaker.policy.failures)]
    return results[-1]


def test_a_new_breaker_is_closed_and_lets_everything_through(breaker: CircuitBreaker) -> None:
    assert breaker.state == "closed"
    assert all(breaker.allow() for _ in range(100))
    assert breaker.next_probe_at is None


def test_it_opens_at_the_nth_failure_within_the_window_and_says_why(breaker: CircuitBreaker, clock: FakeClock) -> None:
    assert breaker.record_failure() is None
    clock.advance(4)
    assert breaker.record_failure() is None
    clock.advance(4)
    transition = breaker.record_failure()

    assert transition == Transition("twilio-main", "closed", "open", clock.now(), "3 failures in 10s")
    assert transition.event == "provider.circuit_opened"
    assert breaker.state == "open"
    assert breaker.allow() is False


def test_failures_spread_wider_than_the_window_never_open_it(breaker: CircuitBreaker, clock: FakeClock) -> None:
    for _ in range(20):
        assert breaker.record_failure() is None
        clock.advance(5.01)  # at most two failures within any 10 s
    assert breaker.state == "closed"


def test_a_failure_exactly_one_window_old_no_longer_counts(breaker: CircuitBreaker, clock: FakeClock) -> None:
    breaker.record_failure()
    clock.advance(5)
    breaker.record_failure()
    clock.advance(5)
    assert breaker.record_failure() is None
    assert breaker.state == "closed"


def test_successes_in_between_do_not_forgive_failures_in_the_window(breaker: CircuitBreaker) -> None:
    for _ in range(2):
        breaker.record_failure()
        assert breaker.record_success() is None
    assert breaker.record_failure() is not None


def test_it_stays_open_for_the_whole_cooldown(breaker: CircuitBreaker, clock: FakeClock) -> None:
    trip(breaker)
    opened = clock.now()
    assert breaker.next_probe_at == opened + 30
    for _ in range(29):
        clock.advance(1)
        assert breaker.allow() is False
        assert breaker.state == "open"
    clock.advance(1)
    assert breaker.state == "half_open"


def test_half_open_lets_exactly_one_probe_through(breaker: CircuitBreaker, clock: FakeClock) -> None:
    trip(breaker)
    clock.advance(30)
    admitted = [breaker.allow() for _ in range(10)]
    assert admitted == [True] + [False] * 9
    clock.advance(29)
    assert breaker.allow() is False


def test_a_probe_that_succeeds_closes_the_circuit_and_reports_it(breaker: CircuitBreaker, clock: FakeClock) -> None:
    trip(breaker)
    clock.advance(30)
    assert breaker.allow() is True
    clock.advance(2)

    transition = breaker.record_success()

    assert transition == Transition("twilio-main", "half_open", "closed", clock.now(), "probe succeeded")
    assert transition.event == "provider.circuit_closed"
    assert breaker.state == "closed"
    assert all(breaker.allow() for _ in range(5))


def test_a_closed_circuit_starts_counting_failures_afresh(breaker: CircuitBreaker, clock: FakeClock) -> None:
    trip(breaker)
    clock.advance(30)
    breaker.allow()
    breaker.record_success()
    assert breaker.record_failure() is None
    assert breaker.record_failure() is None
    assert breaker.state == "closed"


def test_a_probe_that_fails_reopens_for_a_fresh_cooldown(breaker: CircuitBreaker, clock: FakeClock) -> None:
    trip(breaker)
    clock.advance(30)
    assert breaker.allow() is True
    clock.advance(5)

    transition = breaker.record_failure()

    assert transition == Transition("twilio-main", "half_open", "open", clock.now(), "probe failed")
    assert breaker.state == "open"
    assert breaker.next_probe_at == clock.now() + 30
    clock.advance(29)
    assert breaker.allow() is False
    clock.advance(1)
    assert breaker.allow() is True


def test_late_outcomes_of_sends_from_before_the_circuit_opened_change_nothing(breaker: CircuitBreaker, clock: FakeClock) -> None:
    trip(breaker)
    clock.advance(10)
    assert breaker.record_failure() is None
    assert breaker.record_success() is None
    assert breaker.state == "open"
    assert breaker.next_probe_at == clock.now() + 20


def test_a_probe_never_recorded_is_presumed_lost_after_another_cooldown(breaker: CircuitBreaker, clock: FakeClock) -> None:
    trip(breaker)
    clock.advance(30)
    assert breaker.allow() is True
    assert breaker.next_probe_at == clock.now() + 30
    clock.advance(30)
    assert breaker.allow() is True
    assert breaker.allow() is False


def test_a_wall_clock_stepped_back_does_not_prolong_the_outage(breaker: CircuitBreaker, clock: FakeClock) -> None:
    trip(breaker)
    clock.advance(-3600)
    assert breaker.allow() is True


@pytest.mark.parametrize(
    "policy", [{"failures": 0}, {"window": 0.0}, {"cooldown": -1.0}], ids=["no-failures", "no-window", "negative-cooldown"]
)
def test_a_policy_that_makes_no_sense_is_refused(policy: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BreakerPolicy(**policy)  # type: ignore[arg-type]


def test_the_board_keeps_one_breaker_per_instance(clock: FakeClock) -> None:
    board = BreakerBoard(clock)
    twilio = board.get("twilio-main", POLICY)
    assert board.get("twilio-main", POLICY) is twilio
    assert board.get("vonage", POLICY) is not twilio
    trip(twilio)
    assert board.states() == {"twilio-main": "open", "vonage": "closed"}
    clock.advance(30)
    assert board.states() == {"twilio-main": "half_open", "vonage": "closed"}


def test_a_reloaded_policy_applies_to_the_existing_breaker(clock: FakeClock) -> None:
    board = BreakerBoard(clock)
    breaker = board.get("twilio-main", POLICY)
    trip(breaker)
    clock.advance(10)

    shorter = BreakerPolicy(failures=1, window=10.0, cooldown=10.0)
    assert board.get("twilio-main", shorter) is breaker

    assert breaker.policy == shorter
    assert breaker.state == "half_open"
    assert breaker.allow() is True
    breaker.record_success()
    assert breaker.record_failure() is not None
