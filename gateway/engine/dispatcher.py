"""Delivering what the store holds: claim due deliveries, call providers, record what happened.

One loop per channel claims due deliveries in batches under a lease, so a slow provider on
one channel never holds up another, and a worker that dies loses nothing: its leases expire
and the deliveries are claimed again. Each send runs as its own task, bounded per channel;
results are recorded in batches. The dispatcher times, classifies and retries; the provider
only talks to its vendor.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from gateway import statuses
from gateway.clock import Clock
from gateway.engine.backoff import retry_delay
from gateway.engine.breakers import BreakerBoard, CircuitBreaker
from gateway.engine.outcomes import Outcomes
from gateway.engine.provider_pool import ProviderPool
from gateway.engine.throttle import Throttles
from gateway.errors import BODY_TOO_LONG, CredentialsRejectedError, DeliveryError, PermanentDeliveryError, TransientDeliveryError
from gateway.plugin_api import OutboundMessage, Provider, Sender, SendReceipt
from gateway.policy.templates import RenderedContent
from gateway.policy.view import PolicyHolder
from gateway.store import AttemptResult, ClaimedDelivery, NewEvent, Store

log = logging.getLogger(__name__)
IDLE_POLL: Final = 1.0


@dataclass(frozen=True)
class DispatchSettings:
    concurrency: int = 64
    batch: int = 256
    lease_seconds: float = 60.0
    send_timeout: float = 30.0
    max_attempts: int = 5
    retry_base: float = 2.0
    shutdown_grace: float = 10.0


class Dispatcher:
    """In-process delivery workers: one claiming loop per channel."""

    def __init__(
        self,
        store: Store,
        outcomes: Outcomes,
        policies: PolicyHolder,
        pool: Callable[[], ProviderPool],
        clock: Clock,
        settings: DispatchSettings,
    ) -> None:
        self._store = store
        self._policies = policies
        self._pool = pool
        self._clock = clock
        self._settings = settings
        self.owner = f"dispatcher-{secrets.token_hex(4)}"
        self._loops: dict[str, asyncio.Task[None]] = {}
        self._wakeups: dict[str, asyncio.Event] = {}
        self._in_flight: dict[str, dict[str, asyncio.Task[None]]] = {}
        self._unrecorded: dict[str, int] = {}  # delivery id → ticket of its final outcome, on its way to the store
        self._slot_freed: dict[str, asyncio.Event] = {}
        self._outcomes = outcomes
        self._breakers = BreakerBoard(clock)
        self._throttles = Throttles(clock)
        self._stopping = False
        self._claims: dict[str, int] = {}  # claims begun, per channel
        self._quiet: dict[str, int] = {}  # per channel, the number of the latest claim that found nothing more due
        self._quieted = asyncio.Event()
        self._claimed = 0  # deliveries claimed since start, over all channels

    @property
    def running(self) -> bool:
        return bool(self._loops) and not self._stopping

    @property
    def channels(self) -> frozenset[str]:
        """Channels with a claiming loop."""
        return frozenset(self._loops)

    def start(self) -> None:
        self.ensure_channels(spec.name for spec in self._policies.current.channels)

    def ensure_channels(self, names: Iterable[str]) -> None:
        """Claim on every channel in ``names`` too: a reloaded policy may bring new ones.

        Loops are never stopped by a reload: deliveries already queued on a channel the new
        policy dropped still get an answer (sent, or failed for want of a provider).
        """
        if self._stopping:
            return
        for name in names:
            if name not in self._loops:
                self._start_channel(name)

    async def wait_in_flight(self) -> None:
        """Return once every send in flight now has finished; sends started later are not waited for."""
        tasks = [task for flights in self._in_flight.values() for task in flights.values()]
        if tasks:
            await asyncio.wait(tasks)

    async def until_idle(self) -> None:
        """Return once nothing is due at the clock's current time and every outcome is recorded.

        Every channel claims again (as if woken) and finds nothing more due, no send is in
        flight, and the results are in the store; repeated until a round claims nothing, so a
        fallback that a failure made due is sent too. Work due only later on the clock (a
        retry, a ``send_at``) is not waited for. Tests and benchmarks wait on this, not on time.
        """
        while self.running:
            claimed_before, marks = self._claimed, dict(self._claims)
            self.wake()
            while not all(self._quiet.get(channel, 0) > mark for channel, mark in marks.items()):
                await self._quieted.wait()
            await self.wait_in_flight()
            await self._outcomes.drain()
            if self._claimed == claimed_before and not any(self._in_flight.values()):
                return

    def _note_quiet(self, channel: str, claim: int) -> None:
        self._quiet[channel] = claim
        self._quieted.set()
        self._quieted = asyncio.Event()

    def _start_channel(self, channel: str) -> None:
        self._claims[channel] = 0
        self._wakeups[channel] = asyncio.Event()
        self._slot_freed[channel] = asyncio.Event()
        self._in_flight[channel] = {}
        self._loops[channel] = asyncio.create_task(self._claim_loop(channel), name=f"dispatch-{channel}")

    def wake(self, channels: Iterable[str] | None = None) -> None:
        """Look for due work now (new deliveries were committed, or the clock moved)."""
        for channel in self._wakeups if channels is None else channels:
            event = self._wakeups.get(channel)
            if event is not None:
                event.set()

    async def stop(self) -> None:
        """Stop claiming; let in-flight sends finish within the grace period; release the rest."""
        self._stopping = True
        # Loops are woken, not cancelled: a claim already sent to the store must come back to
        # a loop that starts its sends, or those deliveries would sit leased until expiry.
        for event in (*self._wakeups.values(), *self._slot_freed.values()):
            event.set()
        await asyncio.gather(*self._loops.values(), return_exceptions=True)
        tasks = [task for flights in self._in_flight.values() for task in flights.values()]
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=self._settings.shutdown_grace)
            unfinished = [d for flights in self._in_flight.values() for d, task in flights.items() if task in pending]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            if unfinished:
                log.warning("released %d in-flight deliveries at shutdown", len(unfinished))
                await self._store.release(unfinished, self.owner)
        await self._outcomes.drain()
        self._loops.clear()

    async def _claim_loop(self, channel: str) -> None:
        wakeup = self._wakeups[channel]
        flights = self._in_flight[channel]
        while not self._stopping:
            free = self._settings.concurrency - len(flights)
            if free <= 0:
                self._slot_freed[channel].clear()
                await self._slot_freed[channel].wait()
                continue
            wakeup.clear()
            self._claims[channel] += 1
            claim = self._claims[channel]
            want = min(free, self._settings.batch)
            bucket = self._throttles.get(f"channel:{channel}", self._policies.current.channel_throughput(channel))
            if bucket is not None:
                want = bucket.take_up_to(want)
                if want == 0:  # throttled: the deliveries wait in the store, unleased, until a token is due
                    self._note_quiet(channel, claim)
                    await self._pause(wakeup, bucket.wait_time())
                    continue
            try:
                claimed = await self._store.claim_due(
                    channel, limit=want, owner=self.owner, lease_seconds=self._settings.lease_seconds, holding=self._holding(flights)
                )
            except Exception:
                log.exception("claiming %s deliveries failed", channel)
                claimed = []
            if bucket is not None:
                bucket.put_back(want - len(claimed))
            self._claimed += len(claimed)
            for delivery in claimed:  # none of them in flights: never two attempts of one delivery at once
                task = asyncio.create_task(self._deliver(delivery))
                flights[delivery.id] = task
                task.add_done_callback(functools.partial(self._finished, channel, delivery.id))
            if len(claimed) < want:  # nothing more is due now: sleep until woken or the next poll
                self._note_quiet(channel, claim)
                try:
                    await asyncio.wait_for(wakeup.wait(), IDLE_POLL)
                except TimeoutError:
                    pass

    def _holding(self, flights: dict[str, asyncio.Task[None]]) -> set[str]:
        """Deliveries this dispatcher still answers for: sends in flight, and outcomes not yet in the store.

        The store shows both as ``sending`` under a lease; were that lease to run out, a claim
        that did not leave them out would send them a second time.
        """
        done = self._outcomes.recorded_through
        self._unrecorded = {delivery: ticket for delivery, ticket in self._unrecorded.items() if ticket > done}
        return flights.keys() | self._unrecorded.keys()

    def _record(self, result: AttemptResult) -> None:
        """Queue a delivery's final outcome for the store, holding the delivery back from claims until it is there."""
        self._unrecorded[result.delivery_id] = self._outcomes.record(result)

    async def _pause(self, wakeup: asyncio.Event, seconds: float) -> None:
        """Wait ``seconds`` of clock time, or less if woken."""
        waits = [asyncio.ensure_future(wakeup.wait()), asyncio.ensure_future(self._clock.sleep(seconds))]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    def _finished(self, channel: str, delivery_id: str, _task: asyncio.Task[None]) -> None:
        self._in_flight[channel].pop(delivery_id, None)
        self._slot_freed[channel].set()

    async def _deliver(self, delivery: ClaimedDelivery) -> None:
        """One attempt: the channel's instances in failover order until one takes the message.

        An instance whose plugin declares a ``max_body_chars`` the body exceeds is never tried
        (with none left, the delivery fails for good, code ``body_too_long``), and one whose
        circuit is open is passed over; one that fails transiently hands the delivery to the
        next at once (the attempt is recorded). Only when every instance has failed or is
        unavailable does the delivery wait for its retry schedule.

        The final outcome goes to the store in a batch; until it is there, claims leave the
        delivery out (:meth:`_holding`).
        """
        if delivery.reclaimed:
            log.warning("delivery %s reclaimed after a lost lease (attempt %d)", delivery.id, delivery.attempt)
        policy = self._policies.current
        candidates = self._pool().candidates(policy, delivery.tenant, delivery.channel, test=delivery.mode == "test")
        message = _message(delivery, policy.sender(delivery.tenant, delivery.channel))
        fitting = [provider for provider in candidates if _fits(provider, message)]
        if candidates and not fitting:
            self._record(self._failure(delivery, candidates[-1].name, self._clock.now(), _too_long(candidates, message)))
            return
        candidates = fitting
        last: tuple[str | None, float, DeliveryError] | None = None
        reopen_at: list[float] = []
        # A send must end before the lease does, or another worker could start a second attempt.
        latest_start = self._clock.now() + self._settings.lease_seconds - self._settings.send_timeout
        for provider in candidates:
            breaker = self._breakers.get(provider.name, policy.breaker_policy(provider.name))
            if not breaker.allow():
                reopen_at.append(breaker.next_probe_at or self._clock.now())
                continue
            bucket = self._throttles.get(f"instance:{provider.name}", policy.instance_rate(provider.name))
            while bucket is not None and not bucket.try_take():
                await self._clock.sleep(bucket.wait_time())
            if self._clock.now() > latest_start:
                last = last or (provider.name, self._clock.now(), TransientDeliveryError("waited too long for a send slot"))
                break
            if last is not None:  # the instance before this one failed: record it, not final
                self._outcomes.record(self._failure(delivery, *last, final=False))
            started = self._clock.now()
            outcome = await self._send(provider, message)
            self._note_health(breaker, outcome)
            if isinstance(outcome, SendReceipt):
                self._record(self._success(delivery, provider, started, outcome))
                return
            last = (provider.name, started, outcome)
            if not _provider_fault(outcome):
                break  # refused for good, or the recipient's fault: another instance would fare no better
        if last is None:
            what = "circuit open for " + ", ".join(p.name for p in candidates) if candidates else "no provider instance serves it"
            wait = max(min(reopen_at) - self._clock.now(), 0.0) if reopen_at else None
            # Named after the last instance passed over, or the one it last went to: where an operator should look.
            tried = candidates[-1].name if candidates else delivery.provider
            last = (tried, self._clock.now(), TransientDeliveryError(f"{delivery.channel} unavailable: {what}", retry_after=wait))
        self._record(self._failure(delivery, *last))

    async def _send(self, provider: Provider, message: OutboundMessage) -> SendReceipt | DeliveryError:
        """The provider's answer, with timeouts and plugin bugs turned into transient errors."""
        try:
            async with asyncio.timeout(self._settings.send_timeout):
                return await provider.send(message)
        except DeliveryError as err:
            return _redacted(provider, err)
        except TimeoutError:
            return TransientDeliveryError(f"provider did not answer within {self._settings.send_timeout:g}s")
        except Exception as err:  # a plugin bug: keep the message, retry, and say so loudly
            trace = provider.redact("".join(traceback.format_exception(err)))
            log.error("provider %s raised unexpectedly for delivery %s:\n%s", provider.name, message.delivery_id, trace)
            return TransientDeliveryError(provider.redact(f"provider plugin error: {type(err).__name__}: {err}"))

    def _note_health(self, breaker: CircuitBreaker, outcome: SendReceipt | DeliveryError) -> None:
        """Feed the instance's breaker: the provider's own failures count against it, any answer about the message for it."""
        transition = breaker.record_failure() if _provider_fault(outcome) else breaker.record_success()
        if transition is None:
            return
        log.warning("provider instance %s: circuit %s (%s)", transition.name, transition.to_state, transition.reason)
        data = {"instance": transition.name, "from": transition.from_state, "to": transition.to_state, "reason": transition.reason}
        self._outcomes.event(NewEvent(transition.event, transition.name, transition.at, data))

    def _success(self, delivery: ClaimedDelivery, provider: Provider, started: float, receipt: SendReceipt) -> AttemptResult:
        return AttemptResult(
            delivery_id=delivery.id,
            attempt=delivery.attempt,
            provider=provider.name,
            started_at=started,
            finished_at=self._clock.now(),
            outcome="sent",
            status=statuses.SENT,
            provider_message_id=receipt.provider_message_id,
            detail=dict(receipt.detail),
        )

    def _failure(
        self, delivery: ClaimedDelivery, provider: str | None, started: float, error: DeliveryError, *, final: bool = True
    ) -> AttemptResult:
        """What a failed attempt does: retry on the schedule, give up, or leave it to fallback.

        Not ``final``: the next provider instance takes the delivery, so this only records the attempt.
        """
        now = self._clock.now()
        if not final:
            return AttemptResult(
                delivery.id, delivery.attempt, provider, started, now,
                "transient" if isinstance(error, TransientDeliveryError) else "permanent", statuses.SENDING,
                error=error.message, detail=_detail(error), final=False,
            )
        transient = isinstance(error, TransientDeliveryError)
        status, retry_at, dead_reason, message = statuses.FAILED, None, None, error.message
        if isinstance(error, TransientDeliveryError):
            schedule = self._policies.current.retry_schedule(delivery.tenant, delivery.channel)
            max_attempts = schedule.max_attempts if schedule else self._settings.max_attempts
            if delivery.attempt < max_attempts:
                scheduled = schedule.delay(delivery.attempt) if schedule else None
                retry_at = now + retry_delay(delivery.attempt, base=self._settings.retry_base, scheduled=scheduled, retry_after=error.retry_after)
                status = statuses.SENDING
                if delivery.expires_at is not None and retry_at >= delivery.expires_at:
                    status, retry_at, dead_reason = statuses.DEAD_LETTERED, None, statuses.EXPIRED
                    message = f"expires before the next attempt would run: {error.message}"
            else:
                status, dead_reason = statuses.DEAD_LETTERED, statuses.RETRIES_EXHAUSTED
                message = f"gave up after {delivery.attempt} attempts: {error.message}"
        return AttemptResult(
            delivery_id=delivery.id,
            attempt=delivery.attempt,
            provider=provider,
            started_at=started,
            finished_at=now,
            outcome="transient" if transient else "permanent",
            status=status,
            error=message,
            detail=_detail(error),
            retry_at=retry_at,
            dead_reason=dead_reason,
        )


def _provider_fault(outcome: SendReceipt | DeliveryError) -> bool:
    """Whether the instance itself failed: down, slow, throttling, or refusing its credentials.

    A refusal of the message (permanent) or a fault of the recipient (a bad number, a full
    mailbox) is an answer: the instance works, and another one would answer the same.
    """
    if isinstance(outcome, CredentialsRejectedError):
        return True
    return isinstance(outcome, TransientDeliveryError) and not outcome.recipient_fault


def _fits(provider: Provider, message: OutboundMessage) -> bool:
    """Whether the body is no longer than the provider's plugin says it takes."""
    limit = provider.limits.max_body_chars
    return limit is None or message.body is None or len(message.body) <= limit


def _too_long(candidates: Sequence[Provider], message: OutboundMessage) -> PermanentDeliveryError:
    longest = max(provider.limits.max_body_chars or 0 for provider in candidates)
    text = f"the body is {len(message.body or '')} characters; its provider instances take at most {longest}"
    return PermanentDeliveryError(text, code=BODY_TOO_LONG)


def _redacted(provider: Provider, error: DeliveryError) -> DeliveryError:
    """``error`` with the instance's secrets masked in its message and detail: they are logged, stored and shown."""
    error.message = provider.redact(error.message)
    error.detail = {key: _redact_value(provider, value) for key, value in error.detail.items()}
    return error


def _redact_value(provider: Provider, value: object) -> object:
    if isinstance(value, str):
        return provider.redact(value)
    if isinstance(value, Mapping):
        return {key: _redact_value(provider, item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact_value(provider, item) for item in value]
    return value


def _detail(error: DeliveryError) -> dict[str, object]:
    detail: dict[str, object] = dict(error.detail)
    if error.code:
        detail["code"] = error.code
    return detail


def _message(delivery: ClaimedDelivery, sender: Sender | None) -> OutboundMessage:
    content = RenderedContent.from_dict(delivery.content)
    return OutboundMessage(
        delivery_id=delivery.id,
        notification_id=delivery.notification_id,
        tenant=delivery.tenant,
        channel=delivery.channel,
        to=delivery.address,
        recipient=delivery.recipient,
        body=content.body,
        subject=content.subject,
        html=content.html,
        template_id=delivery.template_id,
        provider_template=content.provider_template,
        attempt=delivery.attempt,
        metadata=delivery.metadata,
        sender=sender,
    )

