"""``/api/v1/dead-letters``: the deliveries the engine gave up on, and sending them again.

A live key sees and replays all of the tenant's dead letters (replay is an operator's tool, and
an operator fixing a provider wants the whole backlog); a test key only test-mode ones, which
go to the sandbox: a live dead letter it names is a 404, as another tenant's is. The
``channel`` and ``provider`` filters are not checked against the policy: a channel or provider
instance dropped since keeps its dead letters, and an unknown name simply matches none.
"""

from __future__ import annotations

from typing import Annotated, Final

from aiohttp import web
from pydantic import AfterValidator, BaseModel, ConfigDict, StrictStr

from gateway import ids, statuses
from gateway.errors import ConflictError, NotFoundError
from gateway.http.api import json_response, parse_model, read_json
from gateway.http.appkeys import DISPATCHER, STORE
from gateway.http.auth import caller
from gateway.http.paging import one_of, page_response
from gateway.http.views import dead_letter_view
from gateway.store import DeadLetterFilter, Replayed

routes = web.RouteTableDef()
MAX_REPLAY: Final = 10_000  # per bulk request: one writer transaction stays short; "more" says ask again


def _dead_reason(value: str) -> str:
    if value not in statuses.DEAD_REASONS:
        raise ValueError(f"must be one of: {', '.join(statuses.DEAD_REASONS)}")
    return value


class ReplayRequest(BaseModel):
    """Which dead letters a bulk replay re-queues; ``{}`` means all of the tenant's."""

    model_config = ConfigDict(extra="forbid")

    channel: StrictStr | None = None
    provider: StrictStr | None = None
    reason: Annotated[StrictStr, AfterValidator(_dead_reason)] | None = None


@routes.get("/api/v1/dead-letters")
async def list_dead_letters(request: web.Request) -> web.Response:
    """The tenant's dead letters, newest first, filtered by channel, provider and reason, a page at a time."""
    principal = caller(request)
    query = request.query
    where = DeadLetterFilter(
        channel=query.get("channel") or None,
        provider=query.get("provider") or None,
        reason=one_of("reason", query.get("reason"), statuses.DEAD_REASONS),
        mode=principal.scope,
    )
    store = request.app[STORE]
    return await page_response(
        request, lambda limit, cursor: store.list_dead_letters(principal.tenant, where, limit=limit, cursor=cursor), dead_letter_view
    )


@routes.post("/api/v1/dead-letters/replay")
async def replay_matching(request: web.Request) -> web.Response:
    """Re-queue every dead letter that matches the body's filter (up to :data:`MAX_REPLAY`)."""
    principal = caller(request)
    payload: ReplayRequest = parse_model(ReplayRequest, await read_json(request))
    where = DeadLetterFilter(channel=payload.channel, provider=payload.provider, reason=payload.reason)
    replayed = await request.app[STORE].replay(principal.tenant, where=where, actor=principal.actor, limit=MAX_REPLAY, mode=principal.scope)
    _wake(request, replayed)
    body = {"replayed": len(replayed.delivery_ids), "delivery_ids": replayed.delivery_ids, "more": replayed.more}
    return json_response(body, 202)


@routes.post("/api/v1/dead-letters/{delivery_id}/replay")
async def replay_one(request: web.Request) -> web.Response:
    """Re-queue one dead letter; 404 if the tenant has no such delivery, 409 if it is not dead-lettered."""
    principal = caller(request)
    delivery_id = request.match_info["delivery_id"]
    if not ids.has_prefix(delivery_id, ids.DELIVERY):
        raise NotFoundError(f"No delivery {delivery_id!r}.", code="delivery_not_found")
    replayed = await request.app[STORE].replay(principal.tenant, delivery_ids=[delivery_id], actor=principal.actor, mode=principal.scope)
    if replayed.not_dead_lettered:
        raise ConflictError(f"Delivery {delivery_id!r} is not dead-lettered; only dead letters can be replayed.", code="not_dead_lettered")
    if not replayed.delivery_ids:
        raise NotFoundError(f"No delivery {delivery_id!r}.", code="delivery_not_found")
    _wake(request, replayed)
    return json_response({"replayed": replayed.delivery_ids}, 202)


def _wake(request: web.Request, replayed: Replayed) -> None:
    """Let the dispatcher claim the re-queued deliveries now rather than at its next poll."""
    if replayed.channels:
        request.app[DISPATCHER].wake(replayed.channels)
