"""``/api/v1/notifications``: send one, send in bulk, read one, list them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import orjson
from aiohttp import web

from gateway import ids, statuses
from gateway.engine.intake import Row, RowRefusal
from gateway.engine.submission import BulkRequest, SendRequest, body_digest
from gateway.errors import ErrorDetail, NotFoundError, PayloadTooLargeError, ValidationError
from gateway.http.api import json_response, parse_model, raw_json_response, read_json
from gateway.http.appkeys import INTAKE, SETTINGS, STORE
from gateway.http.auth import caller, policy_of
from gateway.http.paging import bad_parameter, one_of, page_response
from gateway.http.rate_limits import counted
from gateway.http.views import notification_view
from gateway.store import Acceptance, IdempotencyClaim, NewNotification, NotificationFilter

routes = web.RouteTableDef()
IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
MAX_KEY_LENGTH: Final = 255


@routes.post("/api/v1/notifications/send")
@counted
async def send(request: web.Request) -> web.Response:
    """Accept one notification to one recipient on one or more channels."""
    body = await read_json(request)
    payload: SendRequest = parse_model(SendRequest, body)
    claim = _idempotency(request, payload.idempotency_key, "send", body)
    acceptance = await request.app[INTAKE].send(policy_of(request), caller(request), payload, claim, _send_answer)
    return _answer(acceptance)


@routes.post("/api/v1/notifications/bulk")
@counted
async def bulk(request: web.Request) -> web.Response:
    """Accept one notification per recipient row; rows that fail validation are reported, not queued."""
    body = await read_json(request)
    limit = request.app[SETTINGS].bulk_max_rows
    rows = body.get("recipients")
    if isinstance(rows, list) and len(rows) > limit:
        raise PayloadTooLargeError(f"A bulk request may carry at most {limit} recipients (got {len(rows)}).", code="too_many_recipients")
    payload: BulkRequest = parse_model(BulkRequest, body)
    claim = _idempotency(request, payload.idempotency_key, "bulk", body)
    acceptance = await request.app[INTAKE].bulk(policy_of(request), caller(request), payload, claim, _bulk_answer)
    return _answer(acceptance)


def _send_answer(notification: NewNotification) -> bytes:
    return orjson.dumps(_accepted(notification))


def _bulk_answer(accepted: Sequence[Row], refused: Sequence[RowRefusal]) -> bytes:
    return orjson.dumps(
        {
            "accepted": len(accepted),
            "rejected": len(refused),
            "notifications": [{"index": index, **_accepted(notification)} for index, notification in accepted],
            "errors": [{"index": refusal.index, **refusal.error.body()["error"]} for refusal in refused],
        }
    )


def _accepted(notification: NewNotification) -> dict[str, Any]:
    """The answer for one accepted notification: queued, except the deliveries to a contact skipped from the start (and why)."""
    deliveries = [
        {"delivery_id": d.id, "channel": d.channel, "status": statuses.SKIPPED if d.skip_reason else statuses.QUEUED} | _skipped(d.skip_reason)
        for d in notification.deliveries
    ]
    answer = {
        "notification_id": notification.id,
        "status": statuses.aggregate(d["status"] for d in deliveries),
        "mode": notification.mode,
        "deliveries": deliveries,
    }
    return answer | {"contact_id": notification.contact_id} if notification.contact_id else answer


def _skipped(reason: str | None) -> dict[str, str]:
    return {"skip_reason": reason} if reason else {}


def _idempotency(request: web.Request, field: str | None, route: str, body: dict[str, Any]) -> IdempotencyClaim | None:
    header = request.headers.get(IDEMPOTENCY_HEADER)
    if header is not None and not 0 < len(header) <= MAX_KEY_LENGTH:
        raise ValidationError(
            f"{IDEMPOTENCY_HEADER} must be 1 to {MAX_KEY_LENGTH} characters.",
            code="invalid_idempotency_key",
            details=[ErrorDetail(IDEMPOTENCY_HEADER, "must be 1 to 255 characters", "invalid_idempotency_key")],
        )
    if header is not None and field is not None and header != field:
        raise ValidationError(
            "The Idempotency-Key header and the idempotency_key field differ.",
            code="invalid_idempotency_key",
            details=[ErrorDetail("idempotency_key", "differs from the Idempotency-Key header", "invalid_idempotency_key")],
        )
    key = header or field
    return IdempotencyClaim(key, body_digest(route, body), caller(request).mode) if key else None


def _answer(acceptance: Acceptance) -> web.Response:
    headers = {"Idempotent-Replayed": "true"} if acceptance.replayed else None
    return raw_json_response(acceptance.body, acceptance.status, headers)


@routes.get("/api/v1/notifications/{notification_id}")
async def get_notification(request: web.Request) -> web.Response:
    """One notification: status, deliveries with their attempts, and the audit trail."""
    principal = caller(request)
    notification_id = request.match_info["notification_id"]
    found = None
    if ids.has_prefix(notification_id, ids.NOTIFICATION):
        found = await request.app[STORE].get_notification(principal.tenant, notification_id, mode=principal.scope)
    if found is None:
        raise NotFoundError(f"No notification {notification_id!r}.", code="notification_not_found")
    return json_response(notification_view(found, full=True))


def _status(name: str, raw: str | None) -> str | None:
    """A status filter; ``dead_lettered``, a status before dead letters became a property of ``failed``, says where it went."""
    if raw == "dead_lettered":
        raise bad_parameter(name, "dead_lettered is not a status: a dead letter is a failed delivery (see /api/v1/dead-letters); use failed")
    return one_of(name, raw, statuses.ALL)


@routes.get("/api/v1/notifications")
async def list_notifications(request: web.Request) -> web.Response:
    """The tenant's notifications, newest first, filtered, a page at a time."""
    policy, principal = policy_of(request), caller(request)
    query = request.query
    status = _status("status", query.get("status"))
    delivery_status = _status("delivery_status", query.get("delivery_status"))
    channel = query.get("channel") or None
    if channel is not None and channel not in policy.channels:
        raise bad_parameter("channel", f"unknown channel {channel!r}")
    recipient = query.get("recipient") or None
    where, store = NotificationFilter(
        status=status, channel=channel, delivery_status=delivery_status, recipient=recipient, mode=principal.scope
    ), request.app[STORE]
    return await page_response(
        request, lambda limit, cursor: store.list_notifications(principal.tenant, where, limit=limit, cursor=cursor),
        lambda item: notification_view(item, full=False),
    )

