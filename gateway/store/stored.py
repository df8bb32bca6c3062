"""What the store's reads hand back: typed, read-only records, with no trace of how they are kept.

Values are already decoded (maps and lists, not their text; times as epoch seconds), so a
caller never needs to know which engine is under the store.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.store.records import ContactFields, InboundRecord


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try of a delivery through one provider instance; ``provider`` None: no instance served the channel."""

    id: str
    number: int
    provider: str | None
    started_at: float
    finished_at: float
    outcome: str
    error: str | None
    provider_message_id: str | None
    detail: Mapping[str, Any]
    simulated: bool = False
    """Its instance reaches no one (the sandbox): nothing left the machine."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """A notification on one channel.

    ``next_attempt_at`` is set only while the delivery waits in the queue or is being sent.
    ``attempts`` is None when the read did not ask for them (lists), else oldest first.
    ``simulated``: nothing reached the recipient, because the instance its last attempt went to
    reaches no one (the sandbox), or because a test key sent it (test keys only ever use the sandbox).
    Recorded when it happens, so a later policy change does not rewrite it.
    """

    id: str
    channel: str
    address: str
    status: str
    provider: str | None  # the instance its last attempt went to
    provider_message_id: str | None
    attempt_count: int
    next_attempt_at: float | None
    last_error: str | None
    dead_reason: str | None
    updated_at: float
    content: Mapping[str, Any]
    attempts: Sequence[Attempt] | None = None
    skip_reason: str | None = None  # set when it was skipped: a code of ``lifecycle.SKIP_REASONS`` (None: a fallback not needed)
    simulated: bool = False


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One step in a notification's history: who moved what (``delivery_id`` None: the notification) from which status to which."""

    at: float
    actor: str
    action: str
    delivery_id: str | None
    from_status: str | None
    to_status: str | None
    reason: str | None


@dataclass(frozen=True, slots=True)
class Acknowledgement:
    """Who acknowledged a notification (a key's name), when, and the note they left."""

    by: str
    at: float
    note: str | None


@dataclass(frozen=True, slots=True)
class Notification:
    """A notification with its deliveries in channel order; ``history`` (oldest first) is None when the read did not ask for it."""

    id: str
    status: str
    mode: str
    priority: str
    strategy: str
    fallback_after: float | None
    expires_at: float | None
    template_id: str | None
    recipient: Mapping[str, str]
    channels: Sequence[str]
    metadata: Mapping[str, Any]
    idempotency_key: str | None
    created_at: float
    updated_at: float
    deliveries: Sequence[Delivery]
    history: Sequence[HistoryEntry] | None = None
    contact_id: str | None = None
    category: str | None = None
    severity: str | None = None
    locale: str | None = None
    template_version: str | None = None
    """The template's ``version`` in policy when the notification was accepted (as text), and its ``language``."""
    template_language: str | None = None
    event_id: str | None = None  # the business event whose route made it, if one did
    route: str | None = None
    acknowledged: Acknowledgement | None = None

    @property
    def simulated(self) -> bool:
        """Some of it reached no one: any of its deliveries is simulated."""
        return any(delivery.simulated for delivery in self.deliveries)


@dataclass(frozen=True, slots=True)
class Contact:
    """A stored recipient of one tenant and mode: its fields as set, and ``version``, which every change moves on."""

    id: str
    mode: str
    fields: ContactFields
    created_at: float
    updated_at: float
    version: int


@dataclass(frozen=True, slots=True)
class ContactSaved:
    """A contact as a write left it, and whether the write created it (else it replaced the one with its ``external_id``)."""

    contact: Contact
    created: bool


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A delivery given up on: why (``reason``, one of ``statuses.DEAD_REASONS``), its last error, and when."""

    delivery_id: str
    notification_id: str
    channel: str
    address: str
    provider: str | None  # the instance tried last
    reason: str | None
    error: str | None
    attempt_count: int
    dead_lettered_at: float
    template_id: str | None


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """One event on its way to one of a tenant's endpoints; ``next_attempt_at`` is set only while it is pending."""

    id: str
    event_id: str
    event_type: str
    endpoint: str
    status: str
    attempt_count: int
    last_status: int | None
    last_error: str | None
    next_attempt_at: float | None
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class Reply:
    """What a recipient sent back; the notification and delivery it answers when the vendor said which."""

    channel: str
    sender: str
    body: str
    provider: str
    provider_message_id: str | None
    in_reply_to: str | None
    notification_id: str | None
    delivery_id: str | None
    received_at: float
    detail: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class OptOutEntry:
    """A recipient's address that opted out of a tenant's channel, since when and on whose word."""

    channel: str
    address: str
    since: float
    source: str


@dataclass(frozen=True, slots=True)
class StoredInbound:
    """A provider callback as kept: ``outcome`` is received, processed or rejected (``reason`` says why)."""

    request: InboundRecord
    outcome: str
    reason: str | None


@dataclass(frozen=True, slots=True)
class EventOutcome:
    """What one route did for one recipient of a business event.

    ``result`` is ``notified`` (``notification_id`` made, its ``notification_status`` now),
    ``digested`` (collected in a digest due at ``digest_due_at``; ``notification_id`` once it is
    sent) or ``suppressed`` (``reason``: ``deduplicated`` naming ``first_event_id``,
    ``acknowledged_repeat``, ``recipient_opted_out``, ``no_route_matched``, a validation code…).
    """

    route: str | None
    recipient_index: int | None
    result: str
    reason: str | None = None
    message: str | None = None
    notification_id: str | None = None
    notification_status: str | None = None
    first_event_id: str | None = None
    digest_due_at: float | None = None
    digest_status: str | None = None


@dataclass(frozen=True, slots=True)
class BusinessEvent:
    """A business event as kept: as received, whether processed yet, and (on a full read) what each route did."""

    seq: int
    tenant: str
    mode: str
    event_id: str
    name: str
    severity: str
    received: Mapping[str, Any]
    key_prefix: str
    key_name: str | None
    received_at: float
    processed_at: float | None
    outcomes: Sequence[EventOutcome] | None = None
