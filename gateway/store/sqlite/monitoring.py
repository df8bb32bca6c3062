"""What metrics and the log read from the store: queue depths per channel, and the dead letters the history tells of."""

from __future__ import annotations

from typing import Final

from gateway import lifecycle
from gateway.store.records import DeadLettered, QueueDepth
from gateway.store.sqlite.base import LIVE, StoreBase

QUEUE_DEPTHS: Final = (
    # Only columns of the partial index deliveries_due_by_tenant: a scrape reads the index of due work, not the table.
    "SELECT channel, count(*), min(CASE WHEN next_attempt_at <= ? THEN next_attempt_at END) "
    f"FROM deliveries INDEXED BY deliveries_due_by_tenant WHERE {LIVE} GROUP BY channel ORDER BY channel"
)
DEAD_LETTERED: Final = (
    # A range of the history's primary key; the line's delivery is found by its own primary key.
    "SELECT h.seq, h.tenant, h.notification_id, h.delivery_id, d.channel, d.provider, d.dead_reason "
    "FROM history h JOIN deliveries d ON d.id = h.delivery_id "
    "WHERE h.seq > ? AND h.seq <= ? AND h.action = ? ORDER BY h.seq LIMIT ?"
)


class Monitoring(StoreBase):
    """Reads for ``/metrics`` and the dead-letter log."""

    async def queue_depths(self) -> list[QueueDepth]:
        rows = await self._fetch(QUEUE_DEPTHS, (self.clock.now(),))
        return [QueueDepth(channel, waiting, oldest) for channel, waiting, oldest in rows]

    async def dead_lettered_after(self, seq: int, *, through: int, limit: int) -> list[DeadLettered]:
        rows = await self._fetch(DEAD_LETTERED, (seq, through, lifecycle.DEAD_LETTERED, limit))
        return [DeadLettered(*row) for row in rows]
