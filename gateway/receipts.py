"""Provider status reports on their way into the store, batched, whatever path they came by."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from gateway import statuses
from gateway.batching import Batcher
from gateway.plugin_api import InboundReply, StatusUpdate
from gateway.store import ReceivedStatus, Store

log = logging.getLogger(__name__)


class ReceiptSink:
    """Takes status updates from provider instances and reconciles them in batches."""

    def __init__(self, store: Store) -> None:
        self._batcher: Batcher[ReceivedStatus] = Batcher(store.apply_statuses, name="receipts")

    def report(self, provider: str, updates: Sequence[StatusUpdate | InboundReply]) -> None:
        for update in updates:
            if not isinstance(update, StatusUpdate):
                log.info("provider %s reported a reply from %s; replies are not stored yet", provider, update.sender)
                continue
            status = statuses.RECEIPT_STATUSES.get(update.status)
            if status is None:
                log.warning("provider %s reported unknown status %r; ignored", provider, update.status)
                continue
            self._batcher.add(
                ReceivedStatus(provider, update.provider_message_id, status, update.occurred_at, update.error, dict(update.detail))
            )

    async def drain(self) -> None:
        await self._batcher.drain()
