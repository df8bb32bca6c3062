"""The wait before a retry: base, doubling, the cap, jitter's bounds, the schedule, and Retry-After winning."""

from __future__ import annotations

import random

import pytest

from gateway.engine.backoff import MAX_DELAY, retry_delay


class Edge(random.Random):
    """Jitter pinned to one end of its range."""

    def __init__(self, end: str) -> None:
        super().__init__(0)
        self.end = end

    def uniform(self, a: float, b: float) -> float:
        return a if self.end == "low" else b


@pytest.mark.parametrize(
    ("attempt", "base", "low", "high"),
    [
        (1, 60, 48, 72),  # the first retry waits about base
        (2, 60, 96, 144),  # then twice that
        (3, 60, 192, 288),  # then four times
        (4, 2, 12.8, 19.2),
        (6, 60, 1536, 2304),  # 1,920 s: still under the cap
        (7, 60, 0.8 * MAX_DELAY, 1.2 * MAX_DELAY),  # 3,840 s is capped at an hour, then jittered
        (40, 60, 0.8 * MAX_DELAY, 1.2 * MAX_DELAY),
        (0, 60, 48, 72),  # a nonsense attempt number waits like the first
    ],
)
def test_backoff_doubles_from_base_up_to_an_hour_within_twenty_percent(attempt: int, base: float, low: float, high: float) -> None:
    assert retry_delay(attempt, base=base, rand=Edge("low")) == pytest.approx(low)
    assert retry_delay(attempt, base=base, rand=Edge("high")) == pytest.approx(high)


def test_jitter_spreads_retries_across_its_whole_range() -> None:
    """Deliveries that failed together come back apart: drawn over ±20%, not bunched at one value."""
    draws = [retry_delay(2, base=60, rand=random.Random(seed)) for seed in range(400)]
    assert all(96 <= draw <= 144 for draw in draws)
    assert min(draws) < 100 and max(draws) > 140
    assert len({round(draw, 3) for draw in draws}) > 350


@pytest.mark.parametrize(
    ("scheduled", "retry_after", "expected"),
    [
        (None, 600, 600),  # the provider asks for longer than backoff's 48–72 s: it wins
        (None, 5, None),  # shorter: backoff stands
        (30, None, 30),  # the policy's schedule replaces backoff, with no jitter
        (30, 90, 90),  # Retry-After wins over a schedule too when longer
        (30, 10, 30),
        (30, 0, 30),
    ],
)
def test_retry_after_wins_only_when_it_asks_for_longer(scheduled: float | None, retry_after: float | None, expected: float | None) -> None:
    for end in ("low", "high"):
        delay = retry_delay(1, base=60, scheduled=scheduled, retry_after=retry_after, rand=Edge(end))
        if expected is None:
            assert delay == (48 if end == "low" else 72)
        else:
            assert delay == expected
