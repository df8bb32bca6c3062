"""The delivery status vocabulary and the rules that keep it moving forward only.

A delivery goes ``queued → sending → sent → delivered``, then, as receipts say: an email is
``opened`` and then ``clicked``; a chat message (WhatsApp, SMS where the carrier reports it)
is ``read``. ``opened`` and ``read`` are the same step, *seen*, on different channels: neither
moves to the other, and both move on to ``clicked``. ``failed`` and ``bounced`` are terminal
side exits reachable from any non-terminal status: ``bounced`` when a receipt said the address
cannot receive (a hard bounce), ``failed`` for every other failure for good. Nothing moves
backwards, so a late or duplicate receipt can never undo progress.

A failed delivery that nothing will try again is also *dead-lettered*: a property of the
failed delivery (its ``dead_reason``, one of :data:`DEAD_REASONS`), not a status of its own.
It can be replayed. A ``failed`` delivery with no dead reason failed on a channel whose
fallback took over, or by a provider's receipt.

With the ``fallback`` strategy, the channels after the first start ``waiting``: one becomes
``queued`` when the channel before it fails for good (or does not reach ``delivered`` in
time), and ``skipped`` — terminal, nothing was sent — when an earlier channel got through.

A message to a contact may skip a channel from the start (queued or waiting) or at a claim
(sending, between retries): the contact has no address on it, opted out of it or of the
message's category, its address opted out by law (STOP), or the contact was deleted.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

QUEUED: Final = "queued"
SENDING: Final = "sending"
SENT: Final = "sent"
DELIVERED: Final = "delivered"
OPENED: Final = "opened"
CLICKED: Final = "clicked"
READ: Final = "read"
FAILED: Final = "failed"
BOUNCED: Final = "bounced"
WAITING: Final = "waiting"
SKIPPED: Final = "skipped"

PROGRESS: Final = (WAITING, QUEUED, SENDING, SENT, DELIVERED, OPENED, READ, CLICKED)
TERMINAL_FAILURES: Final = frozenset({FAILED, BOUNCED})
TERMINAL: Final = TERMINAL_FAILURES | {SKIPPED}
ALL: Final = frozenset(PROGRESS) | TERMINAL
IN_FLIGHT: Final = frozenset({QUEUED, SENDING})
REACHED: Final = frozenset({DELIVERED, OPENED, READ, CLICKED})
"""The recipient has it: delivered, or further."""
GOT_THROUGH: Final = REACHED | {SENT}
_RANK: Final = {
    WAITING: 0, QUEUED: 1, SENDING: 2, SENT: 3, DELIVERED: 4,
    OPENED: 5, READ: 5,  # seen: opened (email) and read (chat) are one step, so neither moves to the other
    CLICKED: 6,
}
SKIPPABLE: Final = frozenset({WAITING, QUEUED, SENDING})
"""What may still be skipped: nothing was sent yet (a ``sending`` one between attempts, or reclaimed)."""

# Why a delivery was dead-lettered; the dead-letter list filters on these.
PERMANENT: Final = "permanent"  # the provider refused it for good and no fallback channel was left
RETRIES_EXHAUSTED: Final = "retries_exhausted"  # transient failures until the retry schedule ran out
EXPIRED: Final = "expired"  # it could not go out before its expires_at (or its template's ttl)
DEAD_REASONS: Final = (PERMANENT, RETRIES_EXHAUSTED, EXPIRED)


def can_transition(current: str, new: str) -> bool:
    """Whether a delivery in ``current`` may move to ``new`` (never backwards, never out of a terminal)."""
    if current in TERMINAL or current == new:
        return False
    if new == SKIPPED:
        return current in SKIPPABLE
    if new in TERMINAL_FAILURES:
        return True
    return _RANK[new] > _RANK[current]


def is_final(status: str) -> bool:
    """No more sending will happen: the provider accepted it or it failed for good."""
    return status not in IN_FLIGHT


def aggregate(statuses: Iterable[str]) -> str:
    """A notification's status from its deliveries'.

    Queued while nothing has started, sending while any delivery is still in flight, then the
    furthest any delivery got; failed (or the shared failure) when none succeeded. A skipped
    delivery does not count, unless every delivery was skipped: then the notification is
    ``skipped`` too (nothing was sent, by the recipient's choice or for want of an address).
    """
    listed = list(statuses)
    seen = [QUEUED if status == WAITING else status for status in listed if status != SKIPPED]
    if listed and not seen:
        return SKIPPED
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
    "opened": OPENED,
    "clicked": CLICKED,
    "read": READ,
    "bounced": BOUNCED,
    "failed": FAILED,
}
"""What a provider receipt's status means for the delivery: the status of the same name."""
