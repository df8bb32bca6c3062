"""What every answer of the API looks like, as pydantic models: the response schemas of the API description.

:mod:`gateway.http.views` builds answers as plain dicts (fast, and the wire format stays in one
place); these models describe those dicts, one model per view, so ``GET /openapi.json`` can say
what each endpoint answers. They are not used to serialize: the tests check that real answers
validate against the schemas generated from them, so a view and its model cannot drift apart
unnoticed. ``extra="forbid"`` is what makes a field added to a view without its model fail
those tests.

Times are ISO 8601 in UTC with milliseconds (``2027-01-15T08:00:00.000Z``); ids carry their
kind as a prefix (``ntf_``, ``dlv_``, ``ctc_``, …).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Mode = Literal["live", "test"]
DeliveryStatus = Literal["waiting", "queued", "sending", "sent", "delivered", "opened", "read", "clicked", "failed", "bounced", "skipped"]
"""Every status a delivery (and so a notification) can have: :data:`gateway.statuses.ALL`."""
DeadReason = Literal["permanent", "retries_exhausted", "expired"]
MetadataValue = str | int | float | bool


class _View(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Health(_View):
    """The process is up."""

    status: Literal["ok"]


class PolicyIssueView(_View):
    """One problem in the policy files on disk, located by file, line and path."""

    file: str
    line: int | None
    path: str
    message: str


class PolicyStatus(_View):
    """The policy set being served, and why the files on disk were last refused if they still are."""

    version: str
    files: list[str]
    last_reload_at: datetime | None
    last_error: list[PolicyIssueView] | None
    last_error_at: datetime | None


class ReadinessChecks(_View):
    store: bool
    policies: bool
    dispatcher: bool


class Readiness(_View):
    """Whether the gateway can take and deliver traffic (200), or which check fails (503)."""

    ready: bool
    checks: ReadinessChecks
    policy: PolicyStatus | None = None


class PublicKey(_View):
    """The Ed25519 key that verifies ``v1a`` event webhook signatures."""

    public_key: str
    algorithm: Literal["ed25519"]
    signature_version: Literal["v1a"]


class AcceptedDelivery(_View):
    delivery_id: str
    channel: str
    status: Literal["queued", "skipped"]
    skip_reason: str | None = Field(None, description="Present when the delivery is skipped from the start (a contact's preference).")


class SendAccepted(_View):
    """A notification accepted and kept: its deliveries are queued (or skipped, for a contact who does not want them)."""

    notification_id: str
    status: Literal["queued", "skipped"]
    mode: Mode
    deliveries: list[AcceptedDelivery]
    contact_id: str | None = Field(None, description="Present when the send named a contact.")


class BulkAcceptedRow(SendAccepted):
    index: int = Field(description="The row of ``recipients`` this notification is for.")


class ErrorDetailView(_View):
    field: str
    message: str
    code: str | None = None


class ErrorInfo(_View):
    code: str = Field(description="What went wrong, for a program to branch on (each response lists the codes it can carry).")
    message: str = Field(description="What went wrong, for a person.")
    details: list[ErrorDetailView] = Field(description="One entry per problem in the request: the field, what is wrong, and its code.")


class ErrorBody(_View):
    """The one shape of every refusal."""

    error: ErrorInfo


class BulkRefusedRow(_View):
    """A row that could not be accepted, and why, in the error shape's terms."""

    index: int
    code: str
    message: str
    details: list[ErrorDetailView]


class BulkAccepted(_View):
    """How many rows were accepted and refused; the accepted ones are kept, the refused ones are not."""

    accepted: int
    rejected: int
    notifications: list[BulkAcceptedRow]
    errors: list[BulkRefusedRow]


class AttemptView(_View):
    """One try of a delivery through one provider instance."""

    attempt_id: str
    number: int
    provider: str | None
    simulated: bool
    started_at: datetime
    finished_at: datetime
    outcome: str
    error: str | None
    provider_message_id: str | None
    detail: dict[str, Any]


class DeadLetterMark(_View):
    reason: DeadReason
    at: datetime


class DeliverySummary(_View):
    """One channel of a notification: where it goes, how far it got."""

    delivery_id: str
    channel: str
    address: str
    status: DeliveryStatus
    simulated: bool
    provider: str | None
    provider_message_id: str | None
    attempt_count: int
    next_attempt_at: datetime | None
    last_error: str | None
    dead_reason: DeadReason | None
    skip_reason: str | None
    dead_letter: DeadLetterMark | None = Field(description="Set while the delivery sits in the dead-letter queue (replayable).")
    updated_at: datetime


class DeliveryDetail(DeliverySummary):
    """A delivery with what was sent and every attempt."""

    content: dict[str, Any]
    attempts: list[AttemptView]


class AcknowledgementView(_View):
    """Who acknowledged a notification (the key's name, else its prefix), when, and their note."""

    by: str
    at: datetime
    note: str | None


class HistoryEntryView(_View):
    """One line of a notification's audit trail: every status change, with time, actor and reason."""

    at: datetime
    actor: str
    action: str
    delivery_id: str | None
    from_status: str | None
    to_status: str | None
    reason: str | None


class _Notification(_View):
    notification_id: str
    status: DeliveryStatus
    simulated: bool
    mode: Mode
    priority: Literal["high", "normal", "bulk"]
    strategy: Literal["all", "fallback"]
    fallback_after: float | None
    expires_at: datetime | None
    template_id: str | None
    category: str | None
    severity: str | None
    locale: str | None
    contact_id: str | None
    template_version: str | None
    template_language: str | None
    recipient: dict[str, str]
    channels: list[str]
    metadata: dict[str, Any]
    idempotency_key: str | None
    created_at: datetime
    updated_at: datetime
    event_id: str | None
    route: str | None
    acknowledged: AcknowledgementView | None


class NotificationSummary(_Notification):
    """A notification as a list shows it: its deliveries without content or attempts."""

    deliveries: list[DeliverySummary]


class NotificationDetail(_Notification):
    """A notification in full: deliveries with content and attempts, and the audit trail."""

    deliveries: list[DeliveryDetail]
    audit: list[HistoryEntryView]


class NotificationPage(_View):
    items: list[NotificationSummary]
    next_cursor: str | None


class Acknowledged(_View):
    """The acknowledgement of a notification: the first one, if it was acknowledged before."""

    notification_id: str
    acknowledged: AcknowledgementView


class ChannelCapability(_View):
    channel: str
    description: str
    recipient_fields: list[str]
    template_required: bool
    raw_allowed: bool
    subject: bool
    providers: list[str]
    available: bool
    max_body_chars: int | None


class Capabilities(_View):
    """What each channel needs, and which provider instances serve it for the caller."""

    mode: Mode
    channels: list[ChannelCapability]


class DeadLetterView(_View):
    """A delivery the engine gave up on: which, why, and when."""

    delivery_id: str
    notification_id: str
    channel: str
    address: str
    provider: str | None
    reason: DeadReason | None
    error: str | None
    attempt_count: int
    dead_lettered_at: datetime
    template_id: str | None


class DeadLetterPage(_View):
    items: list[DeadLetterView]
    next_cursor: str | None


class ReplayedMatching(_View):
    """How many dead letters were re-queued; ``more`` says others match: ask again."""

    replayed: int
    delivery_ids: list[str]
    more: bool


class ReplayedOne(_View):
    replayed: list[str]


class WebhookDeliveryView(_View):
    """One event on its way to one of the tenant's endpoints."""

    webhook_delivery_id: str
    event_id: str
    type: str
    endpoint: str
    status: Literal["pending", "succeeded", "dead", "disabled"]
    attempt_count: int
    last_status: int | None
    last_error: str | None
    next_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime


class WebhookDeliveryPage(_View):
    items: list[WebhookDeliveryView]
    next_cursor: str | None


class WebhooksReplayedSince(_View):
    replayed: int
    webhook_delivery_ids: list[str]


class WebhookEndpointView(_View):
    """One of the tenant's event webhook endpoints: its policy (no secrets) and how it is faring."""

    endpoint: str
    url: str
    events: list[str]
    signing: Literal["hmac", "ed25519"]
    disable_after: str | None
    status: Literal["active", "failing", "disabled"]
    failing_since: datetime | None
    last_success_at: datetime | None
    last_failure_at: datetime | None
    last_error: str | None
    disabled_at: datetime | None
    disabled_reason: str | None


class WebhookEndpointList(_View):
    items: list[WebhookEndpointView]


class EndpointEnabled(_View):
    """The endpoint after enabling it, and how many held-back deliveries were queued again."""

    endpoint: WebhookEndpointView
    requeued: int


class ReplyView(_View):
    """A message a recipient sent back, linked to the message it answers when the vendor says which."""

    channel: str
    from_: str = Field(alias="from")
    body: str
    provider: str
    provider_message_id: str | None
    in_reply_to: str | None
    notification_id: str | None
    delivery_id: str | None
    received_at: datetime
    detail: dict[str, Any]


class ReplyPage(_View):
    items: list[ReplyView]
    next_cursor: str | None


class OptOutView(_View):
    """An address that asked to hear nothing more on a channel, since when, and how it was recorded."""

    channel: str
    address: str
    since: datetime
    source: str


class OptOutPage(_View):
    items: list[OptOutView]
    next_cursor: str | None


class OptOutRecorded(_View):
    channel: str
    address: str
    created: bool = Field(description="False when the address had already opted out.")


class ContactPreferences(_View):
    channels: dict[str, bool]
    categories: dict[str, bool]


class ContactView(BaseModel):
    """A contact. Its addresses sit at the top level under the recipient fields (``email``, ``phone``, …)."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, str]

    contact_id: str
    external_id: str | None
    mode: Mode
    locale: str | None
    timezone: str | None
    preferences: ContactPreferences
    metadata: dict[str, MetadataValue]
    opt_outs: list[OptOutView] = Field(description="Legal opt-outs (STOP replies) of the contact's addresses: read-only.")
    created_at: datetime
    updated_at: datetime


class ContactPage(_View):
    items: list[ContactView]
    next_cursor: str | None


class EventAccepted(_View):
    """``accepted`` (202): kept, to be routed; ``duplicate`` (200): the tenant used this ``event_id`` before, nothing was done."""

    status: Literal["accepted", "duplicate"]
    event_id: str


class EventActor(_View):
    type: str
    id: str


class DigestMark(_View):
    due_at: datetime
    status: str | None


class EventOutcomeView(_View):
    """What one route did for one recipient: notified, digested or suppressed (why)."""

    route: str | None
    recipient_index: int | None
    result: str
    notification_id: str | None = None
    notification_status: str | None = None
    reason: str | None = None
    message: str | None = None
    first_event_id: str | None = None
    digest: DigestMark | None = None


class _Event(_View):
    event_id: str
    event_name: str
    source: str | None = None
    occurred_at: str | None = None
    actor: EventActor | None = None
    contact_id: str | None = None
    external_id: str | None = None
    severity: Literal["low", "medium", "high", "critical"]
    mode: Mode
    status: Literal["pending", "processed"]
    received_at: datetime
    received_by: str
    processed_at: datetime | None


class EventSummary(_Event):
    """An event as a list shows it: without its data and addresses; ``recipient_count`` says how many it named."""

    recipient_count: int


class EventDetail(_Event):
    """An event as received, whether it was processed, and what each matching route did for each recipient."""

    data: dict[str, Any]
    recipient: dict[str, str | int] | None = None
    recipients: list[dict[str, str | int]] | None = None
    routes: list[str]
    outcomes: list[EventOutcomeView]


class EventPage(_View):
    items: list[EventSummary]
    next_cursor: str | None
