"""The embedded store: SQLite in WAL mode, one group-commit writer, snapshot readers beside it.

Writes (accepts, claims, attempt results, receipts) are functions run by
:class:`~gateway.store.writer.GroupCommitWriter` inside shared transactions; reads are
functions too, each run whole inside its own read transaction by
:class:`~gateway.store.reader.SnapshotReader`, so every read sees every commit made before it.

One module per aggregate, each holding its part of :class:`SqliteStore` and the statements it
runs: ``outbox`` (accepting, claiming), ``outcomes`` and ``receipts`` (what happened to a
delivery), ``changes`` (the history and fallback moves a write sets off), ``reads``,
``dead_letters``, ``inbound`` (callbacks, replies, opt-outs), ``webhooks`` (event webhooks),
``retention`` (purges by age, reclaiming pages), ``quotas`` (usage kept with acceptances), ``contacts`` (and erasing deleted ones),
``business_events`` (events posted, what routes made of them, dedupe, digests), ``acknowledgements``, ``cursors``, ``monitoring`` (what metrics and the log read); ``base``
holds the connections.
"""

from gateway.store.protocol import Store
from gateway.store.sqlite.acknowledgements import AcknowledgementStore
from gateway.store.sqlite.business_events import BusinessEventStore
from gateway.store.sqlite.contacts import ContactStore
from gateway.store.sqlite.dead_letters import DeadLetters
from gateway.store.sqlite.inbound import InboundStore
from gateway.store.sqlite.monitoring import Monitoring
from gateway.store.sqlite.outbox import Outbox
from gateway.store.sqlite.outcomes import OutcomeWrites
from gateway.store.sqlite.quotas import QuotaStore
from gateway.store.sqlite.reads import Reads
from gateway.store.sqlite.retention import RetentionStore
from gateway.store.sqlite.webhooks import WebhookStore


class SqliteStore(
    Outbox, OutcomeWrites, Reads, DeadLetters, InboundStore, WebhookStore, RetentionStore, QuotaStore, ContactStore,
    BusinessEventStore, AcknowledgementStore, Monitoring,
):
    """The outbox, idempotency records, attempts, callbacks, event webhooks, quota usage, contacts and business events in one SQLite file."""


_IMPLEMENTS: type[Store] = SqliteStore  # mypy checks here that SqliteStore is a Store

__all__ = ["SqliteStore"]
