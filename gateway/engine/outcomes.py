"""Attempt results and the statuses providers learn by themselves, on their way into the store, in shared batches.

Both go through one batcher and one write: a provider that reports ``delivered`` while its
send call is still returning (the sandbox) has its receipt written in the same transaction as
the attempt, after it, instead of being held and matched up later. Receipts that come as
callbacks are reconciled by :mod:`gateway.engine.inbound`, in the transaction that marks their
callbacks processed; one that beats its send's answer is held until the attempt is recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from gateway import statuses
from gateway.engine.batching import Batcher
from gateway.engine.opt_outs import OptOuts
from gateway.plugin_api import StatusUpdate
from gateway.store import AttemptResult, NewEvent, ReceivedStatus, Store

log = logging.getLogger(__name__)


class Outcomes:
    """Takes attempt results from the dispatcher and status updates from provider instances."""

    def __init__(self, store: Store, opt_outs: OptOuts) -> None:
        self._store = store
        self._opt_outs = opt_outs
        self._batcher: Batcher[AttemptResult | ReceivedStatus | NewEvent] = Batcher(
            self._flush, name="outcomes", retryable=store.is_transient
        )

    def record(self, result: AttemptResult) -> int:
        """Queue ``result`` for the store; its ticket: it is there once :attr:`recorded_through` reaches it."""
        return self._batcher.add(result)

    @property
    def recorded_through(self) -> int:
        return self._batcher.settled_through

    def event(self, event: NewEvent) -> None:
        self._batcher.add(event)

    def report(self, provider: str, updates: Sequence[StatusUpdate]) -> None:
        """Status updates a provider learned by itself (polling, the sandbox): reconciled in batches, after the attempts queued before them."""
        for received in received_statuses(provider, updates):
            self._batcher.add(received)

    async def _flush(self, batch: list[AttemptResult | ReceivedStatus | NewEvent]) -> None:
        results = [item for item in batch if isinstance(item, AttemptResult)]
        receipts = [item for item in batch if isinstance(item, ReceivedStatus)]
        events = [item for item in batch if isinstance(item, NewEvent)]
        self._opt_outs.note(await self._store.record_outcomes(results, receipts, events))

    async def drain(self) -> None:
        await self._batcher.drain()


def received_statuses(provider: str, updates: Sequence[StatusUpdate]) -> list[ReceivedStatus]:
    """A provider's status updates as the store reconciles them; one in a status the gateway does not know is logged and left out."""
    received = []
    for update in updates:
        status = statuses.RECEIPT_STATUSES.get(update.status)
        if status is None:
            log.warning("provider %s reported unknown status %r; ignored", provider, update.status)
            continue
        received.append(
            ReceivedStatus(provider, update.provider_message_id, status, update.occurred_at, update.error, dict(update.detail), update.delivery_id)
        )
    return received
