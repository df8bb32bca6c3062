"""The delivery status vocabulary and the rules that keep it moving forward only.

A delivery goes ``queued → sending → sent → delivered → read``; ``failed``, ``bounced`` and
``dead_lettered`` are terminal side exits reachable from any non-terminal status. Nothing
moves backwards, so a late or duplicate receipt can never undo progress.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

QUEUED: Final = "queued"
SENDING: Final = "sending"
SENT: Final = "sent"
DELIVERED: Final = "delivered"
READ: Final = "read"
FAILED: Final = "failed"
BOUNCED: Final = "bounced"
DEAD_LETTERED: Final = "dead_lettered"

PROGRESS: Final = (QUEUED, SENDING, SENT, DELIVERED, READ)
TERMINAL_FAILURES: Final = frozenset({FAILED, BOUNCED, DEAD_LETTERED})
ALL: Final = frozenset(PROGRESS) | TERMINAL_FAILURES
IN_FLIGHT: Final = frozenset({QUEUED, SENDING})
_RANK: Final = {status: rank for rank, status in enumerate(PROGRESS)}


def can_transition(current: str, new: str) -> bool:
    """Whether a delivery in ``current`` may move to ``new`` (never backwards, never out of a terminal)."""
    if current in TERMINAL_FAILURES or current == new:
        return False
    if new in TERMINAL_FAILURES:
        return True
    return _RANK[new] > _RANK[current]


def is_final(status: str) -> bool:
    """No more sending will happen: the provider accepted it or it failed for good."""
    return status not in IN_FLIGHT


def aggregate(statuses: Iterable[str]) -> str:
    """A notification's status from its deliveries'.

    Queued while nothing has started, sending while any delivery is still in flight, then the
    furthest any delivery got; failed (or the shared failure) when none succeeded.
    """
    seen = list(statuses)
    if all(status == QUEUED for status in seen):
        return QUEUED
    if any(status in IN_FLIGHT for status in seen):
        return SENDING
    succeeded = [status for status in seen if status in _RANK]
    if succeeded:
        return max(succeeded, key=_RANK.__getitem__)
    distinct = set(seen)
    return distinct.pop() if len(distinct) == 1 else FAILED


RECEIPT_STATUSES: Final = {
    "sent": SENT,
    "delivered": DELIVERED,
    "read": READ,
    "opened": READ,
    "clicked": READ,
    "bounced": BOUNCED,
    "failed": FAILED,
}
"""What a provider receipt's status means for the delivery (an opened email has been read)."""
