"""Processing business events from the store: routes matched, notifications built, everything committed with the processed mark.

Accepting an event only keeps it (:meth:`~gateway.store.Store.accept_business_event`). The
processor, woken on each accept and at start (so what was accepted before a crash is
processed after it), claims pending events a batch at a time, fairly: each (tenant, mode) lane
with pending events gives one per turn, the turns going on from claim to claim
(:meth:`~gateway.store.Store.claim_business_events`), so one tenant's flood, or its test key's,
delays another's event by one batch at most. For each event of the batch it:

1. finds every matching route, in name order (:func:`gateway.policy.routing.matching_routes`);
2. per route and recipient, builds the notification through the send path
   (:class:`~gateway.engine.submission.Submission`: channels, template, recipient, variables
   are checked exactly as for ``/api/v1/notifications/send``; a recipient naming a contact is
   resolved as a send's is, and the channels the contact does not get are skipped), or records
   why not (the validation error's code, ``recipient_opted_out``); a digest route collects
   instead, due in the contact's time zone when it has one, else the tenant's;
3. takes the notifications from the tenant's quota (:mod:`gateway.engine.quotas`), as a bulk
   of that many rows: when they do not fit, each is recorded as suppressed with the quota's
   code (``rate_limited``, ``daily_quota_exceeded``) rather than sent.
Then it hands the whole batch to the store in one transaction (:meth:`EventProcessor.hand_over`),
which applies dedupe windows and acknowledged repeats, keeps the quota spent by what each event
made, and marks the events processed with their notifications, so an event is processed once
however often the process dies meanwhile; and it wakes the dispatcher for the channels filled,
and the digest sender when a digest was opened. One transaction per batch, not per event, is
what lets processing keep up with accepting.

An event that fails on a fault of ours (not the store's) is recorded as ``processing_failed``
and holds up no other: building, each event is decided alone; committing, a batch the store
refuses for a reason of its own is committed again one event at a time.

Policy is read when the event is processed: a route changed between accept and processing
applies to the event.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Final
from zoneinfo import ZoneInfo

from gateway.clock import Clock
from gateway.engine import contacts
from gateway.engine.business_events import event_variables, facts_of, notification_content, recipients_of
from gateway.engine.digests import DigestSender, digest_due, digest_variables, recipient_key
from gateway.engine.intake import opt_out_problems, skip_opted_out
from gateway.engine.opt_outs import OptOuts
from gateway.engine.quotas import Decision, Quotas
from gateway.engine.submission import Plan, Submission
from gateway.engine.worker import Worker
from gateway.errors import ValidationError
from gateway.metrics import Metrics
from gateway.policy.durations import parse_duration
from gateway.policy.keys import Principal
from gateway.policy.models import RoutePolicy
from gateway.policy.routing import EventFacts, fingerprint, matching_routes
from gateway.policy.view import PolicyHolder, PolicySet
from gateway.store import BusinessEvent, Contact, DigestEntry, EventCandidate, EventProcessing, EventRecorded, NewNotification, Store

log = logging.getLogger(__name__)
BATCH: Final = 100  # events claimed, decided and committed together
IDLE_POLL: Final = 5.0  # with nothing claimable, look again this often: events another worker claimed and never recorded
NO_ROUTE_MATCHED: Final = "no_route_matched"
PROCESSING_FAILED: Final = "processing_failed"
RETRY_AFTER_FAILURE: Final = 5.0  # seconds before a batch that failed to commit (store refusing writes) is tried again


def _failed(event: BusinessEvent | EventProcessing) -> EventProcessing:
    """An event processing failed on (a fault of ours, logged), recorded as such."""
    failed = EventCandidate(None, None, reason=PROCESSING_FAILED, message="the gateway could not process this event; the error is logged")
    return EventProcessing(event.seq, event.tenant, event.mode, event.event_id, [failed])


def suppressed(route: str, index: int, error: ValidationError) -> EventCandidate:
    """A recipient of a route that could not be notified: the error's code, and its first detail's words."""
    code = error.details[0].code if error.details and error.details[0].code else error.code
    message = "; ".join(f"{d.field}: {d.message}" for d in error.details) or error.message
    return EventCandidate(route, index, reason=code, message=message)


class EventProcessor(Worker):
    """Turns pending business events into notifications, a batch at a time, tenants and modes in turn, once each."""

    name = "event-processor"

    def __init__(
        self, store: Store, policies: PolicyHolder, opt_outs: OptOuts, quotas: Quotas, clock: Clock,
        wake_dispatcher: Callable[[Iterable[str]], None], digests: DigestSender, *, lease_seconds: float, metrics: Metrics | None = None,
    ) -> None:
        super().__init__(clock)
        self._metrics = metrics or Metrics()
        self._store = store
        self._policies = policies
        self._opt_outs = opt_outs
        self._quotas = quotas
        self._wake_dispatcher = wake_dispatcher
        self._digests = digests
        self._lease_seconds = lease_seconds
        self.owner = f"events-{secrets.token_hex(4)}"
        self._turn: tuple[str, str] | None = None  # the (tenant, mode) lane the last claim ended on
        self.processed = 0

    async def run(self) -> None:
        """Process what is pending (events accepted before a restart first), then rest until an accept wakes it."""
        while True:
            self._wakeup.clear()
            try:
                while await self.process_pending():
                    pass
            except Exception:
                log.exception("processing business events failed; trying again shortly")
                await self._clock.sleep(RETRY_AFTER_FAILURE)
                continue
            await self.rest(IDLE_POLL)

    async def process_pending(self) -> int:
        """Claim one batch of pending events, lanes in turn, decide each and commit them all at once; how many there were."""
        events = await self._store.claim_business_events(
            limit=BATCH, owner=self.owner, lease_seconds=self._lease_seconds, after=self._turn
        )
        if not events:
            return 0
        self._turn = (events[-1].tenant, events[-1].mode)
        await self.hand_over([await self._decided(event) for event in events])
        return len(events)

    async def process(self, event: BusinessEvent) -> None:
        """Process one event now, on its own: decide and commit it (nothing changes if it was processed before)."""
        await self.hand_over([await self._decided(event)])

    async def _decided(self, event: BusinessEvent) -> EventProcessing:
        """:meth:`decide`, or ``processing_failed`` when deciding failed on a fault of ours (logged): one bad event holds up no other."""
        try:
            return await self.decide(event)
        except Exception as err:
            if self._store.is_transient(err):
                raise  # the store refused a read: the batch stays pending, tried again shortly
            log.exception("processing business event %r of tenant %r failed; recorded as processing_failed", event.event_id, event.tenant)
            return _failed(event)

    async def decide(self, event: BusinessEvent) -> EventProcessing:
        """What every matching route does for every recipient of ``event``, to be committed with its processed mark."""
        policy = self._policies.current
        principal = Principal(event.tenant, event.key_prefix, event.mode, event.key_name)
        facts = facts_of(event)
        routes = policy.document.routes
        matched = matching_routes(routes, event.tenant, facts)
        candidates: list[EventCandidate] = []
        if matched:
            targets = await self._targets(principal, recipients_of(event))
            for name in matched:
                candidates += await self._route_candidates(policy, principal, name, routes[name], event, facts, targets)
        else:
            candidates.append(EventCandidate(None, None, reason=NO_ROUTE_MATCHED, message="no route matches this event"))
        return EventProcessing(event.seq, event.tenant, event.mode, event.event_id, candidates)

    async def hand_over(self, batch: Sequence[EventProcessing]) -> None:
        """Take the notifications each event makes from its tenant's quota, commit the batch (notifications, outcomes and
        processed marks) in one transaction, and wake who sends them.

        Every notification a business event makes passes here, after it was built and before the
        store keeps it. An event's are counted as the rows of a bulk are: all of them fit, or none
        is sent and each is recorded as suppressed with the quota's code. The store keeps the quota
        spent by those it made (dedupe and acknowledged repeats may suppress some), and what it did
        not make is given back. A batch the store refuses for a reason of its own (not a storage
        fault) is committed again one event at a time, and an event that cannot be committed even
        alone is recorded as ``processing_failed``.
        """
        charged = [self._charged(processing) for processing in batch]
        try:
            recorded = await self._store.record_event_processing([processing for processing, _decision, _count in charged])
        except Exception as err:  # nothing was kept (a cancelled wait is not refunded: its write goes on)
            for _processing, decision, _count in charged:
                if decision is not None:
                    self._quotas.refund(decision)
            if self._store.is_transient(err) or len(batch) == 1:
                raise
            log.warning("committing %d processed events together failed (%s); committing them one by one", len(batch), type(err).__name__)
            for processing in batch:
                await self._hand_over_alone(processing)
            return
        for (_processing, decision, count), kept in zip(charged, recorded, strict=True):
            if decision is not None:
                self._quotas.refund(decision, count - kept.notified)
        self.processed += len(batch)
        for processing in batch:
            self._metrics.events_processed.labels(processing.tenant, processing.mode).inc()
        self._woken(batch, recorded)

    async def _hand_over_alone(self, processing: EventProcessing) -> None:
        """One event of a batch that failed to commit: committed alone, else recorded as ``processing_failed``."""
        try:
            await self.hand_over([processing])
        except Exception as err:
            if self._store.is_transient(err):
                raise
            log.exception("committing business event %r of tenant %r failed; recorded as processing_failed", processing.event_id, processing.tenant)
            await self.hand_over([_failed(processing)])

    def _charged(self, processing: EventProcessing) -> tuple[EventProcessing, Decision | None, int]:
        """``processing`` with what its notifications take from the quota, or each suppressed with the quota's code when they
        do not fit; the decision to refund from, and how many it took."""
        count = sum(1 for candidate in processing.candidates if candidate.notification is not None)
        if not count:
            return processing, None, 0
        decision = self._quotas.take(self._policies.current, processing.tenant, processing.mode, count)
        if decision.granted:
            return replace(processing, quota=decision.charge), decision, count
        message = f"the tenant's quota ({decision.code}) does not allow {count} more message{'s' if count != 1 else ''} now"
        suppressed_all = [
            replace(c, notification=None, reason=decision.code, message=message) if c.notification is not None else c
            for c in processing.candidates
        ]
        return replace(processing, candidates=suppressed_all), None, 0

    def _woken(self, batch: Sequence[EventProcessing], recorded: Sequence[EventRecorded]) -> None:
        """Wake the dispatcher for the channels the batch filled, and the digest sender when a digest was opened or joined."""
        channels = frozenset[str]().union(*(kept.channels for kept in recorded))
        if channels:
            self._wake_dispatcher(channels)
        if any(candidate.digest is not None for processing in batch for candidate in processing.candidates):
            self._digests.wake()

    async def _targets(self, principal: Principal, recipients: Sequence[Mapping[str, Any]]) -> list[Contact | ValidationError | None]:
        """Per recipient: the contact it names, None when it gives addresses, or why its reference is refused; one read for all."""
        refs: list[contacts.ContactRef | None] = []
        targets: list[Contact | ValidationError | None] = []
        for index, recipient in enumerate(recipients):
            try:
                refs.append(contacts.reference_of(recipient, f"recipients[{index}]"))
                targets.append(None)
            except ValidationError as err:
                refs.append(None)
                targets.append(err)
        found = await contacts.resolve(self._store, principal, refs)
        for index, ref in enumerate(refs):
            if ref is None:
                continue
            contact = found[index]
            targets[index] = contact if contact is not None else contacts.not_found(ref, f"recipients[{index}]")
        return targets

    async def _route_candidates(
        self, policy: PolicySet, principal: Principal, name: str, route: RoutePolicy, event: BusinessEvent, facts: EventFacts,
        targets: Sequence[Contact | ValidationError | None],
    ) -> list[EventCandidate]:
        """What ``route`` does for each recipient of the event (``targets``: the contact each names, if one)."""
        recipients = recipients_of(event)
        variables = event_variables(event)
        submission = Submission(policy, principal, self._clock.now())
        rendered_with = digest_variables(name, [variables]) if route.digest is not None else variables
        try:
            plan = submission.plan(notification_content(route, rendered_with, event.severity), prefix="notify.")
        except ValidationError as err:
            return [suppressed(name, index, err) for index in range(len(recipients))]
        window = parse_duration(route.dedupe.window) if route.dedupe is not None else None
        candidates = []
        for index, recipient in enumerate(recipients):
            marked = fingerprint(name, route.dedupe.fingerprint, facts, recipient) if route.dedupe is not None else None
            target = targets[index]
            try:
                if isinstance(target, ValidationError):
                    raise target
                notification = await self._build(submission, plan, recipient, rendered_with, index, target)
            except ValidationError as err:
                candidates.append(suppressed(name, index, err))
                continue
            if route.digest is None:
                candidates.append(EventCandidate(name, index, notification=notification, fingerprint=marked, dedupe_window=window))
                continue
            zone = _zone(target) or policy.tenant_timezone(event.tenant)
            entry = DigestEntry(recipient_key(recipient), recipient, digest_due(route.digest, event.received_at, zone), variables)
            candidates.append(EventCandidate(name, index, digest=entry, fingerprint=marked, dedupe_window=window))
        return candidates

    async def _build(
        self, submission: Submission, plan: Plan, recipient: Mapping[str, Any], variables: Mapping[str, Any], index: int,
        contact: Contact | None,
    ) -> NewNotification:
        """One recipient's notification, checked as a send's is; an address that opted out of a channel is a ValidationError
        too, while to a contact such a channel is skipped (``opted_out``), as a send to a contact does."""
        notification = submission.build(
            plan, recipient, variables, recipient_path=f"recipients[{index}]", data_path="data", contact=contact
        )
        refused = await self._opt_outs.refused(notification.tenant, {(d.channel, d.address) for d in notification.deliveries})
        if contact is not None:
            return skip_opted_out(notification, contact.fields, refused)
        problems = opt_out_problems(notification, refused, f"recipients[{index}]")
        if problems:
            raise ValidationError.from_details(problems, "The recipient opted out of this channel.")
        return notification


def _zone(target: Contact | ValidationError | None) -> ZoneInfo | None:
    """The time zone of the contact a recipient names, when it set one (checked when the contact was saved)."""
    if isinstance(target, Contact) and target.fields.timezone:
        try:
            return ZoneInfo(target.fields.timezone)
        except (KeyError, ValueError):  # a zone the machine's database lost since: the tenant's applies
            return None
    return None
