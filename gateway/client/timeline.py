"""``tidings status``: a notification as the API returns it, told for a person on a terminal.

The answer to "what happened to this message?": the notification's status, each delivery (its
channel, address, provider, attempts, and why it failed or was skipped), then its history in
order, one line per entry, each naming the channel it concerns. ``--json`` prints the API's own
view instead, for programs and for details this leaves out.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any


def render(view: Mapping[str, Any]) -> list[str]:
    """The lines ``tidings status`` prints for one notification view (``GET /api/v1/notifications/{id}``)."""
    deliveries: Sequence[Mapping[str, Any]] = view.get("deliveries") or []
    channels = {d.get("delivery_id"): str(d.get("channel")) for d in deliveries}
    width = max((len(name) for name in channels.values()), default=0)
    return [
        *_heading(view),
        "",
        "deliveries:",
        *(line for delivery in deliveries for line in _delivery(delivery, width)),
        "",
        "timeline:",
        *(_entry(entry, channels, width) for entry in view.get("audit") or []),
    ]


def _heading(view: Mapping[str, Any]) -> Iterator[str]:
    marks = [str(view.get("mode"))] + (["simulated"] if view.get("simulated") else [])
    yield f"{view.get('notification_id')}  {view.get('status')}  ({', '.join(marks)})"
    content = f"template {view['template_id']}" if view.get("template_id") else "raw body"
    yield f"  {content}, created {view.get('created_at')}, updated {view.get('updated_at')}"
    recipient = view.get("recipient") or {}
    if view.get("contact_id"):
        yield f"  contact {view['contact_id']}"
    if recipient:
        yield "  to " + ", ".join(f"{name} {value}" for name, value in recipient.items())
    if view.get("event_id"):
        yield f"  from event {view['event_id']} (route {view.get('route')})"
    acknowledged = view.get("acknowledged")
    if acknowledged:
        yield f"  acknowledged by {acknowledged.get('by')} at {acknowledged.get('at')}"


def _delivery(delivery: Mapping[str, Any], width: int) -> Iterator[str]:
    attempts: Sequence[Mapping[str, Any]] = delivery.get("attempts") or []
    facts = [str(delivery.get("status"))]
    if delivery.get("provider"):
        facts.append(f"via {delivery['provider']}")
    facts.append(f"{delivery.get('attempt_count', len(attempts))} attempt(s)")
    if delivery.get("simulated"):
        facts.append("simulated")
    yield f"  {str(delivery.get('channel')):<{width}}  {delivery.get('address') or '-'}  {', '.join(facts)}  [{delivery.get('delivery_id')}]"
    indent = " " * (width + 4)
    dead = delivery.get("dead_letter")
    if dead:
        yield f"{indent}dead letter: {dead.get('reason')} since {dead.get('at')} (tidings dead-letters replay {delivery.get('delivery_id')})"
    if delivery.get("skip_reason"):
        yield f"{indent}skipped: {delivery['skip_reason']}"
    if delivery.get("next_attempt_at"):
        yield f"{indent}next attempt at {delivery['next_attempt_at']}"
    for attempt in attempts:
        error = f": {attempt['error']}" if attempt.get("error") else ""
        yield f"{indent}attempt {attempt.get('number')} at {attempt.get('started_at')} via {attempt.get('provider')}: {attempt.get('outcome')}{error}"


def _entry(entry: Mapping[str, Any], channels: Mapping[Any, str], width: int) -> str:
    channel = channels.get(entry.get("delivery_id"), "")
    change = entry.get("action")
    if entry.get("from_status") or entry.get("to_status"):
        before = f" {entry['from_status']}" if entry.get("from_status") else ""
        change = f"{change}{before} -> {entry.get('to_status') or '-'}"
    reason = f": {entry['reason']}" if entry.get("reason") else ""
    return f"  {entry.get('at')}  {channel:<{width}}  {change}{reason} (by {entry.get('actor')})"
