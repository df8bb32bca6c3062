"""What the business-event tests share: routes over the conftest policy, posting events and waiting for their processing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from conftest import Api

from gateway.http.appkeys import STORE

ROUTES = """
templates:
  alert:
    channels:
      email: {subject: "{{ event.severity }} {{ event.name }}", body: "certificate {{ certificate_id }} ({{ event.id }})"}
      sms: {body: "certificate {{ certificate_id }}"}
  summary:
    channels:
      email: {subject: "{{ count }} events on {{ route }}", body: "{% for e in events %}{{ e.order_id }}/{{ e.event.id }};{% endfor %}"}
routes:
  order-shipped:
    match: {event: "order.*"}
    notify: {template: shipped, channels: [sms]}
  order-billing-copy:
    match: {event: order.shipped, source: billing}
    notify: {template: shipped, channels: [email], priority: high}
  certificate:
    match: {event: ssl.certificate_expiring, severity: high}
    notify: {template: alert, channels: [email, sms], strategy: fallback, fallback_after: 10m}
    dedupe: {window: 6h, fingerprint: [event_name, data.certificate_id]}
    repeat_after: 24h
  hourly-builds:
    match: {event: build.finished}
    notify: {template: summary, channels: [email]}
    digest: {every: 1h}
  daily-reports:
    match: {event: report.ready}
    notify: {template: summary, channels: [email]}
    digest: {daily_at: "09:00"}
  other-only:
    tenant: other
    match: {event: "order.*"}
    notify: {template: shipped, channels: [sms]}
events:
  ssl.certificate_expiring: {severity: high}
"""


def shipped(event_id: str, phone: str = "+14155550100", **extra: Any) -> dict[str, Any]:
    """An order.shipped event to one recipient."""
    body: dict[str, Any] = {
        "event_id": event_id, "event_name": "order.shipped", "recipient": {"phone": phone, "email": "ada@example.com"},
        "data": {"order_id": "1001", "name": "Ada"},
    }
    return body | extra


def certificate(event_id: str, certificate_id: str = "c-1", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": event_id, "event_name": "ssl.certificate_expiring", "source": "monitoring",
        "recipient": {"email": "ops@example.com", "phone": "+14155550199"}, "data": {"certificate_id": certificate_id},
    }
    return body | extra


async def post_event(api: Api, body: dict[str, Any], *, key: str | None = None) -> tuple[int, dict[str, Any]]:
    response = await api.client.post("/api/v1/events", json=body, headers=api.headers(key))
    return response.status, await response.json()


async def wait_event(
    api: Api, event_id: str, predicate: Callable[[dict[str, Any]], bool] = lambda e: e["status"] == "processed", *, key: str | None = None
) -> dict[str, Any]:
    """Re-read the event after every commit until ``predicate`` holds (5 s at most)."""
    store = api.app[STORE]

    async def poll() -> dict[str, Any]:
        while True:
            seen = store.commits
            status, body = await api.get(f"/api/v1/events/{event_id}", key=key)
            assert status == 200, body
            if predicate(body):
                return body
            await store.wait_for_commit(seen)

    return await asyncio.wait_for(poll(), 5)


async def processed(api: Api, body: dict[str, Any], *, key: str | None = None) -> dict[str, Any]:
    """Post an event, expect 202, and return it once processed."""
    status, answer = await post_event(api, body, key=key)
    assert status == 202, answer
    return await wait_event(api, body["event_id"], key=key)
