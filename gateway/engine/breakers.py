"""Circuit breakers per provider instance, so an outage costs one probe per cooldown, not a retry storm.

Without them every due delivery for a provider that is down is claimed, sent, fails and is
rescheduled: the queue churns, the provider is hammered while it recovers, and each attempt
burns one of the delivery's retries. A breaker that has seen ``failures`` transient failures
within ``window`` seconds *opens*: :meth:`CircuitBreaker.allow` says no and the dispatcher
leaves the deliveries queued. After ``cooldown`` it is *half-open* and lets exactly one probe
through; the probe's outcome closes it or opens it again for a fresh cooldown.

Only the caller knows what counts as a failure. The dispatcher records a failure for a
``TransientDeliveryError`` (timeouts, 5xx, 429: the provider is unwell) or a
``CredentialsRejectedError`` (the instance is misconfigured: every send will fail) and a success
whenever the provider answered otherwise, including a ``PermanentDeliveryError`` (it is up, it
refused that one message). Counting permanent errors would let one batch of bad phone numbers take a healthy
provider out of service.

Half-open is a matter of time, not of a call: :attr:`CircuitBreaker.state` reads ``half_open``
as soon as the cooldown has passed, so a readiness view is right even when nothing is sending.
The transitions a caller has to tell someone about, into ``open`` and into ``closed``, are
returned by :meth:`~CircuitBreaker.record_failure` and :meth:`~CircuitBreaker.record_success`
as a :class:`Transition` carrying the event name to emit.

Time comes from a :class:`~gateway.clock.Clock`, so tests move it by hand.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Final, Literal

from gateway.clock import Clock
from gateway.policy.view import BreakerPolicy

State = Literal["closed", "open", "half_open"]
OPENED: Final = "provider.circuit_opened"
CLOSED: Final = "provider.circuit_closed"


@dataclass(frozen=True, slots=True)
class Transition:
    """A breaker opened or closed: the event the caller writes to the history."""

    name: str
    from_state: State
    to_state: Literal["open", "closed"]
    at: float
    reason: str

    @property
    def event(self) -> str:
        """``provider.circuit_opened`` or ``provider.circuit_closed``."""
        return OPENED if self.to_state == "open" else CLOSED


class CircuitBreaker:
    """The breaker of one provider instance."""

    def __init__(self, name: str, policy: BreakerPolicy, clock: Clock) -> None:
        self.name = name
        self.policy = policy
        self._clock = clock
        self._failures: deque[float] = deque()
        self._opened_at: float | None = None
        self._probe_since: float | None = None

    @property
    def state(self) -> State:
        if self._opened_at is None:
            return "closed"
        return "open" if self._cooling(self._opened_at) else "half_open"

    @property
    def next_probe_at(self) -> float | None:
        """When :meth:`allow` will next say yes to someone; ``None`` while closed.

        Lets the dispatcher sleep until then instead of asking again and again.
        """
        if self._opened_at is None:
            return None
        since = self._opened_at if self._probe_since is None else self._probe_since
        return since + self.policy.cooldown

    def allow(self) -> bool:
        """Whether a send may go to this provider now; call it right before sending.

        Closed: yes. Open: no. Half-open: yes to the first caller (the probe), no to the rest
        until the probe is recorded. A probe never recorded (its task was cancelled) is
        presumed lost after another cooldown, and the next caller becomes the probe.
        """
        state = self.state
        if state != "half_open":
            return state == "closed"
        if self._probe_since is not None and self._cooling(self._probe_since):
            return False
        self._probe_since = self._clock.now()
        return True

    def record_failure(self) -> Transition | None:
        """A transient failure; the transition when it opened the circuit."""
        state, now = self.state, self._clock.now()
        if state == "half_open":
            return self._open(now, "half_open", "probe failed")
        if state == "open":
            return None  # a send that started before the circuit opened; the cooldown stands
        self._failures.append(now)
        while self._failures and self._failures[0] <= now - self.policy.window:
            self._failures.popleft()
        if len(self._failures) < self.policy.failures:
            return None
        return self._open(now, "closed", f"{len(self._failures)} failures in {self.policy.window:g}s")

    def record_success(self) -> Transition | None:
        """The provider answered; the transition when that closed the circuit.

        In closed state failures are not forgiven by successes in between: a provider that
        fails every other send still opens at ``failures`` within the window.
        """
        if self.state != "half_open":
            return None  # closed: nothing to do; open: a late answer to a send from before
        self._opened_at = self._probe_since = None
        self._failures.clear()
        return Transition(self.name, "half_open", "closed", self._clock.now(), "probe succeeded")

    def _open(self, now: float, from_state: State, reason: str) -> Transition:
        self._opened_at, self._probe_since = now, None
        self._failures.clear()
        return Transition(self.name, from_state, "open", now, reason)

    def _cooling(self, since: float) -> bool:
        # A wall clock stepped back past ``since`` ends the cooldown rather than prolonging it.
        return since <= self._clock.now() < since + self.policy.cooldown


class BreakerBoard:
    """The breakers of all provider instances, by instance name."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._breakers: dict[str, CircuitBreaker] = {}

    def get(self, name: str, policy: BreakerPolicy) -> CircuitBreaker:
        """The breaker of ``name``, created on first use; a changed ``policy`` applies at once.

        A policy reload keeps the breaker's state: an open circuit stays open, with the new
        cooldown counted from when it opened.
        """
        breaker = self._breakers.get(name)
        if breaker is None:
            breaker = self._breakers[name] = CircuitBreaker(name, policy, self._clock)
        elif breaker.policy != policy:
            breaker.policy = policy
        return breaker

    def find(self, name: str) -> CircuitBreaker | None:
        """The breaker of ``name`` if it has one yet (an instance that has never sent has none: it is closed)."""
        return self._breakers.get(name)

    def states(self) -> dict[str, str]:
        """Each instance's state, for readiness and metrics."""
        return {name: breaker.state for name, breaker in sorted(self._breakers.items())}
