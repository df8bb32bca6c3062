"""The store: outbox, idempotency records, attempts, audit trail. Only this package knows the engine."""

from gateway.store.records import (
    Acceptance,
    AttemptResult,
    ClaimedDelivery,
    IdempotencyClaim,
    NewDelivery,
    NewNotification,
    NotificationFilter,
    Page,
    ReceivedStatus,
    StoredResponse,
)
from gateway.store.sqlite import InvalidCursorError, SqliteStore

Store = SqliteStore

__all__ = [
    "Acceptance",
    "AttemptResult",
    "ClaimedDelivery",
    "IdempotencyClaim",
    "InvalidCursorError",
    "NewDelivery",
    "NewNotification",
    "NotificationFilter",
    "Page",
    "ReceivedStatus",
    "SqliteStore",
    "Store",
    "StoredResponse",
]
