"""Per-tenant quotas: a rate limit and a daily cap on messages, and a rate for business events taken in.

Policy ``quotas.<tenant>`` sets them; a tenant without an entry has no limits.

- **Rate**: a token bucket of ``burst_per_minute`` messages that refills at
  ``sustained_per_minute`` (either alone sets both). A full bucket takes a burst at once; after
  that, messages go at the sustained rate.
- **Daily**: ``daily`` messages per UTC day (the count starts again at 00:00 UTC).
- **Events**: ``events_per_minute`` business events taken in, a bucket of that size refilled
  at that rate per minute (:meth:`Quotas.take_events`).

What counts is messages, not requests: a surface asks :meth:`Quotas.take` for as many as it is
about to accept (one per send, one per accepted bulk row, one per notification an event fans
out to), after validation and before anything is committed. A take is all or nothing: what
does not fit whole is refused whole, with when to try again; a count larger than a limit can
ever hold is refused as too large. A granted take's :attr:`Decision.charge` goes to the store
with the acceptance (``Store.accept(..., quota=...)``), so the count is kept in the same
transaction as the messages; if nothing is accepted after all (an idempotent replay that won a
race, a failed write), :meth:`Quotas.refund` gives it back.

Live and test keys have budgets of their own with the same numbers: an integration meets its
429 before production does, and a test flood never eats into the live budget.

The counters in memory decide; they are loaded from the store at start (:meth:`Quotas.load`), so
a restart neither forgets the day's count nor hands out a fresh burst. Event-ingestion buckets
are kept in memory only: after a restart they start full, which costs at most one burst.

The ``quota.threshold`` events (at ``warn_at`` of the daily cap and at 100%) are decided by the
store on the stored count (:class:`~gateway.store.records.QuotaCharge`), once per tenant, mode
and day.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from gateway.clock import Clock
from gateway.engine.throttle import TokenBucket
from gateway.errors import ApiError, PayloadTooLargeError, TooManyRequestsError
from gateway.metrics import Metrics
from gateway.policy.models import QuotaPolicy
from gateway.policy.view import PolicySet
from gateway.store import QuotaCharge, Store, Threshold

DAY: Final = 86400
RATE_LIMITED: Final = "rate_limited"
DAILY_QUOTA_EXCEEDED: Final = "daily_quota_exceeded"
TOO_LARGE: Final = "larger_than_quota"
RATE: Final = "rate"
DAILY: Final = "daily"
EVENTS: Final = "events"


@dataclass(frozen=True, slots=True)
class Window:
    """One limit as the RateLimit headers name it: ``quota`` per ``seconds``, ``remaining`` now, full again in ``reset`` seconds."""

    name: str
    quota: int
    seconds: int
    remaining: int
    reset: int


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to a take: granted or refused, and every limit's state after it.

    ``code`` says why a take was refused (``rate_limited``, ``daily_quota_exceeded``, or
    ``larger_than_quota`` when the count could never fit); ``retry_after`` is the whole seconds
    until it would fit (none for a count that never will). ``charge`` is what a granted take
    spends, for the store to keep with the acceptance.
    """

    granted: bool
    windows: tuple[Window, ...] = ()
    code: str | None = None
    retry_after: int | None = None
    charge: QuotaCharge | None = None
    count: int = 0

    @property
    def binding(self) -> Window | None:
        """The limit that refused the take, or else the one closest to running out."""
        refusing = {RATE_LIMITED: (RATE, EVENTS), DAILY_QUOTA_EXCEEDED: (DAILY,)}.get(self.code or "", ())
        for window in self.windows:
            if window.name in refusing:
                return window
        return min(self.windows, key=lambda w: (w.remaining, -w.reset), default=None)

    @property
    def limit(self) -> int | None:
        return self.binding.quota if self.binding else None

    @property
    def remaining(self) -> int | None:
        return self.binding.remaining if self.binding else None

    @property
    def reset(self) -> int | None:
        return self.binding.reset if self.binding else None


UNLIMITED: Final = Decision(granted=True)


@dataclass(frozen=True, slots=True)
class Limits:
    """A tenant's quota in numbers: the rate bucket's size and refill per second, the daily cap, the thresholds."""

    capacity: int | None
    per_second: float | None
    daily: int | None
    thresholds: tuple[Threshold, ...]

    @classmethod
    def of(cls, quota: QuotaPolicy) -> Limits:
        capacity = quota.burst_per_minute or quota.sustained_per_minute
        per_minute = quota.sustained_per_minute or quota.burst_per_minute
        return cls(capacity, per_minute / 60 if per_minute else None, quota.daily, thresholds(quota))

    @property
    def limited(self) -> bool:
        return self.capacity is not None or self.daily is not None


@functools.lru_cache(maxsize=1024)
def limits_of(quota: QuotaPolicy) -> Limits:
    """:meth:`Limits.of`, worked out once per distinct policy entry: every send asks."""
    return Limits.of(quota)


def thresholds(quota: QuotaPolicy) -> tuple[Threshold, ...]:
    """Where ``quota.threshold`` fires: at ``warn_at`` of the daily cap and at all of it (none without a cap)."""
    if quota.daily is None:
        return ()
    fractions = sorted({quota.warn_at, 1.0})
    return tuple(Threshold(fraction, max(1, math.ceil(round(fraction * quota.daily, 9)))) for fraction in fractions)


@dataclass(slots=True)
class Usage:
    """One tenant's spending in one mode: the day counted, its count so far, the rate bucket."""

    day: str
    used: int = 0
    bucket: TokenBucket | None = None
    saved: tuple[float, float] | None = None
    """The rate level loaded from the store (tokens, when), until the policy's bucket is built from it."""


class Quotas:
    """Takes messages and events from tenants' quotas; one per process, shared by every surface."""

    def __init__(self, clock: Clock, metrics: Metrics | None = None) -> None:
        self._clock = clock
        self._metrics = metrics or Metrics()
        self._usage: dict[tuple[str, str], Usage] = {}
        self._events: dict[tuple[str, str], TokenBucket] = {}

    async def load(self, store: Store) -> None:
        """Pick up the state the store kept: today's counts and the rate levels (call once, at start)."""
        today = utc_day(self._clock.now())
        for kept in await store.quota_usage():
            saved = (kept.tokens, kept.tokens_at) if kept.tokens is not None else None
            self._usage[(kept.tenant, kept.mode)] = Usage(today, kept.used if kept.day == today else 0, saved=saved)

    def take(self, policy: PolicySet, tenant: str, mode: str, count: int) -> Decision:
        """Spend ``count`` messages of ``tenant``'s quota in ``mode`` (``live`` or ``test``) if all of them fit; else spend nothing."""
        quota = policy.document.quotas.get(tenant)
        limits = limits_of(quota) if quota is not None else None
        if limits is None or not limits.limited:
            return UNLIMITED
        now = self._clock.now()
        usage = self._current(tenant, mode, limits, now)
        bucket = usage.bucket
        daily_short = limits.daily is not None and usage.used + count > limits.daily
        rate_wait = bucket.wait_time(count) if bucket is not None else 0.0
        if daily_short or rate_wait > 0:
            return self._refused(tenant, self._refusal(limits, usage, count, now, daily_short, rate_wait))
        if bucket is not None:
            bucket.try_take(count)
        usage.used += count
        charge = QuotaCharge(
            tenant, mode, count, usage.day, limits.daily, limits.thresholds, bucket.available() if bucket is not None else None, now
        )
        return Decision(True, _windows(limits, usage, now), charge=charge, count=count)

    def refund(self, decision: Decision, count: int | None = None) -> None:
        """Give back what a granted take spent (``count`` of it, when only some was not accepted after all)."""
        charge = decision.charge
        if charge is None:
            return
        usage = self._usage.get((charge.tenant, charge.mode))
        if usage is None:
            return
        back = charge.count if count is None else min(count, charge.count)
        if back <= 0:
            return
        if usage.day == charge.day:
            usage.used = max(0, usage.used - back)
        if usage.bucket is not None:
            usage.bucket.put_back(back)

    def state(self, policy: PolicySet, tenant: str, mode: str) -> Decision:
        """The tenant's message limits in ``mode`` as they stand, spending nothing (for the headers of every answer)."""
        quota = policy.document.quotas.get(tenant)
        limits = limits_of(quota) if quota is not None else None
        if limits is None or not limits.limited:
            return UNLIMITED
        now = self._clock.now()
        return Decision(True, _windows(limits, self._current(tenant, mode, limits, now), now))

    def take_events(self, policy: PolicySet, tenant: str, mode: str, count: int = 1) -> Decision:
        """Take ``count`` business events in for ``tenant`` in ``mode`` if ``events_per_minute`` allows; else take none.

        The messages the events then fan out to are counted apart, by :meth:`take`.
        """
        bucket = self._events_bucket(policy, tenant, mode)
        if bucket is None:
            return UNLIMITED
        if count > bucket.burst:
            return self._refused(tenant, Decision(False, (_bucket_window(EVENTS, bucket),), TOO_LARGE, count=count))
        wait = bucket.wait_time(count)
        if wait > 0:
            return self._refused(tenant, Decision(False, (_bucket_window(EVENTS, bucket),), RATE_LIMITED, max(1, math.ceil(wait)), count=count))
        bucket.try_take(count)
        return Decision(True, (_bucket_window(EVENTS, bucket),), count=count)

    def _refused(self, tenant: str, decision: Decision) -> Decision:
        """``decision``, a refusal, counted in ``tidings_quota_rejections_total`` by its code."""
        self._metrics.quota_rejections.labels(tenant, decision.code or "refused").inc()
        return decision

    def return_events(self, policy: PolicySet, tenant: str, mode: str, count: int = 1) -> None:
        """Give back ``count`` events a granted :meth:`take_events` took, when none was kept after all (a duplicate id)."""
        bucket = self._events_bucket(policy, tenant, mode)
        if bucket is not None:
            bucket.put_back(count)

    def events_state(self, policy: PolicySet, tenant: str, mode: str) -> Decision:
        """The tenant's event-ingestion limit in ``mode`` as it stands, taking nothing."""
        bucket = self._events_bucket(policy, tenant, mode)
        return UNLIMITED if bucket is None else Decision(True, (_bucket_window(EVENTS, bucket),))

    def _events_bucket(self, policy: PolicySet, tenant: str, mode: str) -> TokenBucket | None:
        quota = policy.document.quotas.get(tenant)
        key = (tenant, mode)
        if quota is None or quota.events_per_minute is None:
            self._events.pop(key, None)
            return None
        size = quota.events_per_minute
        bucket = self._events.get(key)
        if bucket is None or bucket.burst != size:
            tokens = bucket.available() if bucket is not None else None
            bucket = self._events[key] = TokenBucket(size / 60, size, clock=self._clock, tokens=tokens)
        return bucket

    def _current(self, tenant: str, mode: str, limits: Limits, now: float) -> Usage:
        """The tenant's usage in ``mode``, moved on to today and with a bucket of the policy's size and rate."""
        day = utc_day(now)
        usage = self._usage.get((tenant, mode))
        if usage is None:
            usage = self._usage[(tenant, mode)] = Usage(day)
        elif usage.day != day:
            usage.day, usage.used = day, 0
        usage.bucket = _resized(usage, limits, self._clock, now)
        usage.saved = None
        return usage

    def _refusal(self, limits: Limits, usage: Usage, count: int, now: float, daily_short: bool, rate_wait: float) -> Decision:
        windows = _windows(limits, usage, now)
        if (limits.capacity is not None and count > limits.capacity) or (limits.daily is not None and count > limits.daily):
            return Decision(False, windows, TOO_LARGE, count=count)
        wait = max(seconds_to_midnight(now) if daily_short else 0.0, rate_wait)
        return Decision(False, windows, DAILY_QUOTA_EXCEEDED if daily_short else RATE_LIMITED, max(1, math.ceil(wait)), count=count)


def _resized(usage: Usage, limits: Limits, clock: Clock, now: float) -> TokenBucket | None:
    """``usage``'s bucket at the policy's size and rate: built from the stored level once, kept across reloads.

    A changed policy keeps the level (capped at the new size): a reload neither grants a fresh
    burst nor starves the tenant.
    """
    if limits.capacity is None or limits.per_second is None:
        return None
    bucket = usage.bucket
    if bucket is not None and bucket.burst == limits.capacity and bucket.rate == limits.per_second:
        return bucket
    if bucket is not None:
        tokens: float | None = bucket.available()
    elif usage.saved is not None:
        level, at = usage.saved
        tokens = level + max(0.0, now - at) * limits.per_second
    else:
        tokens = None
    return TokenBucket(limits.per_second, limits.capacity, clock=clock, tokens=tokens)


def _windows(limits: Limits, usage: Usage, now: float) -> tuple[Window, ...]:
    windows = []
    if usage.bucket is not None:
        windows.append(_bucket_window(RATE, usage.bucket))
    if limits.daily is not None:
        windows.append(Window(DAILY, limits.daily, DAY, max(0, limits.daily - usage.used), math.ceil(seconds_to_midnight(now))))
    return tuple(windows)


def _bucket_window(name: str, bucket: TokenBucket) -> Window:
    """A bucket as a window: its size, per the time it takes to fill from empty; full again in ``reset``."""
    size = int(bucket.burst)
    level = bucket.available()
    remaining = min(size, math.floor(level + 1e-9))
    return Window(name, size, max(1, round(size / bucket.rate)), remaining, math.ceil((size - level) / bucket.rate - 1e-9))


def utc_day(now: float) -> str:
    """The UTC date of ``now``, as the daily count is kept: ``YYYY-MM-DD``."""
    return _day_name(math.floor(now / DAY))


@functools.lru_cache(maxsize=4)
def _day_name(day: int) -> str:
    return datetime.fromtimestamp(day * DAY, UTC).date().isoformat()


def seconds_to_midnight(now: float) -> float:
    """Seconds until the next 00:00 UTC, when the daily count starts again."""
    return (math.floor(now / DAY) + 1) * DAY - now


def rate_limit_headers(decision: Decision) -> dict[str, str]:
    """The RateLimit header fields for a decision; none for a tenant without limits.

    ``RateLimit-Policy`` and ``RateLimit`` as draft-ietf-httpapi-ratelimit-headers-09 words
    them (a structured list, one item per limit: ``"daily";q=100;w=86400`` and
    ``"daily";r=40;t=3600``), and ``RateLimit-Limit``, ``-Remaining`` and ``-Reset`` as
    clients written to draft 06 read them, for the limit closest to running out (the one that
    refused, on a 429). A 429 adds ``Retry-After``.
    """
    binding = decision.binding
    if binding is None:
        return {}
    headers = {
        "RateLimit-Policy": ", ".join(f'"{w.name}";q={w.quota};w={w.seconds}' for w in decision.windows),
        "RateLimit": ", ".join(f'"{w.name}";r={w.remaining};t={w.reset}' for w in decision.windows),
        "RateLimit-Limit": str(binding.quota),
        "RateLimit-Remaining": str(binding.remaining),
        "RateLimit-Reset": str(binding.reset),
    }
    if decision.retry_after is not None:
        headers["Retry-After"] = str(decision.retry_after)
    return headers


def refusal(decision: Decision, what: str = "message") -> ApiError:
    """The error a refused take answers: 429 with ``Retry-After``, or 413 for a count no limit can ever hold.

    ``what`` names one of what was counted: ``message``, or ``event`` for business events taken in.
    """
    headers = rate_limit_headers(decision)
    binding = decision.binding
    limit = f"{binding.quota} per {_span(binding.seconds)}" if binding else "its limit"
    counted = f"{decision.count} {what}{'' if decision.count == 1 else 's'}"
    if decision.code == TOO_LARGE:
        return PayloadTooLargeError(
            f"This request would take {counted} at once, more than the tenant's quota ({limit}) ever allows; split it.",
            code=TOO_LARGE, headers=headers,
        )
    if decision.code == DAILY_QUOTA_EXCEEDED:
        message = f"The tenant's daily quota ({limit}, counted per UTC day) has no room for {counted} more"
    else:
        message = f"The tenant is over its rate limit ({limit}) for {counted} more"
    return TooManyRequestsError(f"{message}; try again in {decision.retry_after} s.", code=decision.code, headers=headers)


def _span(seconds: int) -> str:
    if seconds == DAY:
        return "day"
    if seconds == 60:
        return "minute"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"
