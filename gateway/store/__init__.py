"""The store: outbox, idempotency records, attempts, audit trail. Only this package knows the engine."""

from gateway.store.records import (
    Acceptance,
    AttemptResult,
    ClaimedDelivery,
    ClaimedWebhook,
    DeadLetterFilter,
    IdempotencyClaim,
    InboundRecord,
    NewDelivery,
    NewEvent,
    NewNotification,
    NewReply,
    NotificationFilter,
    Page,
    ReceivedStatus,
    Replayed,
    StoredEvent,
    StoredResponse,
    WebhookEndpointState,
    WebhookResult,
    WebhookTarget,
)
from gateway.store.sqlite import InvalidCursorError, SqliteStore, is_transient

Store = SqliteStore

__all__ = [
    "Acceptance",
    "AttemptResult",
    "ClaimedDelivery",
    "ClaimedWebhook",
    "DeadLetterFilter",
    "IdempotencyClaim",
    "InboundRecord",
    "InvalidCursorError",
    "NewDelivery",
    "NewEvent",
    "NewNotification",
    "NewReply",
    "NotificationFilter",
    "Page",
    "ReceivedStatus",
    "Replayed",
    "SqliteStore",
    "Store",
    "StoredEvent",
    "StoredResponse",
    "WebhookEndpointState",
    "WebhookResult",
    "WebhookTarget",
    "is_transient",
]
