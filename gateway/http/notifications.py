"""``/api/v1/notifications``: send one, send in bulk, read one, list them."""

from __future__ import annotations

from typing import Any, Final

import orjson
from aiohttp import web

from gateway import ids, statuses
from gateway.engine.submission import BulkRequest, SendRequest, Submission, body_digest
from gateway.errors import ConflictError, ErrorDetail, NotFoundError, PayloadTooLargeError, ValidationError
from gateway.http.api import json_response, parse_model, raw_json_response, read_json
from gateway.http.appkeys import CLOCK, DISPATCHER, OPT_OUTS, SETTINGS, STORE
from gateway.http.auth import caller, policy_of
from gateway.http.paging import bad_parameter, one_of, page_response
from gateway.http.views import notification_view
from gateway.policy.keys import Principal
from gateway.store import Acceptance, IdempotencyClaim, NewNotification, NotificationFilter

routes = web.RouteTableDef()
IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
MAX_KEY_LENGTH: Final = 255


@routes.post("/api/v1/notifications/send")
async def send(request: web.Request) -> web.Response:
    """Accept one notification to one recipient on one or more channels."""
    policy, principal = policy_of(request), caller(request)
    body = await read_json(request)
    payload: SendRequest = parse_model(SendRequest, body)
    claim = _idempotency(request, payload.idempotency_key, "send", body)
    if claim is not None and (replay := await _replay(request, principal, claim)) is not None:
        return replay
    submission = Submission(policy, principal, request.app[CLOCK].now())
    plan = submission.plan(payload.notification)
    notification = submission.build(
        plan, payload.recipient, payload.notification.data,
        idempotency_key=claim.key if claim else None, metadata=payload.metadata,
    )
    problems = _opt_out_problems(notification, await _opted_out(request, principal, [notification]), "recipient")
    if problems:
        raise ValidationError.from_details(problems, "The recipient opted out of this channel.")
    response = orjson.dumps(_accepted(notification))
    return await _accept(request, principal, [notification], claim, response)


@routes.post("/api/v1/notifications/bulk")
async def bulk(request: web.Request) -> web.Response:
    """Accept one notification per recipient row; rows that fail validation are reported, not queued."""
    policy, principal = policy_of(request), caller(request)
    body = await read_json(request)
    limit = request.app[SETTINGS].bulk_max_rows
    rows = body.get("recipients")
    if isinstance(rows, list) and len(rows) > limit:
        raise PayloadTooLargeError(f"A bulk request may carry at most {limit} recipients (got {len(rows)}).", code="too_many_recipients")
    payload: BulkRequest = parse_model(BulkRequest, body)
    claim = _idempotency(request, payload.idempotency_key, "bulk", body)
    if claim is not None and (replay := await _replay(request, principal, claim)) is not None:
        return replay
    submission = Submission(policy, principal, request.app[CLOCK].now())
    plan = submission.plan(payload.content(), default_priority="bulk", prefix="")
    accepted, errors = _build_rows(submission, plan, payload, claim)
    accepted, errors = await _without_opted_out(request, principal, accepted, errors)
    if not accepted:
        details = [ErrorDetail(d["field"], d["message"], d.get("code")) for e in errors for d in e["details"]]
        raise ValidationError("No recipient row could be accepted.", code="no_valid_recipients", details=details)
    response = orjson.dumps(
        {
            "accepted": len(accepted),
            "rejected": len(errors),
            "notifications": [{"index": index, **_accepted(n)} for index, n in accepted],
            "errors": errors,
        }
    )
    return await _accept(request, principal, [n for _, n in accepted], claim, response)


def _build_rows(
    submission: Submission, plan: Any, payload: BulkRequest, claim: IdempotencyClaim | None
) -> tuple[list[tuple[int, NewNotification]], list[dict[str, Any]]]:
    accepted: list[tuple[int, NewNotification]] = []
    errors: list[dict[str, Any]] = []
    key = claim.key if claim else None
    for index, row in enumerate(payload.recipients):
        path = f"recipients[{index}]"
        recipient = {name: value for name, value in row.items() if name != "data"}
        row_data = row.get("data", {})
        try:
            if not isinstance(row_data, dict):
                raise ValidationError("data must be an object", code="validation_failed", details=[ErrorDetail(f"{path}.data", "must be an object", "validation_failed")])
            data = payload.data | row_data if row_data else payload.data
            notification = submission.build(
                plan, recipient, data, idempotency_key=key, metadata=payload.metadata, recipient_path=path, data_path=f"{path}.data"
            )
        except ValidationError as err:
            errors.append({"index": index, **err.body()["error"]})
            continue
        accepted.append((index, notification))
    return accepted, errors


async def _opted_out(request: web.Request, principal: Principal, notifications: list[NewNotification]) -> set[tuple[str, str]]:
    """(channel, address) pairs among these deliveries whose recipient opted out; no read for a tenant with no opt-outs."""
    targets = {(d.channel, d.address) for n in notifications for d in n.deliveries}
    return await request.app[OPT_OUTS].refused(principal.tenant, targets)


def _opt_out_problems(notification: NewNotification, refused: set[tuple[str, str]], path: str) -> list[ErrorDetail]:
    problems = []
    for delivery in notification.deliveries:
        if (delivery.channel, delivery.address) not in refused:
            continue
        field = next((name for name, value in notification.recipient.items() if value == delivery.address), "")
        message = f"the recipient opted out of {delivery.channel} messages (GET /api/v1/opt-outs says how); only they can opt back in"
        problems.append(ErrorDetail(f"{path}.{field}", message, "recipient_opted_out"))
    return problems


async def _without_opted_out(
    request: web.Request, principal: Principal, accepted: list[tuple[int, NewNotification]], errors: list[dict[str, Any]]
) -> tuple[list[tuple[int, NewNotification]], list[dict[str, Any]]]:
    """Move rows whose recipient opted out from ``accepted`` to ``errors`` (kept in row order)."""
    refused = await _opted_out(request, principal, [n for _, n in accepted])
    if not refused:
        return accepted, errors
    kept: list[tuple[int, NewNotification]] = []
    for index, notification in accepted:
        problems = _opt_out_problems(notification, refused, f"recipients[{index}]")
        if problems:
            errors.append({"index": index, **ValidationError.from_details(problems, "The recipient opted out of this channel.").body()["error"]})
        else:
            kept.append((index, notification))
    return kept, sorted(errors, key=lambda error: int(error["index"]))


def _accepted(notification: NewNotification) -> dict[str, Any]:
    return {
        "notification_id": notification.id,
        "status": statuses.QUEUED,
        "mode": notification.mode,
        "deliveries": [
            {"delivery_id": d.id, "channel": d.channel, "status": statuses.QUEUED} for d in notification.deliveries
        ],
    }


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
    return IdempotencyClaim(key, body_digest(route, body)) if key else None


async def _replay(request: web.Request, principal: Principal, claim: IdempotencyClaim) -> web.Response | None:
    stored = await request.app[STORE].find_response(principal.tenant, claim.key)
    if stored is None:
        return None
    return _answer(Acceptance(stored.status, stored.body, replayed=True, fingerprint_matches=stored.fingerprint == claim.fingerprint))


async def _accept(
    request: web.Request, principal: Principal, notifications: list[NewNotification], claim: IdempotencyClaim | None, body: bytes
) -> web.Response:
    acceptance = await request.app[STORE].accept(notifications, tenant=principal.tenant, idempotency=claim, status=202, body=body)
    if not acceptance.replayed:
        request.app[DISPATCHER].wake({d.channel for n in notifications for d in n.deliveries})
    return _answer(acceptance)


def _answer(acceptance: Acceptance) -> web.Response:
    if not acceptance.fingerprint_matches:
        raise ConflictError(
            "This Idempotency-Key was already used with a different request body.", code="idempotency_conflict"
        )
    headers = {"Idempotent-Replayed": "true"} if acceptance.replayed else None
    return raw_json_response(acceptance.body, acceptance.status, headers)


@routes.get("/api/v1/notifications/{notification_id}")
async def get_notification(request: web.Request) -> web.Response:
    """One notification: status, deliveries with their attempts, and the audit trail."""
    principal = caller(request)
    notification_id = request.match_info["notification_id"]
    found = None
    if ids.has_prefix(notification_id, ids.NOTIFICATION):
        found = await request.app[STORE].get_notification(principal.tenant, notification_id)
    if found is None:
        raise NotFoundError(f"No notification {notification_id!r}.", code="notification_not_found")
    return json_response(notification_view(found, full=True))


@routes.get("/api/v1/notifications")
async def list_notifications(request: web.Request) -> web.Response:
    """The tenant's notifications, newest first, filtered, a page at a time."""
    policy, principal = policy_of(request), caller(request)
    query = request.query
    status = one_of("status", query.get("status"), statuses.ALL)
    channel = query.get("channel") or None
    if channel is not None and channel not in policy.channels:
        raise bad_parameter("channel", f"unknown channel {channel!r}")
    where, store = NotificationFilter(status=status, channel=channel, recipient=query.get("recipient") or None), request.app[STORE]
    return await page_response(
        request, lambda limit, cursor: store.list_notifications(principal.tenant, where, limit=limit, cursor=cursor),
        lambda item: notification_view(item, full=False),
    )

