"""The store: outbox, idempotency records, attempts, audit trail. Only this package knows the engine."""

from gateway.store.records import (
    Acceptance,
    AttemptResult,
    ClaimedDelivery,
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
    StoredResponse,
)
from gateway.store.sqlite import InvalidCursorError, SqliteStore, is_transient

Store = SqliteStore

__all__ = [
    "Acceptance",
    "AttemptResult",
    "ClaimedDelivery",
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
    "StoredResponse",
    "is_transient",
]
