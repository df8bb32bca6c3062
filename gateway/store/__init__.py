"""The store: the :class:`Store` protocol, the records it takes and returns, and its SQLite backend.

Everything outside this package annotates with ``Store``; only the code that builds the store
(``gateway.app``) names :class:`SqliteStore`.
"""

from gateway.store.protocol import InvalidCursorError, StorageUnavailableError, Store
from gateway.store.records import (
    Acceptance,
    AttemptResult,
    ClaimedDelivery,
    ClaimedWebhook,
    DeadLetterFilter,
    EventHead,
    IdempotencyClaim,
    InboundRecord,
    NewDelivery,
    NewEvent,
    NewNotification,
    NewOptOut,
    NewReply,
    NotificationFilter,
    Page,
    ReceivedStatus,
    RefusedCallback,
    Replayed,
    StoredEvent,
    StoredResponse,
    WebhookEndpointState,
    WebhookResult,
    WebhookTarget,
)
from gateway.store.sqlite import SqliteStore
from gateway.store.stored import Attempt, DeadLetter, Delivery, HistoryEntry, Notification, OptOutEntry, Reply, StoredInbound, WebhookDelivery

__all__ = [
    "Acceptance",
    "Attempt",
    "AttemptResult",
    "HistoryEntry",
    "ClaimedDelivery",
    "ClaimedWebhook",
    "DeadLetter",
    "DeadLetterFilter",
    "Delivery",
    "EventHead",
    "IdempotencyClaim",
    "InboundRecord",
    "InvalidCursorError",
    "NewDelivery",
    "NewEvent",
    "NewNotification",
    "NewOptOut",
    "NewReply",
    "Notification",
    "NotificationFilter",
    "OptOutEntry",
    "Page",
    "ReceivedStatus",
    "RefusedCallback",
    "Replayed",
    "Reply",
    "SqliteStore",
    "StorageUnavailableError",
    "Store",
    "StoredEvent",
    "StoredInbound",
    "StoredResponse",
    "WebhookDelivery",
    "WebhookEndpointState",
    "WebhookResult",
    "WebhookTarget",
]
