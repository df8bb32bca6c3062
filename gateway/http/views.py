"""How the store's records look on the wire: ids named for their kind, times in ISO 8601."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from gateway import statuses
from gateway.clock import isoformat
from gateway.policy.models import WebhookEndpointPolicy
from gateway.store import (
    Acknowledgement,
    Attempt,
    BusinessEvent,
    Contact,
    DeadLetter,
    Delivery,
    EventOutcome,
    HistoryEntry,
    Notification,
    OptOutEntry,
    Reply,
    WebhookDelivery,
    WebhookEndpointState,
)


def notification_view(item: Notification, *, full: bool) -> dict[str, Any]:
    view: dict[str, Any] = {
        "notification_id": item.id,
        "status": item.status,
        "simulated": item.simulated,
        "mode": item.mode,
        "priority": item.priority,
        "strategy": item.strategy,
        "fallback_after": item.fallback_after,
        "expires_at": _time(item.expires_at),
        "template_id": item.template_id,
        "category": item.category,
        "severity": item.severity,
        "locale": item.locale,
        "contact_id": item.contact_id,
        "template_version": item.template_version,
        "template_language": item.template_language,
        "recipient": item.recipient,
        "channels": item.channels,
        "metadata": item.metadata,
        "idempotency_key": item.idempotency_key,
        "created_at": isoformat(item.created_at),
        "updated_at": isoformat(item.updated_at),
        "deliveries": [delivery_view(d, full=full) for d in item.deliveries],
        "event_id": item.event_id,
        "route": item.route,
        "acknowledged": acknowledgement_view(item.acknowledged) if item.acknowledged is not None else None,
    }
    if full:
        view["audit"] = [history_view(entry) for entry in item.history or ()]  # "audit": the name the API has always used
    return view


def acknowledgement_view(item: Acknowledgement) -> dict[str, Any]:
    """Who acknowledged a notification (the key's name), when, and their note."""
    return {"by": item.by, "at": isoformat(item.at), "note": item.note}


def event_view(item: BusinessEvent, *, full: bool) -> dict[str, Any]:
    """A business event as received, with its effective severity and processing status; in full, what each route did.

    ``routes`` lists the matching routes in the order they fired; ``outcomes`` one line per
    route and recipient (``recipient_index`` into the event's recipients), or a single
    ``no_route_matched`` line. In a list (not ``full``) an event is its summary: its ``data`` and
    recipients (up to 512 KiB an event) are left out, and ``recipient_count`` says how many it had,
    so a page of events stays small.
    """
    received = item.received if full else _event_summary(item.received)
    view: dict[str, Any] = {
        **received,
        "severity": item.severity,
        "mode": item.mode,
        "status": "processed" if item.processed_at is not None else "pending",
        "received_at": isoformat(item.received_at),
        "received_by": item.key_name or item.key_prefix,
        "processed_at": _time(item.processed_at),
    }
    if full:
        outcomes = item.outcomes or ()
        view["routes"] = list(dict.fromkeys(outcome.route for outcome in outcomes if outcome.route is not None))
        view["outcomes"] = [event_outcome_view(outcome) for outcome in outcomes]
    return view


_EVENT_BULK: Final = ("data", "recipient", "recipients")


def _event_summary(received: Mapping[str, Any]) -> dict[str, Any]:
    """An event as received without what may be large: its data and addresses; how many recipients it named instead."""
    recipients = received.get("recipients")
    count = len(recipients) if isinstance(recipients, list) else 1
    return {name: value for name, value in received.items() if name not in _EVENT_BULK} | {"recipient_count": count}


def event_outcome_view(item: EventOutcome) -> dict[str, Any]:
    """What one route did for one recipient: notified, digested (due when, and sent as which notification) or suppressed (why)."""
    view: dict[str, Any] = {"route": item.route, "recipient_index": item.recipient_index, "result": item.result}
    if item.notification_id is not None:
        view["notification_id"] = item.notification_id
        view["notification_status"] = item.notification_status
    if item.reason is not None:
        view["reason"] = item.reason
        view["message"] = item.message
    if item.first_event_id is not None:
        view["first_event_id"] = item.first_event_id
    if item.digest_due_at is not None:
        view["digest"] = {"due_at": isoformat(item.digest_due_at), "status": item.digest_status}
    return view


def delivery_view(item: Delivery, *, full: bool) -> dict[str, Any]:
    view: dict[str, Any] = {
        "delivery_id": item.id,
        "channel": item.channel,
        "address": item.address,
        "status": item.status,
        "simulated": item.simulated,
        "provider": item.provider,
        "provider_message_id": item.provider_message_id,
        "attempt_count": item.attempt_count,
        "next_attempt_at": _time(item.next_attempt_at),
        "last_error": item.last_error,
        "dead_reason": item.dead_reason,
        "skip_reason": item.skip_reason,
        "dead_letter": _dead_letter(item),
        "updated_at": isoformat(item.updated_at),
    }
    if full:
        view["content"] = item.content
        view["attempts"] = [attempt_view(a) for a in item.attempts or ()]
    return view


def _dead_letter(item: Delivery) -> dict[str, Any] | None:
    """Whether the delivery sits in the dead-letter queue (failed for good, replayable): why, and since when."""
    if item.status != statuses.FAILED or item.dead_reason is None:
        return None
    return {"reason": item.dead_reason, "at": isoformat(item.updated_at)}


def attempt_view(item: Attempt) -> dict[str, Any]:
    return {
        "attempt_id": item.id,
        "number": item.number,
        "provider": item.provider,
        "simulated": item.simulated,
        "started_at": isoformat(item.started_at),
        "finished_at": isoformat(item.finished_at),
        "outcome": item.outcome,
        "error": item.error,
        "provider_message_id": item.provider_message_id,
        "detail": item.detail,
    }


def history_view(item: HistoryEntry) -> dict[str, Any]:
    return {
        "at": isoformat(item.at),
        "actor": item.actor,
        "action": item.action,
        "delivery_id": item.delivery_id,
        "from_status": item.from_status,
        "to_status": item.to_status,
        "reason": item.reason,
    }


def contact_view(item: Contact, opt_outs: Sequence[OptOutEntry]) -> dict[str, Any]:
    """A contact: its addresses at the top level (the fields of a send's recipient), and the legal opt-outs of those addresses."""
    fields = item.fields
    return {
        "contact_id": item.id,
        "external_id": fields.external_id,
        "mode": item.mode,
        **fields.addresses,
        "locale": fields.locale,
        "timezone": fields.timezone,
        "preferences": {"channels": dict(fields.channels), "categories": dict(fields.categories)},
        "metadata": fields.metadata,
        "opt_outs": [opt_out_view(entry) for entry in opt_outs],
        "created_at": isoformat(item.created_at),
        "updated_at": isoformat(item.updated_at),
    }


def dead_letter_view(item: DeadLetter) -> dict[str, Any]:
    """A dead letter: which delivery, why it was given up on, and when."""
    return {
        "delivery_id": item.delivery_id,
        "notification_id": item.notification_id,
        "channel": item.channel,
        "address": item.address,
        "provider": item.provider,
        "reason": item.reason,
        "error": item.error,
        "attempt_count": item.attempt_count,
        "dead_lettered_at": isoformat(item.dead_lettered_at),
        "template_id": item.template_id,
    }


def webhook_delivery_view(item: WebhookDelivery) -> dict[str, Any]:
    """One event on its way to one of the tenant's endpoints."""
    return {
        "webhook_delivery_id": item.id,
        "event_id": item.event_id,
        "type": item.event_type,
        "endpoint": item.endpoint,
        "status": item.status,
        "attempt_count": item.attempt_count,
        "last_status": item.last_status,
        "last_error": item.last_error,
        "next_attempt_at": _time(item.next_attempt_at),
        "created_at": isoformat(item.created_at),
        "updated_at": isoformat(item.updated_at),
    }


def reply_view(item: Reply) -> dict[str, Any]:
    return {
        "channel": item.channel,
        "from": item.sender,
        "body": item.body,
        "provider": item.provider,
        "provider_message_id": item.provider_message_id,
        "in_reply_to": item.in_reply_to,
        "notification_id": item.notification_id,
        "delivery_id": item.delivery_id,
        "received_at": isoformat(item.received_at),
        "detail": item.detail,
    }


def opt_out_view(item: OptOutEntry) -> dict[str, Any]:
    return {"channel": item.channel, "address": item.address, "since": isoformat(item.since), "source": item.source}


def webhook_endpoint_view(name: str, endpoint: WebhookEndpointPolicy, state: WebhookEndpointState | None) -> dict[str, Any]:
    """One of the tenant's event webhook endpoints: its policy (no secrets) and how it is faring.

    A disabling recorded for another url no longer counts: the policy has moved the endpoint.
    """
    state = state or WebhookEndpointState("", name)
    disabled = state.disabled_at is not None and state.disabled_url == endpoint.url
    status = "disabled" if disabled else "failing" if state.failing_since is not None else "active"
    return {
        "endpoint": name,
        "url": endpoint.url,
        "events": list(endpoint.events),
        "signing": endpoint.signing,
        "disable_after": endpoint.disable_after,
        "status": status,
        "failing_since": _time(state.failing_since),
        "last_success_at": _time(state.last_success_at),
        "last_failure_at": _time(state.last_failure_at),
        "last_error": state.last_error,
        "disabled_at": _time(state.disabled_at) if disabled else None,
        "disabled_reason": state.disabled_reason if disabled else None,
    }


def _time(value: float | None) -> str | None:
    return isoformat(value) if value is not None else None
