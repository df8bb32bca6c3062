"""How stored notifications look on the wire: ids named for their kind, times in ISO 8601."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway import statuses
from gateway.clock import isoformat
from gateway.policy.models import WebhookEndpointPolicy
from gateway.store import WebhookEndpointState


def notification_view(item: Mapping[str, Any], *, full: bool) -> dict[str, Any]:
    view: dict[str, Any] = {
        "notification_id": item["id"],
        "status": item["status"],
        "mode": item["mode"],
        "priority": item["priority"],
        "strategy": item["strategy"],
        "fallback_after": item["fallback_after"],
        "expires_at": isoformat(item["expires_at"]) if item["expires_at"] is not None else None,
        "template_id": item["template_id"],
        "recipient": item["recipient"],
        "channels": item["channels"],
        "metadata": item["metadata"],
        "idempotency_key": item["idempotency_key"],
        "created_at": isoformat(item["created_at"]),
        "updated_at": isoformat(item["updated_at"]),
        "deliveries": [delivery_view(d, full=full) for d in item["deliveries"]],
    }
    if full:
        view["audit"] = [audit_view(event) for event in item["audit"]]
    return view


def delivery_view(item: Mapping[str, Any], *, full: bool) -> dict[str, Any]:
    view: dict[str, Any] = {
        "delivery_id": item["id"],
        "channel": item["channel"],
        "address": item["address"],
        "status": item["status"],
        "provider": item["provider"],
        "provider_message_id": item["provider_message_id"],
        "attempt_count": item["attempts"],
        "next_attempt_at": isoformat(item["next_attempt_at"]) if item["status"] in statuses.IN_FLIGHT else None,
        "last_error": item["last_error"],
        "dead_reason": item["dead_reason"],
        "updated_at": isoformat(item["updated_at"]),
    }
    if full:
        view["content"] = item["content"]
        view["attempts"] = [attempt_view(a) for a in item.get("attempt_log", ())]
    return view


def attempt_view(item: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "attempt_id": item["id"],
        "number": item["number"],
        "provider": item["provider"] or None,  # none: no instance served the channel when it was tried
        "started_at": isoformat(item["started_at"]),
        "finished_at": isoformat(item["finished_at"]),
        "outcome": item["outcome"],
        "error": item["error"],
        "provider_message_id": item["provider_message_id"],
        "detail": item["detail"],
    }


def audit_view(item: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "at": isoformat(item["at"]),
        "actor": item["actor"],
        "action": item["action"],
        "delivery_id": item["delivery_id"],
        "from_status": item["from_status"],
        "to_status": item["to_status"],
        "reason": item["reason"],
    }


def dead_letter_view(item: Mapping[str, Any]) -> dict[str, Any]:
    """A dead letter: which delivery, why it was given up on, and when (its last update)."""
    return {
        "delivery_id": item["id"],
        "notification_id": item["notification_id"],
        "channel": item["channel"],
        "address": item["address"],
        "provider": item["provider"],
        "reason": item["dead_reason"],
        "error": item["last_error"],
        "attempt_count": item["attempts"],
        "dead_lettered_at": isoformat(item["updated_at"]),
        "template_id": item["template_id"],
    }


def webhook_delivery_view(item: Mapping[str, Any]) -> dict[str, Any]:
    """One event on its way to one of the tenant's endpoints."""
    return {
        "webhook_delivery_id": item["id"],
        "event_id": item["event_id"],
        "type": item["type"],
        "endpoint": item["endpoint"],
        "status": item["status"],
        "attempt_count": item["attempts"],
        "last_status": item["last_status"],
        "last_error": item["last_error"],
        "next_attempt_at": isoformat(item["next_attempt_at"]) if item["status"] == "pending" else None,
        "created_at": isoformat(item["created_at"]),
        "updated_at": isoformat(item["updated_at"]),
    }


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
