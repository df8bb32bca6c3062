"""The life of a delivery: given where it stands and what just happened, what happens next.

Pure rules, with no I/O: the dispatcher plans retries with them, and the store's write jobs
(attempt results, receipts, expiry, opt-outs, lost leases, fallback moves, skips, replays,
acknowledgements) apply them, so a
delivery's fate is decided in this one place whichever path moved it. A second store
implements storage, never these rules.

:func:`step` takes a delivery's state and a *happening* and returns a :class:`Transition`: the
new status, when it is tried again, why it was given up on, and the line of history to write
(with the event tenants are told, when there is one). A happening that cannot apply (a late
receipt that would move the status back, a retry of a delivery a receipt already settled) is
a transition with no entry, which changes nothing.

:func:`fallback_moves` decides, for a notification sending channel after channel, which
waiting channels start and which are no longer needed. :func:`plan_retry` says when a failed
attempt (of a delivery or of an event webhook) is tried again, or why it is not.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from gateway import statuses

MAX_DELAY: Final = 3600.0
JITTER: Final = 0.2

DELIVERY_EVENTS: Final = {
    statuses.SENT: "message.sent",
    statuses.DELIVERED: "message.delivered",
    statuses.OPENED: "message.opened",
    statuses.CLICKED: "message.clicked",
    statuses.READ: "message.read",
}
"""The delivery statuses tenants hear about one by one; a failure is told once, for the whole message (``message.failed``)."""
DEAD_LETTERED: Final = "dead_lettered"
"""The action of a delivery's failure that put it in the dead-letter queue, told as :data:`DEAD_LETTERED_EVENT`."""
DEAD_LETTERED_EVENT: Final = "message.dead_lettered"


# -- retries -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetrySchedule:
    """When to try again after a transient failure.

    ``delays`` are the waits before each retry, in order, the last one repeating; without
    them the wait is exponential backoff from ``base``: base, 2×, 4×… capped at an hour, each
    with ±20% jitter so what failed together does not all come back together. ``max_attempts``
    counts every attempt, the first included.
    """

    max_attempts: int
    delays: tuple[float, ...] = ()
    base: float = 2.0

    def delay(self, attempt: int, rand: random.Random | None = None) -> float:
        """How long to wait after failed attempt number ``attempt`` (1-based)."""
        if self.delays:
            return self.delays[max(min(attempt, len(self.delays)), 1) - 1]
        jitter = (rand or random).uniform(1 - JITTER, 1 + JITTER)
        return min(self.base * 2.0 ** max(attempt - 1, 0), MAX_DELAY) * jitter


@dataclass(frozen=True, slots=True)
class RetryPlan:
    """A failed attempt's sequel: tried again at ``retry_at``, or given up on for ``give_up`` with ``reason``."""

    retry_at: float | None = None
    give_up: str | None = None
    reason: str = ""


def plan_retry(
    schedule: RetrySchedule, attempt: int, now: float, error: str, *,
    retry_after: float | None = None, expires_at: float | None = None, rand: random.Random | None = None,
) -> RetryPlan:
    """When failed attempt number ``attempt`` is tried again, or why never.

    The schedule's wait, unless the other side's ``Retry-After`` asks for longer. Past the
    schedule's last attempt it gives up (``retries_exhausted``); a retry that would start
    after ``expires_at`` gives up now (``expired``) rather than wait for nothing.
    """
    if attempt >= schedule.max_attempts:
        return RetryPlan(give_up=statuses.RETRIES_EXHAUSTED, reason=f"gave up after {attempt} attempts: {error}")
    retry_at = now + max(schedule.delay(attempt, rand), retry_after or 0.0)
    if expires_at is not None and retry_at >= expires_at:
        return RetryPlan(give_up=statuses.EXPIRED, reason=f"expires before the next attempt would run: {error}")
    return RetryPlan(retry_at=retry_at, reason=error)


# -- what can happen to a delivery ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Delivery:
    """What the rules need to know of a delivery: its status, whether a later channel waits on it (fallback),
    and whether it is a dead letter (failed, with a dead reason)."""

    status: str
    fallback_waiting: bool = False
    dead_letter: bool = False


@dataclass(frozen=True, slots=True)
class Sent:
    """A provider instance took the message."""


@dataclass(frozen=True, slots=True)
class Failover:
    """An instance failed and the next one takes the delivery at once: only the attempt is noted."""

    error: str | None


@dataclass(frozen=True, slots=True)
class Retry:
    """Every instance failed for now; the retry schedule allows another attempt at ``at``."""

    at: float
    error: str | None


@dataclass(frozen=True, slots=True)
class Failed:
    """An attempt failed for good: refused (``give_up`` None), or the schedule ran out (``give_up`` says why).

    ``opted_out``: the provider refused because the recipient opted out, which the gateway
    records so it never sends there again.
    """

    error: str | None
    give_up: str | None = None
    opted_out: bool = False


@dataclass(frozen=True, slots=True)
class OptedOut:
    """The recipient opted out of ``channel`` after the message was accepted (a scheduled send, a long queue): never send it."""

    channel: str


@dataclass(frozen=True, slots=True)
class Receipt:
    """A provider's receipt: the delivery reached ``status`` (sent, delivered, opened, clicked, read, bounced, failed)."""

    status: str
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Expired:
    """Its ``expires_at`` passed before it could be sent."""


@dataclass(frozen=True, slots=True)
class LeaseLost:
    """The worker holding it stopped renewing its lease; another attempt takes it over."""


@dataclass(frozen=True, slots=True)
class FallbackDue:
    """The channel before this waiting one failed, or was not delivered in time."""

    reason: str


@dataclass(frozen=True, slots=True)
class NotNeeded:
    """An earlier channel got through, so this waiting one is never sent."""


@dataclass(frozen=True, slots=True)
class Skipped:
    """Not to be sent at all, for ``reason`` (a code of :data:`SKIP_REASONS`): the recipient does not want it or cannot get it.

    Applied when a message to a contact is accepted (a channel it opted out of, or has no
    address on) and to a delivery not sent yet whose contact was deleted (its address erased).
    """

    reason: str


SKIP_REASONS: Final = {
    "no_address": "the contact has no address on this channel",
    "channel_opted_out": "the contact opted out of this channel",
    "category_opted_out": "the contact opted out of this category of message",
    "opted_out": "the address opted out of this channel (a STOP reply or the like); only the recipient can opt back in",
    "contact_deleted": "the contact was deleted and its address erased before this was sent",
}
"""Why a delivery was skipped, by code (shown as the delivery's ``skip_reason``), with the words its line of history says."""


@dataclass(frozen=True, slots=True)
class Held:
    """Its tenant was suspended between the claim and the send: not sent, the attempt not counted, due again once it is active."""

    reason: str


@dataclass(frozen=True, slots=True)
class Replayed:
    """An operator put a dead letter back in the queue."""

    actor: str


@dataclass(frozen=True, slots=True)
class Acknowledged:
    """Someone (``by``: an API key's name) acknowledged the notification: channels still waiting their fallback turn are not needed."""

    by: str


Happening = (
    Sent | Failover | Retry | Failed | OptedOut | Receipt | Expired | LeaseLost | Held | FallbackDue | NotNeeded | Skipped | Replayed | Acknowledged
)


@dataclass(frozen=True, slots=True)
class Entry:
    """One line of history; ``event`` is the type tenants are told it as, None when it is not told."""

    action: str
    from_status: str | None
    to_status: str | None
    reason: str | None
    event: str | None = None


@dataclass(frozen=True, slots=True)
class Transition:
    """What a happening does to a delivery. No ``entry``: nothing changes and nothing is written."""

    status: str
    entry: Entry | None = None
    retry_at: float | None = None
    dead_reason: str | None = None
    error: str | None = None
    settles_notification: bool = False
    """The notification's status may change, and with fallback its other channels may move."""
    records_opt_out: bool = False


EXPIRED_MESSAGE: Final = "expired before it could be sent"
LEASE_LOST_MESSAGE: Final = "worker lost its lease; reclaimed"
NOT_NEEDED_MESSAGE: Final = "an earlier channel got through"
ACKNOWLEDGED_MESSAGE: Final = "acknowledged"
ACKNOWLEDGED_EVENT: Final = "message.acknowledged"


def acknowledgement_entry(by: str, note: str | None) -> Entry:
    """The notification's own line of history for an acknowledgement, told as ``message.acknowledged``."""
    reason = f"{ACKNOWLEDGED_MESSAGE} by {by}" + (f": {note}" if note else "")
    return Entry(ACKNOWLEDGED_MESSAGE, None, None, reason, ACKNOWLEDGED_EVENT)


def step(delivery: Delivery, happening: Happening) -> Transition:
    """What ``happening`` does to ``delivery``: never backwards, never out of a terminal status."""
    current = delivery.status
    unchanged = Transition(current)
    match happening:
        case Sent() | Failover() | Retry() | Failed() if current not in statuses.IN_FLIGHT:
            # A receipt settled it while the attempt ran (the vendor had it after all): keep what
            # the receipt said, and never schedule another attempt, which would send it twice.
            return Transition(current, records_opt_out=isinstance(happening, Failed) and happening.opted_out)
        case Sent():
            return _move(current, statuses.SENT, "sent", None)
        case Failover(error=error):
            return Transition(current, Entry("failover", None, None, error), error=error)
        case Retry(at=at, error=error):
            return Transition(current, Entry("retry_scheduled", None, None, error), retry_at=at, error=error)
        case Failed(error=error, give_up=give_up, opted_out=opted_out):
            if give_up is None and not delivery.fallback_waiting:
                give_up = statuses.PERMANENT
            moved = _move(current, statuses.FAILED, DEAD_LETTERED if give_up else "failed", error, give_up)
            return Transition(
                moved.status, moved.entry, dead_reason=moved.dead_reason, error=error,
                settles_notification=moved.settles_notification, records_opt_out=opted_out,
            )
        case OptedOut(channel=channel):
            if current not in statuses.IN_FLIGHT:
                return unchanged
            return step(delivery, Failed(f"the recipient opted out of {channel} after the message was accepted"))
        case Receipt(status=status, reason=reason):
            return _move(current, status, "receipt", reason)
        case Expired():
            if current not in statuses.IN_FLIGHT:
                return unchanged
            return _move(current, statuses.FAILED, DEAD_LETTERED, EXPIRED_MESSAGE, statuses.EXPIRED)
        case LeaseLost():
            if current != statuses.SENDING:
                return unchanged
            return Transition(current, Entry("lease_expired", None, None, LEASE_LOST_MESSAGE))
        case Held(reason=reason):
            if current == statuses.QUEUED:
                return Transition(current, Entry("held", None, None, reason))
            if current != statuses.SENDING:
                return unchanged
            # Back to queued: it was claimed, never sent (the one other backward move, besides a replay).
            return Transition(statuses.QUEUED, Entry("held", current, statuses.QUEUED, reason), settles_notification=True)
        case FallbackDue(reason=reason):
            if current != statuses.WAITING:
                return unchanged
            return _move(current, statuses.QUEUED, "fallback", reason)
        case NotNeeded():
            if current != statuses.WAITING:
                return unchanged
            return _move(current, statuses.SKIPPED, "skipped", NOT_NEEDED_MESSAGE)
        case Skipped(reason=reason):
            return _move(current, statuses.SKIPPED, "skipped", f"{reason}: {SKIP_REASONS.get(reason, reason)}")
        case Replayed(actor=actor):
            if current != statuses.FAILED or not delivery.dead_letter:
                return unchanged
            return Transition(statuses.QUEUED, Entry("replayed", current, statuses.QUEUED, f"replayed by {actor}"), settles_notification=True)
        case Acknowledged(by=by):
            if current != statuses.WAITING:
                return unchanged  # what is on its way or done is not taken back; only what waits its turn is called off
            return _move(current, statuses.SKIPPED, "skipped", f"{ACKNOWLEDGED_MESSAGE} by {by}")
    raise TypeError(f"not a happening: {happening!r}")  # pragma: no cover - the match above is exhaustive for mypy


def _move(current: str, new: str, action: str, reason: str | None, dead_reason: str | None = None) -> Transition:
    """``current`` → ``new`` if the status vocabulary allows it (forward only), with its history line.

    A failure that dead-letters the delivery (``dead_reason`` set) is told as ``message.dead_lettered``.
    """
    if not statuses.can_transition(current, new):
        return Transition(current)
    said = f"{dead_reason}: {reason}" if dead_reason and reason else dead_reason or reason
    entry = Entry(action, current, new, said, DEAD_LETTERED_EVENT if dead_reason else DELIVERY_EVENTS.get(new))
    return Transition(new, entry, dead_reason=dead_reason, settles_notification=True)


# -- channel after channel -----------------------------------------------------------------


FALLBACK_FAILED: Final = "the channel before it failed"


def fallback_moves(channel_statuses: Sequence[str], *, waits_for_delivery: bool) -> list[tuple[int, Happening]]:
    """The waiting channels of a ``fallback`` notification that move now, by position in ``channel_statuses``.

    An earlier channel that was delivered (or sent, when the notification does not wait for
    delivery: no ``fallback_after``) makes every waiting one unnecessary. When nothing is in
    flight or sent any more, every channel so far has failed, so the first waiting one starts.
    """
    waiting = [index for index, status in enumerate(channel_statuses) if status == statuses.WAITING]
    if not waiting:
        return []
    found = set(channel_statuses)
    if found & statuses.REACHED or (not waits_for_delivery and statuses.SENT in found):
        return [(index, NotNeeded()) for index in waiting]
    if not found & (statuses.IN_FLIGHT | {statuses.SENT}):
        return [(waiting[0], FallbackDue(FALLBACK_FAILED))]
    return []


def overdue_reason(fallback_after: float) -> str:
    """Why a waiting channel starts when the one before it was not delivered in time."""
    return f"the channel before it was not delivered within {fallback_after:g}s"
