"""Accepting notifications: the one way in, whichever API surface a request came through.

A surface (``/api/v1/notifications/send`` and ``/bulk`` today; business events and drop-in
APIs of other services later) parses its request into a :class:`SendRequest` or
:class:`BulkRequest` and hands it here with its idempotency claim and how to word its answer.
The intake then, in order:

1. answers a key used before with the answer given then (409 if the body differs);
2. resolves recipients that name a contact (:mod:`gateway.engine.contacts`), in one read;
3. validates and renders (:mod:`gateway.engine.submission`);
4. refuses deliveries to recipients who opted out (the whole send, or the bulk row); to a
   contact, such a delivery is skipped instead (``opted_out``), as its own preferences are;
5. takes the messages it is about to accept from the tenant's quota (:mod:`gateway.engine.quotas`):
   one per send, one per accepted bulk row, all or nothing (429, or 413 for more than a limit
   ever holds); nothing is written when they do not fit;
6. commits the notifications, their deliveries, the idempotency record and the quota spent in
   one transaction (a replay that won a race, or a failed write, gives the quota back);
7. only then wakes the dispatcher for the channels it filled.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from gateway.clock import Clock
from gateway.engine import contacts
from gateway.engine.opt_outs import OptOuts
from gateway.engine.preferences import OPTED_OUT
from gateway.engine.quotas import Quotas, refusal
from gateway.engine.submission import BulkRequest, Plan, SendRequest, Submission, used_addresses
from gateway.errors import ConflictError, ErrorDetail, ValidationError
from gateway.metrics import Metrics
from gateway.policy.keys import Principal
from gateway.policy.view import PolicySet
from gateway.store import Acceptance, Contact, ContactFields, IdempotencyClaim, NewNotification, Store

ACCEPTED_STATUS = 202
OPTED_OUT_MESSAGE = "The recipient opted out of this channel."


@dataclass(frozen=True, slots=True)
class RowRefusal:
    """A bulk row that could not be accepted, and why."""

    index: int
    error: ValidationError


Row = tuple[int, NewNotification]
Target = Contact | ValidationError | None
"""What a bulk row's recipient is: a contact, addresses (None), or a reference refused."""
SendAnswer = Callable[[NewNotification], bytes]
BulkAnswer = Callable[[Sequence[Row], Sequence[RowRefusal]], bytes]


class Intake:
    """Turns validated requests into committed notifications, once per idempotency key."""

    def __init__(
        self, store: Store, opt_outs: OptOuts, quotas: Quotas, clock: Clock, wake: Callable[[Iterable[str]], None], metrics: Metrics | None = None,
    ) -> None:
        self._store = store
        self._metrics = metrics or Metrics()
        self._opt_outs = opt_outs
        self._quotas = quotas
        self._clock = clock
        self._wake = wake

    async def send(
        self, policy: PolicySet, principal: Principal, request: SendRequest, claim: IdempotencyClaim | None, answer: SendAnswer
    ) -> Acceptance:
        """Accept one notification to one recipient, or raise the ``ValidationError`` that says why not."""
        if (replay := await self._replay(principal.tenant, claim)) is not None:
            return replay
        submission = Submission(policy, principal, self._clock.now())
        plan = submission.plan(request.notification)
        ref = contacts.reference_of(request.recipient, "recipient")
        contact = (await contacts.resolve(self._store, principal, [ref]))[0] if ref else None
        if ref is not None and contact is None:
            raise contacts.not_found(ref, "recipient")
        notification = submission.build(
            plan, request.recipient, request.notification.data, idempotency_key=claim.key if claim else None, metadata=request.metadata,
            contact=contact,
        )
        opted_out = await self._opted_out(principal.tenant, [notification])
        if contact is not None:
            notification = skip_opted_out(notification, contact.fields, opted_out)
        elif problems := opt_out_problems(notification, opted_out, "recipient"):
            raise ValidationError.from_details(problems, OPTED_OUT_MESSAGE)
        return await self._accept(policy, principal, [notification], claim, answer(notification))

    async def bulk(
        self, policy: PolicySet, principal: Principal, request: BulkRequest, claim: IdempotencyClaim | None, answer: BulkAnswer
    ) -> Acceptance:
        """Accept one notification per recipient row; rows that cannot be are refused, the rest go ahead."""
        if (replay := await self._replay(principal.tenant, claim)) is not None:
            return replay
        submission = Submission(policy, principal, self._clock.now())
        plan = submission.plan(request, default_priority="bulk", prefix="")
        targets = await self._targets(principal, request.recipients)
        accepted, refused = build_rows(submission, plan, request, claim, targets)
        accepted, refused = await self._without_opted_out(principal.tenant, accepted, refused, targets)
        if not accepted:
            details = [detail for refusal in refused for detail in refusal.error.details]
            raise ValidationError("No recipient row could be accepted.", code="no_valid_recipients", details=details)
        return await self._accept(policy, principal, [notification for _, notification in accepted], claim, answer(accepted, refused))

    async def _replay(self, tenant: str, claim: IdempotencyClaim | None) -> Acceptance | None:
        """The answer given before under this key, if there was one (a cheap read before any work)."""
        if claim is None:
            return None
        stored = await self._store.find_response(tenant, claim.mode, claim.key)
        if stored is None:
            return None
        return _checked(Acceptance(stored.status, stored.body, replayed=True, fingerprint_matches=stored.fingerprint == claim.fingerprint))

    async def _accept(
        self, policy: PolicySet, principal: Principal, notifications: list[NewNotification], claim: IdempotencyClaim | None, body: bytes
    ) -> Acceptance:
        """Take the messages from the tenant's quota, then commit them with what they spent; the quota back if nothing was kept."""
        decision = self._quotas.take(policy, principal.tenant, principal.mode, len(notifications))
        if not decision.granted:
            raise refusal(decision)
        try:
            acceptance = await self._store.accept(
                notifications, tenant=principal.tenant, idempotency=claim, status=ACCEPTED_STATUS, body=body, quota=decision.charge
            )
        except Exception:  # the write failed: nothing was kept (a cancelled wait is not refunded: its write goes on)
            self._quotas.refund(decision)
            raise
        if acceptance.replayed:  # another request with this key committed in between: this one accepted nothing
            self._quotas.refund(decision)
        else:
            self._metrics.accepted.labels(principal.tenant, principal.mode).inc(len(notifications))
            self._wake({delivery.channel for notification in notifications for delivery in notification.deliveries})
        return _checked(acceptance)

    async def _targets(self, principal: Principal, rows: Sequence[Mapping[str, Any]]) -> list[Target]:
        """Per bulk row: the contact it names, None when it gives addresses, or why its reference is refused; one read for all."""
        refs: list[contacts.ContactRef | None] = []
        targets: list[Target] = []
        for index, row in enumerate(rows):
            if not contacts.names_contact(row):  # the usual row gives addresses: no copy of it
                refs.append(None)
                targets.append(None)
                continue
            try:
                refs.append(contacts.reference_of({name: value for name, value in row.items() if name != "data"}, f"recipients[{index}]"))
            except ValidationError as err:
                refs.append(None)
                targets.append(err)
                continue
            targets.append(None)
        found = await contacts.resolve(self._store, principal, refs)
        for index, (ref, contact) in enumerate(zip(refs, found, strict=True)):
            if ref is not None:
                targets[index] = contact if contact is not None else contacts.not_found(ref, f"recipients[{index}]")
        return targets

    async def _opted_out(self, tenant: str, notifications: Sequence[NewNotification]) -> set[tuple[str, str]]:
        """(channel, address) pairs among these deliveries whose recipient opted out; no read for a tenant with no opt-outs."""
        return await self._opt_outs.refused(
            tenant, {(d.channel, d.address) for n in notifications for d in n.deliveries if d.skip_reason is None}
        )

    async def _without_opted_out(
        self, tenant: str, accepted: list[Row], refused: list[RowRefusal], targets: Sequence[Target]
    ) -> tuple[list[Row], list[RowRefusal]]:
        """Move rows whose recipient opted out from ``accepted`` to ``refused`` (kept in row order); a contact's row skips those channels."""
        opted_out = await self._opted_out(tenant, [notification for _, notification in accepted])
        if not opted_out:
            return accepted, refused
        kept: list[Row] = []
        for index, notification in accepted:
            contact = targets[index]
            if isinstance(contact, Contact):
                kept.append((index, skip_opted_out(notification, contact.fields, opted_out)))
                continue
            problems = opt_out_problems(notification, opted_out, f"recipients[{index}]")
            if problems:
                refused.append(RowRefusal(index, ValidationError.from_details(problems, OPTED_OUT_MESSAGE)))
            else:
                kept.append((index, notification))
        return kept, sorted(refused, key=lambda refusal: refusal.index)


def _checked(acceptance: Acceptance) -> Acceptance:
    if not acceptance.fingerprint_matches:
        raise ConflictError("This Idempotency-Key was already used with a different request body.", code="idempotency_conflict")
    return acceptance


def build_rows(
    submission: Submission, plan: Plan, request: BulkRequest, claim: IdempotencyClaim | None, targets: Sequence[Target] | None = None
) -> tuple[list[Row], list[RowRefusal]]:
    """Each recipient row as a notification, or as the reason it cannot be one.

    ``targets``: per row, the contact it names, None when it gives addresses, or the refusal of
    its reference (see :meth:`Intake._targets`); all None when not given.
    """
    accepted: list[Row] = []
    refused: list[RowRefusal] = []
    key = claim.key if claim else None
    for index, row in enumerate(request.recipients):
        path = f"recipients[{index}]"
        recipient = {name: value for name, value in row.items() if name != "data"}
        row_data = row.get("data", {})
        target = targets[index] if targets is not None else None
        if isinstance(target, ValidationError):
            refused.append(RowRefusal(index, target))
            continue
        try:
            if not isinstance(row_data, dict):
                raise ValidationError(
                    "data must be an object", code="validation_failed", details=[ErrorDetail(f"{path}.data", "must be an object", "validation_failed")]
                )
            data = request.data | row_data if row_data else request.data
            notification = submission.build(
                plan, recipient, data, idempotency_key=key, metadata=request.metadata, recipient_path=path, data_path=f"{path}.data",
                contact=target,
            )
        except ValidationError as err:
            refused.append(RowRefusal(index, err))
            continue
        accepted.append((index, notification))
    return accepted, refused


def skip_opted_out(notification: NewNotification, contact: ContactFields, refused: set[tuple[str, str]]) -> NewNotification:
    """``notification`` to a contact with its deliveries to addresses that opted out skipped (``opted_out``), and its
    ``recipient`` narrowed to the addresses still used."""
    if not any((d.channel, d.address) in refused for d in notification.deliveries if d.skip_reason is None):
        return notification
    deliveries = [
        replace(d, skip_reason=OPTED_OUT) if d.skip_reason is None and (d.channel, d.address) in refused else d
        for d in notification.deliveries
    ]
    used = {d.address for d in deliveries if d.skip_reason is None}
    return replace(notification, deliveries=deliveries, recipient=used_addresses(contact, used))


def opt_out_problems(notification: NewNotification, refused: set[tuple[str, str]], path: str) -> list[ErrorDetail]:
    """One problem per delivery of ``notification`` to an address that opted out of its channel."""
    problems = []
    for delivery in notification.deliveries:
        if (delivery.channel, delivery.address) not in refused:
            continue
        field = next((name for name, value in notification.recipient.items() if value == delivery.address), "")
        message = f"the recipient opted out of {delivery.channel} messages (GET /api/v1/opt-outs says how); only they can opt back in"
        problems.append(ErrorDetail(f"{path}.{field}", message, "recipient_opted_out"))
    return problems
