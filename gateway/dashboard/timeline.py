"""What happened to a message: its history and its deliveries' attempts as one list, in the order they happened.

A notification's history says every change of status (who, from what to what, why); its
attempts say every call to a provider (which instance, how long, what it answered), including
those that changed nothing. Read apart, an operator has to line them up by hand to answer "I
never got the SMS"; merged here by time, each step names its channel and says it in a line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from gateway.store import Notification

ACCEPTED: Final = "accepted"
"""The action of a notification's first history line, written when the store took it in."""


@dataclass(frozen=True, slots=True)
class Step:
    """One line of the timeline: when, on which channel (None: the notification itself), what, who, and any detail."""

    at: float
    channel: str | None
    what: str
    actor: str | None
    detail: str | None
    failed: bool = False


def timeline(notification: Notification) -> list[Step]:
    """Every status change and every attempt of ``notification``, oldest first; at one moment, acceptance, then attempts, then changes.

    The sort is stable, so steps of one kind at one moment keep the order the store gave them.
    """
    channels = {delivery.id: delivery.channel for delivery in notification.deliveries}
    steps: list[tuple[float, int, Step]] = []
    for entry in notification.history or ():
        moved = f"{entry.from_status} → {entry.to_status}" if entry.from_status and entry.to_status else entry.to_status
        what = f"{entry.action}: {moved}" if moved else entry.action
        failed = entry.to_status in ("failed", "bounced")
        rank = 0 if entry.action == ACCEPTED else 2  # taken in before any attempt; a change after the attempt that made it
        steps.append((entry.at, rank, Step(entry.at, channels.get(entry.delivery_id or ""), what, entry.actor, entry.reason, failed)))
    for delivery in notification.deliveries:
        for attempt in delivery.attempts or ():
            instance = attempt.provider or "no provider instance"
            took = f" in {(attempt.finished_at - attempt.started_at) * 1000:.0f} ms" if attempt.finished_at >= attempt.started_at else ""
            what = f"attempt {attempt.number} via {instance}: {attempt.outcome}{took}"
            detail = attempt.error or (f"provider message id {attempt.provider_message_id}" if attempt.provider_message_id else None)
            step = Step(attempt.started_at, delivery.channel, what, None, detail, attempt.outcome != "sent")
            steps.append((attempt.started_at, 1, step))
    steps.sort(key=lambda item: (item[0], item[1]))
    return [step for _at, _rank, step in steps]
