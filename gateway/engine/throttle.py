"""Token buckets that hold sends to the rates operators set in policy (``10/s`` per instance or channel).

Providers enforce their own limits with 429s; hitting them costs an attempt and a backoff
per delivery. Holding sends back here instead keeps deliveries queued at no cost, and a
per-channel rate lets an operator spread a campaign out. A bucket holds up to ``burst``
tokens, refills at ``rate`` per second of clock time and starts full, so over any stretch of
``T`` seconds it grants at most ``rate * T + burst`` sends.

The level is kept as a float and refilled from clock differences, which are exact for
nearby timestamps. A shortfall below :data:`TOLERANCE` seconds' worth of tokens still
counts as available: at today's epoch a float timestamp resolves only to about 0.24 µs, so
a caller that waits exactly :meth:`TokenBucket.wait_time` may wake a hair early, and it
must not be turned away and made to wait again. The debt is carried, never forgiven, so
it cannot add up to an extra send.

Time comes from a :class:`~gateway.clock.Clock`, so tests move it by hand.
"""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict
from typing import Final

from gateway.clock import Clock
from gateway.policy.durations import parse_rate

TOLERANCE: Final = 1e-6
"""Seconds of refill by which a caller may be early and still get its tokens."""


class TokenBucket:
    """At most ``burst`` sends at once and ``rate`` per second sustained."""

    def __init__(self, rate: float, burst: float | None = None, *, clock: Clock, tokens: float | None = None) -> None:
        """``burst`` defaults to one second's worth (at least 1); ``tokens``, the starting level, to full."""
        if not rate > 0:
            raise ValueError(f"rate must be positive, not {rate}")
        self.rate = rate
        self.burst = max(1.0, rate) if burst is None else burst
        if self.burst < 1:
            raise ValueError(f"burst must be at least 1 (one send), not {self.burst}")
        self._clock = clock
        self._tokens = self.burst if tokens is None else min(tokens, self.burst)
        self._updated = clock.now()

    def available(self) -> float:
        """Tokens in the bucket now."""
        return max(0.0, self._refill())

    def try_take(self, n: float = 1) -> bool:
        """Take ``n`` tokens if they are all there; otherwise take none."""
        if not self._has(self._refill(), n):
            return False
        self._tokens -= n
        return True

    def take_up_to(self, n: int) -> int:
        """Take as many whole tokens as there are, up to ``n``; how many were taken."""
        tokens = self._refill()
        taken = max(0, min(n, math.floor(tokens + self._slack())))
        self._tokens -= taken
        return taken

    def put_back(self, n: float) -> None:
        """Return tokens taken but not used (a claim found fewer due deliveries than it took)."""
        self._tokens = min(self.burst, self._refill() + n)

    def wait_time(self, n: float = 1) -> float:
        """Seconds until ``n`` tokens are there (0 if now); ``inf`` if ``n`` exceeds ``burst``."""
        if n > self.burst:
            return math.inf
        tokens = self._refill()
        return 0.0 if self._has(tokens, n) else (n - tokens) / self.rate

    def _has(self, tokens: float, n: float) -> bool:
        return tokens + self._slack() >= n

    def _slack(self) -> float:
        return TOLERANCE * self.rate

    def _refill(self) -> float:
        now = self._clock.now()
        # A wall clock stepped back earns nothing, and the bucket keeps refilling from there on.
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        self._updated = now
        return self._tokens


class Throttles:
    """Token buckets by key, such as ``channel:sms`` or ``instance:twilio-main``, kept across reloads."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def get(self, key: str, rate: str | None) -> TokenBucket | None:
        """The bucket for ``key`` at ``rate`` (``10/s``, ``600/m``); ``None`` when ``rate`` is ``None`` (unlimited).

        A changed rate (a policy reload) replaces the bucket; its tokens carry over, capped at
        the new burst, so a reload neither grants a fresh burst nor starves the key.
        """
        if rate is None:
            self._buckets.pop(key, None)
            return None
        per_second = parse_rate(rate)
        bucket = self._buckets.get(key)
        if bucket is None or bucket.rate != per_second:
            tokens = None if bucket is None else bucket.available()
            bucket = self._buckets[key] = TokenBucket(per_second, clock=self._clock, tokens=tokens)
        return bucket


class SourceLimits:
    """A budget of refusals per caller address, for requests that carry no key (provider callbacks).

    Only callbacks that fail verification spend it: a vendor's genuine callbacks are never held
    back, however many it sends, while a source sending forgeries is told to wait once it has
    spent ``burst`` and then ``rate`` a second. An IPv6 address counts by its /64, which one
    host usually holds whole. The ``max_sources`` addresses seen last are remembered; one
    forgotten starts again with a full budget, so memory stays bounded however many addresses
    call. A ``rate`` of 0 limits nothing.
    """

    def __init__(self, rate: float, burst: float, *, clock: Clock, max_sources: int = 10_000) -> None:
        self._rate = rate
        self._burst = burst
        self._clock = clock
        self._max_sources = max_sources
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def wait(self, source: str | None) -> float:
        """0.0 if ``source`` may call now, else the seconds until its budget of refusals allows one more."""
        if self._rate <= 0:
            return 0.0
        bucket = self._buckets.get(source_key(source))
        return 0.0 if bucket is None or bucket.available() >= 1 else bucket.wait_time()

    def refused(self, source: str | None) -> None:
        """Spend one of ``source``'s refusals: it sent a callback that failed verification."""
        if self._rate <= 0:
            return
        key = source_key(source)
        bucket = self._buckets.pop(key, None) or TokenBucket(self._rate, self._burst, clock=self._clock)
        self._buckets[key] = bucket  # the most recently refused last
        if len(self._buckets) > self._max_sources:
            self._buckets.popitem(last=False)
        bucket.try_take()


class InstanceLimits:
    """A rate for all callbacks to one provider instance, verified or not, so a flood of them cannot starve sends.

    Every callback to an instance spends one of its tokens before its body is read; past
    ``burst`` at once and ``rate`` a second it is a 429 that costs neither a read nor a write,
    and the vendor retries it later. Only instances that take callbacks are counted (an
    unknown one is a 404 first). A ``rate`` of 0 limits nothing.
    """

    def __init__(self, rate: float, burst: float, *, clock: Clock) -> None:
        self._rate = rate
        self._burst = burst
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, instance: str) -> float:
        """0.0 if a callback to ``instance`` may come in now (and count it), else the seconds until one may."""
        if self._rate <= 0:
            return 0.0
        bucket = self._buckets.get(instance)
        if bucket is None:
            bucket = self._buckets[instance] = TokenBucket(self._rate, self._burst, clock=self._clock)
        return 0.0 if bucket.try_take() else bucket.wait_time()


def source_key(source: str | None) -> str:
    """What a caller address counts as: itself, or for IPv6 its /64."""
    try:
        address = ipaddress.ip_address(source or "")
    except ValueError:
        return source or ""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)
