"""Digests: a route's matching events collected per recipient, then sent as one notification rendered from them all.

A route with ``digest: {every: 1h}`` opens a digest for a recipient at the first event that
reaches them, due that long after; events until then join it. ``digest: {daily_at: "09:00"}``
is due at the next 09:00 in the recipient contact's time zone when it has one, else the
tenant's (``tenants.<t>.timezone``, UTC unless set).
Its template is rendered with ``events`` (each event's variables, as a single event's route
would get them: its data and ``event``), ``count`` and ``route``.

:class:`DigestSender` sends what is due. It waits on the injected clock for the next due
digest, woken early when processing opens one; digests are rows in the store, so a restart
loses none, and each is settled (sent or failed) in the transaction that keeps its
notification, so none is sent twice. Due digests are claimed a batch at a time, fairly: each
(tenant, mode) lane gives one per turn, the turns going on from claim to claim
(:meth:`~gateway.store.Store.claim_due_digests`), so one tenant's thousands of digests falling
due at 09:00 delay another tenant's by one batch at most. A digest's notification is built as a send's (a recipient
naming a contact is resolved then, so it goes to the contact's addresses and preferences as they
are when it is sent), carries the highest severity of its events, and counts one message
against the tenant's quota: when the quota has no room, the digest is recorded as failed with
the quota's code.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, time, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

import orjson

from gateway.clock import Clock
from gateway.engine import contacts
from gateway.engine.business_events import notification_content
from gateway.engine.quotas import Decision, Quotas
from gateway.engine.submission import Submission
from gateway.engine.worker import Worker
from gateway.errors import ValidationError
from gateway.policy.durations import parse_duration
from gateway.policy.keys import Principal
from gateway.policy.models import DEFAULT_SEVERITY, SEVERITIES, DigestPolicy
from gateway.policy.view import PolicyHolder
from gateway.store import DigestResult, DueDigest, Store

log = logging.getLogger(__name__)
BATCH: Final = 100
IDLE_WAIT: Final = 3600.0  # with no digest open, look again this often (a new one wakes the sender at once)
RETRY_AFTER_FAILURE: Final = 5.0
HELD_ELSEWHERE_WAIT: Final = 5.0  # a due digest another worker claimed: look again this much later (its lease may run out)
ROUTE_REMOVED: Final = "route_removed"
PROCESSING_FAILED: Final = "processing_failed"


def digest_due(policy: DigestPolicy, opened_at: float, zone: ZoneInfo) -> float:
    """When a digest opened at ``opened_at`` is due: ``every`` later, or the next ``daily_at`` in ``zone`` after it."""
    if policy.every is not None:
        return opened_at + parse_duration(policy.every)
    assert policy.daily_at is not None
    hour, minute = (int(part) for part in policy.daily_at.split(":"))
    local = datetime.fromtimestamp(opened_at, zone)
    day = local.date()
    while True:  # the first day whose HH:MM (as the zone reads it, across a DST change) is after the opening
        moment = datetime.combine(day, time(hour, minute), tzinfo=zone).timestamp()
        if moment > opened_at:
            return moment
        day += timedelta(days=1)


def digest_variables(route: str, events: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What a digest's template is rendered with: ``events`` (each event's variables), ``count`` and ``route``."""
    return {"events": [dict(event) for event in events], "count": len(events), "route": route}


def recipient_key(recipient: Mapping[str, Any]) -> str:
    """The recipient a digest collects for, as one key: the same addresses, whatever their order, are one recipient."""
    return hashlib.sha256(orjson.dumps(dict(recipient), option=orjson.OPT_SORT_KEYS)).hexdigest()


class DigestSender(Worker):
    """Sends digests when they fall due, on the injected clock."""

    name = "digest-sender"

    def __init__(
        self, store: Store, policies: PolicyHolder, quotas: Quotas, clock: Clock, wake_dispatcher: Callable[[Iterable[str]], None],
        *, lease_seconds: float,
    ) -> None:
        super().__init__(clock)
        self._store = store
        self._policies = policies
        self._quotas = quotas
        self._wake_dispatcher = wake_dispatcher
        self._lease_seconds = lease_seconds
        self.owner = f"digests-{secrets.token_hex(4)}"
        self._turn: tuple[str, str] | None = None  # the (tenant, mode) lane the last claim ended on
        self.sent = 0

    async def run(self) -> None:
        """Send what is due, then rest until the next digest is due, or a new one (which may be due sooner) wakes it."""
        while True:
            self._wakeup.clear()
            claimed_at = self._clock.now()
            try:
                while await self.send_due():
                    claimed_at = self._clock.now()  # when the claim that finds none (the last) begins
                due = await self._store.next_digest_due()
            except Exception:
                log.exception("sending due digests failed; trying again shortly")
                due = self._clock.now() + RETRY_AFTER_FAILURE
            if due is not None and due <= claimed_at:  # due when the last claim found none: another worker holds it
                due = self._clock.now() + HELD_ELSEWHERE_WAIT
            wait = IDLE_WAIT if due is None else due - self._clock.now()
            if wait > 0:
                await self.rest(wait)

    async def send_due(self) -> int:
        """Claim one batch of due digests, tenants and modes in turn, and send them; how many there were."""
        due = await self._store.claim_due_digests(limit=BATCH, owner=self.owner, lease_seconds=self._lease_seconds, after=self._turn)
        if not due:
            return 0
        self._turn = (due[-1].tenant, due[-1].mode)
        results = [await self._settled(digest) for digest in due]
        try:
            channels = await self._store.record_digests(results)
        except Exception:  # nothing was kept: give the quota back (a cancelled wait is not refunded: its write goes on)
            for result in results:
                if result.quota is not None:
                    self._quotas.refund(_spent(result))
            raise
        if channels:
            self._wake_dispatcher(channels)
        self.sent += len(due)
        return len(due)

    async def _settled(self, digest: DueDigest) -> DigestResult:
        """:meth:`_result`, or ``processing_failed`` when building it failed on a fault of ours (logged): one bad digest holds up no other."""
        try:
            return await self._result(digest)
        except Exception as err:
            if self._store.is_transient(err):
                raise
            log.exception("building digest %d of tenant %r failed; recorded as processing_failed", digest.id, digest.tenant)
            return DigestResult(digest.id, reason=PROCESSING_FAILED, message="the gateway could not build this digest; the error is logged")

    async def _result(self, digest: DueDigest) -> DigestResult:
        """The digest's notification, built through the send path, with the quota it takes; or why it cannot be (its route
        gone, a validation code, the quota's code)."""
        policy = self._policies.current
        route = policy.document.routes.get(digest.route)
        if route is None:
            return DigestResult(digest.id, reason=ROUTE_REMOVED, message=f"route {digest.route!r} is no longer in policy")
        principal = Principal(digest.tenant, digest.key_prefix, digest.mode, digest.key_name)
        submission = Submission(policy, principal, self._clock.now())
        variables = digest_variables(digest.route, digest.events)
        try:
            ref = contacts.reference_of(digest.recipient, "recipient")
            contact = (await contacts.resolve(self._store, principal, [ref]))[0] if ref is not None else None
            if ref is not None and contact is None:
                raise contacts.not_found(ref, "recipient")
            plan = submission.plan(notification_content(route, variables, highest_severity(digest.events)), prefix="notify.")
            notification = submission.build(plan, digest.recipient, variables, data_path="events", contact=contact)
        except ValidationError as err:
            code = err.details[0].code if err.details and err.details[0].code else err.code
            return DigestResult(digest.id, reason=code, message=err.message)
        decision = self._quotas.take(policy, digest.tenant, digest.mode, 1)
        if not decision.granted:
            return DigestResult(digest.id, reason=decision.code, message=f"the tenant's quota ({decision.code}) did not allow it when it was due")
        return DigestResult(digest.id, notification=notification, quota=decision.charge)


def highest_severity(events: Sequence[Mapping[str, Any]]) -> str:
    """The most severe of a digest's events (each event's variables carry ``event.severity``)."""
    found = [event.get("event", {}).get("severity") for event in events]
    ranked = [SEVERITIES.index(severity) for severity in found if severity in SEVERITIES]
    return SEVERITIES[max(ranked)] if ranked else DEFAULT_SEVERITY


def _spent(result: DigestResult) -> Decision:
    """A granted decision that spent what ``result`` carries, to give it back."""
    return Decision(True, charge=result.quota)
