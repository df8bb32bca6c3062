"""A delivery's life in one table: every status × every happening, then the wait before a retry.

The retry half covers backoff's base, doubling, cap and jitter, a policy schedule, Retry-After
winning only when it asks for longer, and giving up when the schedule runs out or the message
would expire first.
"""

from __future__ import annotations

import random

import pytest

from gateway import statuses
from gateway.lifecycle import (
    MAX_DELAY,
    Acknowledged,
    Delivery,
    Entry,
    Expired,
    Failed,
    Failover,
    FallbackDue,
    Happening,
    Held,
    LeaseLost,
    NotNeeded,
    OptedOut,
    Receipt,
    Replayed,
    Retry,
    RetrySchedule,
    Sent,
    Skipped,
    Transition,
    fallback_moves,
    plan_retry,
    step,
)


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
    backoff = RetrySchedule(100, base=base)
    assert backoff.delay(attempt, Edge("low")) == pytest.approx(low)
    assert backoff.delay(attempt, Edge("high")) == pytest.approx(high)


def test_jitter_spreads_retries_across_its_whole_range() -> None:
    """Deliveries that failed together come back apart: drawn over ±20%, not bunched at one value."""
    draws = [RetrySchedule(5, base=60).delay(2, random.Random(seed)) for seed in range(400)]
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
    schedule = RetrySchedule(5, (scheduled,) if scheduled is not None else (), base=60)
    for end in ("low", "high"):
        plan = plan_retry(schedule, 1, 1000.0, "HTTP 503", retry_after=retry_after, rand=Edge(end))
        assert plan.give_up is None and plan.retry_at is not None
        delay = plan.retry_at - 1000.0
        if expected is None:
            assert delay == (48 if end == "low" else 72)
        else:
            assert delay == expected


# -- the table -----------------------------------------------------------------------------

DEAD = "dead"
"""The column of a dead letter: ``failed``, with a dead reason (in the dead-letter queue, replayable)."""

ORDER = (
    statuses.WAITING, statuses.QUEUED, statuses.SENDING, statuses.SENT, statuses.DELIVERED, statuses.OPENED, statuses.READ,
    statuses.CLICKED, statuses.FAILED, DEAD, statuses.BOUNCED, statuses.SKIPPED,
)
"""The columns of each row below."""

# One row per happening, one cell per status in ORDER: the status it moves to, "=" when it
# stays but a line of history is written, "." when nothing happens at all. "dead" is failed
# *and* dead-lettered; "failed" alone is failed with no dead reason (a fallback took over).
TABLE = {
    #                             waiting  queued    sending   sent      delivered opened  read    clicked failed  dead    bounced skipped
    "sent":                       ".       sent      sent      .         .         .       .       .       .       .       .       .",
    "failover":                   ".       =         =         .         .         .       .       .       .       .       .       .",
    "retry":                      ".       =         =         .         .         .       .       .       .       .       .       .",
    "refused, no fallback left":  ".       dead      dead      .         .         .       .       .       .       .       .       .",
    "refused, a fallback waits":  ".       failed    failed    .         .         .       .       .       .       .       .       .",
    "retries exhausted":          ".       dead      dead      .         .         .       .       .       .       .       .       .",
    "opted out since accepted":   ".       dead      dead      .         .         .       .       .       .       .       .       .",
    "opted out, a fallback waits": ".      failed    failed    .         .         .       .       .       .       .       .       .",
    "receipt: sent":              "sent    sent      sent      .         .         .       .       .       .       .       .       .",
    "receipt: delivered":         "delivered delivered delivered delivered . .       .       .       .       .       .       .",
    "receipt: opened":            "opened  opened    opened    opened    opened    .       .       .       .       .       .       .",
    "receipt: read":              "read    read      read      read      read      .       .       .       .       .       .       .",
    "receipt: clicked":           "clicked clicked   clicked   clicked   clicked   clicked clicked .       .       .       .       .",
    "receipt: bounced":           "bounced bounced   bounced   bounced   bounced   bounced bounced bounced .       .       .       .",
    "receipt: failed":            "failed  failed    failed    failed    failed    failed  failed  failed  .       .       .       .",
    "expired":                    ".       dead      dead      .         .         .       .       .       .       .       .       .",
    "lease lost":                 ".       .         =         .         .         .       .       .       .       .       .       .",
    "held, tenant suspended":     ".       =         queued    .         .         .       .       .       .       .       .       .",
    "fallback due":               "queued  .         .         .         .         .       .       .       .       .       .       .",
    "not needed":                 "skipped .         .         .         .         .       .       .       .       .       .       .",
    "skipped: opted out, no address": "skipped skipped   skipped   .         .         .       .       .       .       .       .       .",
    "replayed":                   ".       .         .         .         .         .       .       .       .       queued  .       .",
    "acknowledged":               "skipped .         .         .         .         .       .       .       .       .       .       .",
}

HAPPENINGS = {
    "sent": (Sent(), False),
    "failover": (Failover("HTTP 503 from the first instance"), False),
    "retry": (Retry(1060.0, "HTTP 503"), False),
    "refused, no fallback left": (Failed("invalid number"), False),
    "refused, a fallback waits": (Failed("invalid number"), True),
    "retries exhausted": (Failed("gave up after 5 attempts: HTTP 503", give_up=statuses.RETRIES_EXHAUSTED), True),
    "opted out since accepted": (OptedOut("sms"), False),
    "opted out, a fallback waits": (OptedOut("sms"), True),
    "receipt: sent": (Receipt(statuses.SENT), False),
    "receipt: delivered": (Receipt(statuses.DELIVERED), False),
    "receipt: opened": (Receipt(statuses.OPENED), False),
    "receipt: read": (Receipt(statuses.READ), False),
    "receipt: clicked": (Receipt(statuses.CLICKED), False),
    "receipt: bounced": (Receipt(statuses.BOUNCED, "mailbox full"), False),
    "receipt: failed": (Receipt(statuses.FAILED, "carrier rejected"), False),
    "expired": (Expired(), False),
    "lease lost": (LeaseLost(), False),
    "held, tenant suspended": (Held("tenant acme is suspended"), False),
    "fallback due": (FallbackDue("the channel before it failed"), False),
    "not needed": (NotNeeded(), False),
    "skipped: opted out, no address": (Skipped("channel_opted_out"), False),
    "replayed": (Replayed("key:ops"), False),
    "acknowledged": (Acknowledged("on-call key"), False),
}

CELLS = [
    pytest.param(status, name, cell, id=f"{status}×{name}")
    for name, row in TABLE.items()
    for status, cell in zip(ORDER, row.split(), strict=True)
]


def test_the_table_covers_every_status_and_every_kind_of_happening() -> None:
    assert {statuses.FAILED if column == DEAD else column for column in ORDER} == statuses.ALL
    kinds = {type(happening) for happening, _waits in HAPPENINGS.values()}
    assert kinds == {
        Sent, Failover, Retry, Failed, OptedOut, Receipt, Expired, LeaseLost, Held, FallbackDue, NotNeeded, Skipped, Replayed,
        Acknowledged,
    }
    assert HAPPENINGS.keys() == TABLE.keys()
    assert {happening.status for happening, _waits in HAPPENINGS.values() if isinstance(happening, Receipt)} == set(statuses.RECEIPT_STATUSES.values())


@pytest.mark.parametrize(("column", "name", "cell"), CELLS)
def test_every_status_meets_every_happening(column: str, name: str, cell: str) -> None:
    happening, fallback_waiting = HAPPENINGS[name]
    status = statuses.FAILED if column == DEAD else column
    transition = step(Delivery(status, fallback_waiting, dead_letter=column == DEAD), happening)
    if cell == ".":
        assert transition == Transition(status, records_opt_out=transition.records_opt_out)
        return
    assert transition.entry is not None
    expected = status if cell == "=" else statuses.FAILED if cell == DEAD else cell
    assert transition.status == expected
    if cell == "=":
        assert (transition.entry.from_status, transition.entry.to_status) == (None, None)
    else:
        assert (transition.entry.from_status, transition.entry.to_status) == (status, expected)
        assert transition.settles_notification
        # Dead-lettered is a property of a failed delivery: it has a dead reason, and only then.
        assert (transition.dead_reason is not None) == (cell == DEAD)


@pytest.mark.parametrize(
    ("happening", "fallback_waiting", "entry", "dead_reason"),
    [
        (Sent(), False, Entry("sent", "sending", "sent", None, "message.sent"), None),
        (Receipt(statuses.DELIVERED, "status=delivered"), False, Entry("receipt", "sending", "delivered", "status=delivered", "message.delivered"), None),
        (Receipt(statuses.BOUNCED, "mailbox full"), False, Entry("receipt", "sending", "bounced", "mailbox full"), None),  # told once, as message.failed
        (Failed("invalid number"), False, Entry("dead_lettered", "sending", "failed", "permanent: invalid number", "message.dead_lettered"), "permanent"),
        (Failed("invalid number"), True, Entry("failed", "sending", "failed", "invalid number"), None),
        (Expired(), False, Entry("dead_lettered", "sending", "failed", "expired: expired before it could be sent", "message.dead_lettered"), "expired"),
        (Receipt(statuses.OPENED, "open"), False, Entry("receipt", "sending", "opened", "open", "message.opened"), None),
        (Receipt(statuses.CLICKED, "click"), False, Entry("receipt", "sending", "clicked", "click", "message.clicked"), None),
        (Receipt(statuses.READ, "read"), False, Entry("receipt", "sending", "read", "read", "message.read"), None),
        (Receipt(statuses.FAILED, "carrier rejected"), False, Entry("receipt", "sending", "failed", "carrier rejected"), None),  # told as message.failed
        (LeaseLost(), False, Entry("lease_expired", None, None, "worker lost its lease; reclaimed"), None),
        (Held("tenant acme is suspended"), False, Entry("held", "sending", "queued", "tenant acme is suspended"), None),
        (Retry(1060.0, "HTTP 503"), False, Entry("retry_scheduled", None, None, "HTTP 503"), None),
    ],
)
def test_each_line_of_history_says_what_happened_and_what_tenants_are_told(
    happening: Failed | Sent | Receipt | Expired | LeaseLost | Held | Retry, fallback_waiting: bool, entry: Entry, dead_reason: str | None
) -> None:
    transition = step(Delivery(statuses.SENDING, fallback_waiting), happening)
    assert transition.entry == entry
    assert transition.dead_reason == dead_reason


def test_a_retry_carries_its_time_and_a_refusal_for_opt_out_is_recorded_even_when_a_receipt_won() -> None:
    assert step(Delivery(statuses.SENDING), Retry(1060.0, "HTTP 503")).retry_at == 1060.0
    assert step(Delivery(statuses.SENDING), Failed("STOP received", opted_out=True)).records_opt_out
    late = step(Delivery(statuses.DELIVERED), Failed("STOP received", opted_out=True))
    assert late.records_opt_out and late.entry is None and late.status == statuses.DELIVERED


@pytest.mark.parametrize(
    ("channels", "waits_for_delivery", "moves"),
    [
        (("sending", "waiting", "waiting"), True, []),  # the first is still being tried
        (("sent", "waiting"), True, []),  # sent, and fallback_after waits to see it delivered
        (("sent", "waiting", "waiting"), False, [(1, NotNeeded()), (2, NotNeeded())]),  # sent is enough
        (("delivered", "waiting"), True, [(1, NotNeeded())]),
        (("failed", "read", "waiting"), True, [(2, NotNeeded())]),
        (("opened", "waiting"), True, [(1, NotNeeded())]),
        (("clicked", "waiting"), True, [(1, NotNeeded())]),
        (("failed", "waiting", "waiting"), True, [(1, FallbackDue("the channel before it failed"))]),  # only the next one starts
        (("failed", "bounced", "waiting"), False, [(2, FallbackDue("the channel before it failed"))]),
        (("failed", "queued", "waiting"), True, []),  # the second channel is under way
        (("failed", "skipped"), True, []),  # nothing is waiting
    ],
)
def test_fallback_moves_start_the_next_channel_or_skip_the_rest(
    channels: tuple[str, ...], waits_for_delivery: bool, moves: list[tuple[int, Happening]]
) -> None:
    assert fallback_moves(channels, waits_for_delivery=waits_for_delivery) == moves


def test_the_schedule_gives_up_after_its_last_attempt_and_before_an_expiry_it_cannot_meet() -> None:
    schedule = RetrySchedule(3, (60.0, 300.0))
    assert plan_retry(schedule, 1, 0.0, "HTTP 503").retry_at == 60.0
    assert plan_retry(schedule, 2, 0.0, "HTTP 503").retry_at == 300.0
    exhausted = plan_retry(schedule, 3, 0.0, "HTTP 503")
    assert (exhausted.retry_at, exhausted.give_up, exhausted.reason) == (None, "retries_exhausted", "gave up after 3 attempts: HTTP 503")
    late = plan_retry(schedule, 2, 0.0, "HTTP 503", expires_at=299.0)
    assert (late.retry_at, late.give_up) == (None, "expired")
    assert plan_retry(schedule, 2, 0.0, "HTTP 503", expires_at=301.0).retry_at == 300.0
    # Past its last delay a schedule that allows more attempts repeats that delay.
    assert plan_retry(RetrySchedule(6, (60.0, 300.0)), 4, 0.0, "HTTP 503").retry_at == 300.0
