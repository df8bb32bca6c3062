"""Plain values that cross the store boundary; no engine types leak out of ``gateway.store``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Generic, TypeVar

from gateway import lifecycle, statuses
from gateway.errors import OPTED_OUT

PRIORITY_RANK: Final = {"high": 0, "normal": 1, "bulk": 2}
ERASED: Final = "[erased]"
"""What a deleted contact's address reads as wherever a notification held it."""
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class NewDelivery:
    """A delivery to keep; ``skip_reason`` set: it is never sent (a code of ``lifecycle.SKIP_REASONS``), ``address`` may be empty."""

    id: str
    channel: str
    position: int
    address: str
    content: Mapping[str, Any]
    skip_reason: str | None = None


@dataclass(frozen=True, slots=True)
class NewNotification:
    id: str
    tenant: str
    mode: str
    priority: str
    strategy: str
    template_id: str | None
    recipient: Mapping[str, str]
    channels: Sequence[str]
    deliveries: Sequence[NewDelivery]
    created_by: str
    metadata: Mapping[str, Any] | None = None
    idempotency_key: str | None = None
    send_at: float | None = None
    expires_at: float | None = None
    fallback_after: float | None = None  # strategy "fallback": move on if not delivered within this
    contact_id: str | None = None  # the contact it was sent to, when the send named one
    category: str | None = None
    severity: str | None = None
    locale: str | None = None  # the template translation it was rendered in; None: the template's own content (or no template)
    template_version: str | None = None  # the template's version marker in policy, as text
    template_language: str | None = None  # the language its content is written in, as policy says


@dataclass(frozen=True, slots=True)
class IdempotencyClaim:
    """A request's key, the fingerprint of its body and the mode of the key that sent it.

    Keys are scoped by tenant *and* mode: a test key's request never answers for a live one.
    """

    key: str
    fingerprint: str
    mode: str


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """What an idempotent request answered the first time."""

    fingerprint: str
    status: int
    body: bytes


@dataclass(frozen=True, slots=True)
class Acceptance:
    """The store's answer to an accept: the response to send, and whether it is a replay."""

    status: int
    body: bytes
    replayed: bool
    fingerprint_matches: bool = True


@dataclass(frozen=True, slots=True)
class Threshold:
    """A share of a daily quota at which the tenant is told (``quota.threshold``), and the count that reaches it."""

    fraction: float
    count: int


@dataclass(frozen=True, slots=True)
class QuotaCharge:
    """What an acceptance spends of its tenant's quota in one mode, kept in the acceptance's own transaction.

    ``count`` messages are added to the ``day``'s count (a UTC date, ``YYYY-MM-DD``; a new day
    starts from zero). Each of ``thresholds`` the new count reaches that has not fired that day
    fires once: a ``quota.threshold`` event written with the acceptance. ``tokens`` is the rate
    limit's level after the take, measured at ``at`` (None: the tenant has no rate limit).
    """

    tenant: str
    mode: str
    count: int
    day: str
    daily: int | None
    thresholds: tuple[Threshold, ...]
    tokens: float | None
    at: float


@dataclass(frozen=True, slots=True)
class QuotaUsage:
    """A tenant's quota state in one mode as the store keeps it: the day's count, the thresholds fired that day, the rate level."""

    tenant: str
    mode: str
    day: str
    used: int
    fired: tuple[float, ...]
    tokens: float | None
    tokens_at: float


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    """A delivery reserved for one attempt, with everything the dispatcher needs to send it."""

    id: str
    notification_id: str
    tenant: str
    channel: str
    address: str
    mode: str
    attempt: int
    content: Mapping[str, Any]
    recipient: Mapping[str, str]
    template_id: str | None
    metadata: Mapping[str, Any]
    reclaimed: bool = False
    expires_at: float | None = None
    provider: str | None = None  # the instance its last attempt went to, if any


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """The outcome of one attempt and what it does to the delivery.

    ``outcome`` is ``sent``, ``transient`` or ``permanent``; ``status`` the delivery's new
    status; ``retry_at`` set when the delivery goes back into the queue. A ``failed`` delivery is
    also dead-lettered when no fallback channel is left to try. A result that is not ``final``
    (the next provider instance takes the delivery at once) only records the attempt.
    ``dead_reason`` says why a result that gave up on retrying did. ``simulated``: the instance
    tried reaches no one (its plugin says so: the sandbox).
    """

    delivery_id: str
    attempt: int
    provider: str | None  # None: no instance could be tried (none serves the channel any more)
    started_at: float
    finished_at: float
    outcome: str
    status: str
    provider_message_id: str | None = None
    error: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)
    retry_at: float | None = None
    final: bool = True
    dead_reason: str | None = None
    simulated: bool = False

    def happening(self) -> lifecycle.Happening:
        """What this attempt means for its delivery, in the words of :mod:`gateway.lifecycle`."""
        if not self.final:
            return lifecycle.Failover(self.error)
        if self.status == statuses.SENT:
            return lifecycle.Sent()
        if self.retry_at is not None:
            return lifecycle.Retry(self.retry_at, self.error)
        opted_out = self.outcome == "permanent" and self.detail.get("code") == OPTED_OUT
        return lifecycle.Failed(self.error, self.dead_reason, opted_out=opted_out)


@dataclass(frozen=True, slots=True)
class NewEvent:
    """Something to tell a tenant about (``message.replied``, ``provider.circuit_opened``…): one row per tenant told.

    ``tenant`` None is told to no one (only events written by older versions have none).
    """

    type: str
    subject: str
    at: float
    data: Mapping[str, Any] = field(default_factory=dict)
    tenant: str | None = None


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as the webhook fan-out reads it; ``seq`` orders events overall and so per tenant."""

    seq: int
    id: str
    tenant: str | None
    type: str
    data: Mapping[str, Any]
    at: float
    subject: str  # what it is about: a notification id, a provider instance, an address


@dataclass(frozen=True, slots=True)
class EventHead:
    """What fan-out needs of an event to choose its endpoints and name it in their deliveries: no payload."""

    seq: int
    id: str
    tenant: str | None
    type: str


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    """One endpoint an event goes to; ``disabled`` rows are kept (for replay) but not sent."""

    event: EventHead
    tenant: str
    endpoint: str
    disabled: bool = False


@dataclass(frozen=True, slots=True)
class ClaimedWebhook:
    """A webhook delivery reserved for one attempt, with its event."""

    id: str
    tenant: str
    endpoint: str
    attempt: int
    event: StoredEvent


@dataclass(frozen=True, slots=True)
class WebhookResult:
    """What one attempt did: ``status`` pending (retry at ``next_attempt_at``), succeeded, dead or disabled.

    ``disabled`` (a 410) disables the endpoint at ``url`` and every delivery still pending for it.
    ``disable_after``: seconds of continuous failure after which the endpoint is disabled too
    (None: never); a failure is any outcome but ``succeeded``.
    """

    id: str
    tenant: str
    endpoint: str
    status: str
    last_status: int | None = None
    last_error: str | None = None
    next_attempt_at: float | None = None
    url: str | None = None
    disable_after: float | None = None


@dataclass(frozen=True, slots=True)
class WebhookEndpointState:
    """What the store knows of one endpoint: failing since when, last success, and a disabling."""

    tenant: str
    endpoint: str
    failing_since: float | None = None
    last_success_at: float | None = None
    last_failure_at: float | None = None
    last_error: str | None = None
    disabled_url: str | None = None
    disabled_at: float | None = None
    disabled_reason: str | None = None


@dataclass(frozen=True, slots=True)
class ReceivedStatus:
    """A provider's status report for one of its messages, ready to reconcile."""

    provider: str
    provider_message_id: str
    status: str
    occurred_at: float | None = None
    error: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)
    delivery_id: str | None = None  # the vendor's echo of our delivery id: matches it when the message id cannot


@dataclass(frozen=True, slots=True)
class InboundRecord:
    """A provider callback exactly as it arrived, kept before anything reads it.

    ``headers`` are the ones worth keeping (see :func:`gateway.engine.inbound.kept_headers`);
    ``target`` is the path with its query string.
    """

    id: str
    provider: str
    received_at: float
    source: str | None
    method: str
    target: str
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class RefusedCallback:
    """A callback that failed verification, kept only as far as diagnosing it needs.

    Never its body or headers (anyone can send one, without a key): when and from where it
    came, to which instance, how large it was and the SHA-256 of its body (to match it against
    what a vendor says it sent; None for refusals kept before v9), and why it was refused.
    """

    id: str
    provider: str
    received_at: float
    source: str | None
    method: str
    size: int
    sha256: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class NewReply:
    """A recipient's reply, ready to store and attribute.

    ``tenants`` are the tenants it may belong to: the owner of a tenant's own instance, else
    every tenant. The store narrows them to the one whose delivery it answers (``in_reply_to``)
    or those that have sent to ``sender`` through the instance. ``opt`` is ``out`` (STOP),
    ``in`` (START) or None.
    """

    request_id: str | None
    provider: str
    tenants: Sequence[str]
    channel: str
    sender: str
    body: str
    received_at: float
    provider_message_id: str | None = None
    in_reply_to: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)
    opt: str | None = None


@dataclass(frozen=True, slots=True)
class NewOptOut:
    """A vendor's word that a recipient opted out (``opted_out``) or back in, ready to record.

    ``tenants`` and ``about`` (the provider message id it concerns) narrow it to tenants as for
    a :class:`NewReply`.
    """

    provider: str
    tenants: Sequence[str]
    channel: str
    address: str
    opted_out: bool
    reason: str
    at: float
    about: str | None = None


@dataclass(frozen=True, slots=True)
class ContactFields:
    """What a contact holds, as the API sets it: addresses by recipient field, locale, time zone, preferences, metadata.

    ``channels`` and ``categories`` map a name to whether the contact wants those messages
    (absent: it does).
    """

    external_id: str | None = None
    addresses: Mapping[str, str] = field(default_factory=dict)
    locale: str | None = None
    timezone: str | None = None
    channels: Mapping[str, bool] = field(default_factory=dict)
    categories: Mapping[str, bool] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Erasure:
    """A deleted contact's addresses to erase from its tenant's notifications of one mode; kept until done, resumed after a restart."""

    contact_id: str
    tenant: str
    mode: str
    addresses: Sequence[str]


@dataclass(frozen=True, slots=True)
class NotificationFilter:
    """Which notifications to list. ``status`` is the notification's own; ``channel``, ``delivery_status`` and
    ``min_attempts`` match a notification with a delivery on that channel, in that status, attempted at least
    that many times (the same delivery, when several are set)."""

    status: str | None = None
    channel: str | None = None
    delivery_status: str | None = None
    min_attempts: int | None = None
    recipient: str | None = None
    mode: str | None = None  # ``live`` or ``test``; None: both


@dataclass(frozen=True, slots=True)
class DeadLetterFilter:
    """Which dead letters to list or replay; an unset field matches every value."""

    channel: str | None = None
    provider: str | None = None  # the provider instance tried last
    reason: str | None = None  # one of ``statuses.DEAD_REASONS``
    mode: str | None = None  # ``live`` or ``test``; None: both


@dataclass(frozen=True, slots=True)
class Replayed:
    """What a replay did, read in the same transaction that did it.

    ``more`` says the cap left matching dead letters behind (ask again for the rest);
    ``not_dead_lettered`` lists the asked-for ids that are the tenant's but not dead-lettered,
    so the API can tell them (409) from ids it does not know (404).
    """

    delivery_ids: list[str]
    channels: frozenset[str] = frozenset()
    more: bool = False
    not_dead_lettered: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class PurgedBatch:
    """One batch of a retention purge: how many notifications went, and the id to go on after (None: nothing left to look at)."""

    purged: int
    resume_after: str | None


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list; ``next_cursor`` asks for the page after it, None on the last page."""

    items: Sequence[T]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class NewBusinessEvent:
    """A business event posted to ``/api/v1/events``, ready to keep; processed from the store afterwards.

    ``received`` is the request as it came (validated), shown back on reads; the other fields
    are what processing reads: the effective ``severity`` (the request's, else its type's
    default), the recipients as address maps, and who posted it (key prefix and name).
    """

    tenant: str
    mode: str
    event_id: str
    name: str
    severity: str
    received: Mapping[str, Any]
    key_prefix: str
    key_name: str | None = None


@dataclass(frozen=True, slots=True)
class DigestEntry:
    """An event's place in a digest of one route for one recipient: joins the open one, or opens one due at ``due_at``."""

    recipient_key: str
    recipient: Mapping[str, Any]
    due_at: float
    variables: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class EventCandidate:
    """What one route would do for one recipient of an event, before dedupe and acknowledgements have their say.

    Exactly one of ``notification`` (send it), ``digest`` (collect it) and ``reason`` (suppressed
    already: a validation code, an opt-out, ``no_route_matched``) is set. With ``fingerprint``, a
    repeat held by an acknowledgement is suppressed (``acknowledged_repeat``); with
    ``dedupe_window`` too, one seen on the route inside the window is (``deduplicated``), and
    otherwise the window starts.
    """

    route: str | None
    recipient_index: int | None
    notification: NewNotification | None = None
    digest: DigestEntry | None = None
    reason: str | None = None
    message: str | None = None
    fingerprint: str | None = None
    dedupe_window: float | None = None


@dataclass(frozen=True, slots=True)
class EventProcessing:
    """Everything processing decided for one event, committed at once with its processed mark."""

    seq: int
    tenant: str
    mode: str
    event_id: str
    candidates: Sequence[EventCandidate]
    quota: QuotaCharge | None = None
    """What the notifications among ``candidates`` take from the tenant's quota; its ``count`` is
    trimmed to the notifications actually kept (dedupe and acknowledged repeats may suppress some)."""


@dataclass(frozen=True, slots=True)
class EventRecorded:
    """What committing an event's processing kept: the channels to wake, and how many notifications were made."""

    channels: frozenset[str]
    notified: int


@dataclass(frozen=True, slots=True)
class EventFilter:
    mode: str
    event_name: str | None = None


@dataclass(frozen=True, slots=True)
class DueDigest:
    """A digest whose time has come: the route and recipient, who opened it (for the notification's actor), and its events' variables."""

    id: int
    tenant: str
    mode: str
    route: str
    recipient: Mapping[str, Any]
    key_prefix: str
    key_name: str | None
    due_at: float
    events: Sequence[Mapping[str, Any]]
    event_ids: Sequence[str]


@dataclass(frozen=True, slots=True)
class DigestResult:
    """What became of a due digest: its notification, or why none could be made (``reason``, ``message``)."""

    id: int
    notification: NewNotification | None = None
    reason: str | None = None
    message: str | None = None
    quota: QuotaCharge | None = None  # what its notification takes from the tenant's quota, kept as it settles


@dataclass(frozen=True, slots=True)
class AcknowledgeRequest:
    """An acknowledgement of one notification: who (a key's name), the note, and how long repeats of its route's fingerprint stay suppressed."""

    tenant: str
    mode: str
    notification_id: str
    by: str
    actor: str
    note: str | None = None
    repeat_after: float | None = None


@dataclass(frozen=True, slots=True)
class QueueDepth:
    """One channel's deliveries in the queue, for metrics: how many wait or are being sent, and the oldest due one.

    ``waiting``: queued or sending (claimed, in a dispatcher's hands). ``oldest_due_at``: when the
    longest-waiting queued delivery whose time has come became due; None when none is due.
    """

    channel: str
    waiting: int
    oldest_due_at: float | None


@dataclass(frozen=True, slots=True)
class DeadLettered:
    """A delivery that became a dead letter, as its line of history tells it: for the log and the metrics.

    ``seq`` is the line's place in the history; ``reason`` the dead reason (``statuses.DEAD_REASONS``).
    """

    seq: int
    tenant: str
    notification_id: str
    delivery_id: str
    channel: str
    provider: str | None
    reason: str | None
