"""One attempt at one delivery: the channel's provider instances in failover order, and what the answer means.

The dispatcher decides *when* a delivery is tried; this decides *how*: which instances may take
it (its body fits, its circuit is closed, its rate allows), calling them with a timeout, feeding
their breakers, and turning the last answer into an :class:`AttemptResult`: sent, a retry on the
schedule, a failure for fallback, or a dead letter. What a plugin says is redacted of its
instance's secrets before anything keeps it.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from gateway import statuses
from gateway.clock import Clock
from gateway.engine.breakers import BreakerBoard, CircuitBreaker
from gateway.engine.instance_health import InstanceHealth
from gateway.engine.outcomes import Outcomes
from gateway.engine.provider_pool import ProviderPool
from gateway.engine.throttle import Throttles
from gateway.errors import BODY_TOO_LONG, CredentialsRejectedError, DeliveryError, PermanentDeliveryError, TransientDeliveryError
from gateway.lifecycle import Held, RetryPlan, RetrySchedule, plan_retry
from gateway.logconfig import fields
from gateway.metrics import Metrics
from gateway.plugin_api import OutboundMessage, Provider, Sender, SendReceipt
from gateway.policy.templates import RenderedContent
from gateway.policy.view import PolicyHolder
from gateway.store import AttemptResult, ClaimedDelivery, NewEvent

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DispatchSettings:
    concurrency: int = 64
    batch: int = 256
    lease_seconds: float = 60.0
    send_timeout: float = 30.0
    max_attempts: int = 5
    retry_base: float = 2.0
    shutdown_grace: float = 10.0



class Attempts:
    """Makes attempts: shared by every channel's loop, with one breaker per provider instance."""

    def __init__(
        self, outcomes: Outcomes, policies: PolicyHolder, pool: Callable[[], ProviderPool], clock: Clock,
        settings: DispatchSettings, throttles: Throttles, metrics: Metrics | None = None,
    ) -> None:
        self._outcomes = outcomes
        self._metrics = metrics or Metrics()
        self._policies = policies
        self._pool = pool
        self._clock = clock
        self._settings = settings
        self._throttles = throttles
        self._breakers = BreakerBoard(clock)
        self.health = InstanceHealth(clock)
        self._backoff = RetrySchedule(settings.max_attempts, base=settings.retry_base)  # for routes with no retry schedule

    async def make(self, delivery: ClaimedDelivery) -> AttemptResult | Held:
        """One attempt: the channel's instances in failover order until one takes the message; its final result.

        An instance whose plugin declares a ``max_body_chars`` the body exceeds is never tried
        (with none left, the delivery fails for good, code ``body_too_long``), and one whose
        circuit is open is passed over; one that fails transiently hands the delivery to the
        next at once (the attempt is recorded). Only when every instance has failed or is
        unavailable does the delivery wait for its retry schedule.

        A failed instance before the next one is recorded here (not final); the final result
        is the caller's to record. When the tenant is suspended by the time a send would start
        (a policy reload while the delivery waited for a send slot), nothing is sent: the
        answer is :class:`~gateway.lifecycle.Held`, for the caller to give the delivery back.
        """
        if delivery.reclaimed:
            log.warning("delivery %s reclaimed after a lost lease (attempt %d)", delivery.id, delivery.attempt)
        policy = self._policies.current
        candidates = self._pool().candidates(policy, delivery.tenant, delivery.channel, test=delivery.mode == "test")
        message = _message(delivery, policy.sender(delivery.tenant, delivery.channel))
        fitting = [provider for provider in candidates if _fits(provider, message)]
        if candidates and not fitting:
            return self._failure(delivery, candidates[-1].name, self._clock.now(), _too_long(candidates, message))
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
            if delivery.tenant in self._policies.current.suspended_tenants:
                return Held(f"tenant {delivery.tenant!r} is suspended; sent once it is active again")
            started = self._clock.now()
            outcome = await self._send(provider, message)
            self._metrics.count_attempt(delivery.channel, provider.name, _outcome_name(outcome), self._clock.now() - started)
            self._note_health(breaker, outcome, delivery)
            if isinstance(outcome, SendReceipt):
                return self._success(delivery, provider, started, outcome)
            last = (provider.name, started, outcome)
            if not _provider_fault(outcome):
                break  # refused for good, or the recipient's fault: another instance would fare no better
        if last is None:
            what = "circuit open for " + ", ".join(p.name for p in candidates) if candidates else "no provider instance serves it"
            wait = max(min(reopen_at) - self._clock.now(), 0.0) if reopen_at else None
            # Named after the last instance passed over, or the one it last went to: where an operator should look.
            tried = candidates[-1].name if candidates else delivery.provider
            last = (tried, self._clock.now(), TransientDeliveryError(f"{delivery.channel} unavailable: {what}", retry_after=wait))
        return self._failure(delivery, *last)

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

    @property
    def breakers(self) -> BreakerBoard:
        """Every instance's breaker, for views of the instances' health."""
        return self._breakers

    @property
    def circuits(self) -> dict[str, str]:
        """Each provider instance's circuit state, for instances sent to since start (the others are closed)."""
        return self._breakers.states()

    def _note_health(self, breaker: CircuitBreaker, outcome: SendReceipt | DeliveryError, delivery: ClaimedDelivery) -> None:
        """Feed the instance's breaker and recent counts: the provider's own failures count against it, any answer for it.

        A change of circuit is an event for the tenants it affects, each told apart: the
        instance's owner, or every tenant the policy routes to a shared one (and the tenant whose
        ``delivery`` this was, should a reload have routed it elsewhere since). The log line names
        the delivery whose answer changed the circuit.
        """
        fault = _provider_fault(outcome)
        self.health.record(breaker.name, "fault" if fault else "sent" if isinstance(outcome, SendReceipt) else "refused")
        transition = breaker.record_failure() if fault else breaker.record_success()
        if transition is None:
            return
        tenant = delivery.tenant
        log.warning(
            "provider instance %s: circuit %s -> %s (%s), on delivery %s of notification %s",
            transition.name, transition.from_state, transition.to_state, transition.reason, delivery.id, delivery.notification_id,
            extra=fields(
                event="circuit", provider=transition.name, from_state=transition.from_state, to_state=transition.to_state,
                reason=transition.reason, tenant=tenant, notification_id=delivery.notification_id, delivery_id=delivery.id,
            ),
        )
        data = {"instance": transition.name, "from": transition.from_state, "to": transition.to_state, "reason": transition.reason}
        served = self._policies.current.tenants_served_by(transition.name)
        for told in sorted({*served, tenant}):
            self._outcomes.event(NewEvent(transition.event, transition.name, transition.at, data, told))

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
            simulated=provider.simulated,
        )

    def _failure(
        self, delivery: ClaimedDelivery, provider: str | None, started: float, error: DeliveryError, *, final: bool = True
    ) -> AttemptResult:
        """What a failed attempt does: retry on the schedule, give up, or leave it to fallback.

        Not ``final``: the next provider instance takes the delivery, so this only records the attempt.
        Every failure is logged with its ids (:func:`_log_failure`).
        """
        now = self._clock.now()
        _log_failure(delivery, provider, error, final)
        if not final:
            return AttemptResult(
                delivery.id, delivery.attempt, provider, started, now,
                "transient" if isinstance(error, TransientDeliveryError) else "permanent", statuses.SENDING,
                error=error.message, detail=_detail(error), final=False, simulated=self._simulated(provider),
            )
        transient = isinstance(error, TransientDeliveryError)
        plan = RetryPlan(reason=error.message)  # refused for good: failed (and dead-lettered when no fallback is left)
        if isinstance(error, TransientDeliveryError):
            schedule = self._policies.current.retry_schedule(delivery.tenant, delivery.channel) or self._backoff
            plan = plan_retry(schedule, delivery.attempt, now, error.message, retry_after=error.retry_after, expires_at=delivery.expires_at)
        status = statuses.SENDING if plan.retry_at is not None else statuses.FAILED
        return AttemptResult(
            delivery_id=delivery.id,
            attempt=delivery.attempt,
            provider=provider,
            started_at=started,
            finished_at=now,
            outcome="transient" if transient else "permanent",
            status=status,
            error=plan.reason,
            detail=_detail(error),
            retry_at=plan.retry_at,
            dead_reason=plan.give_up,
            simulated=self._simulated(provider),
        )

    def _simulated(self, instance: str | None) -> bool:
        """Whether ``instance`` is one whose plugin reaches no one (the sandbox); False when none was tried."""
        provider = self._pool().get(instance) if instance is not None else None
        return provider is not None and provider.simulated


def _outcome_name(outcome: SendReceipt | DeliveryError) -> str:
    """``sent``, ``transient`` or ``permanent``: the outcome label of an attempt, as its result records it."""
    if isinstance(outcome, SendReceipt):
        return "sent"
    return "transient" if isinstance(outcome, TransientDeliveryError) else "permanent"


def _log_failure(delivery: ClaimedDelivery, provider: str | None, error: DeliveryError, final: bool) -> None:
    """One line per failed attempt, with the notification, delivery and instance; what happens next is decided after.

    The vendor's words stay out of the log (they may quote the recipient): the error's code is
    here, its message is in the notification's timeline.
    """
    kind = "transient" if isinstance(error, TransientDeliveryError) else "permanent"
    then = "" if final else "; the next instance takes it"
    log.warning(
        "delivery %s of notification %s (tenant %s, %s) failed on %s, attempt %d, %s (%s)%s",
        delivery.id, delivery.notification_id, delivery.tenant, delivery.channel, provider or "no instance", delivery.attempt, kind,
        error.code or "no code", then,
        extra=fields(
            event="delivery_failed", tenant=delivery.tenant, notification_id=delivery.notification_id, delivery_id=delivery.id,
            channel=delivery.channel, provider=provider, attempt=delivery.attempt, outcome=kind, code=error.code,
        ),
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

