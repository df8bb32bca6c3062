"""The RateLimit headers on every answer of an endpoint whose messages count against the tenant's quota.

The intake takes from the quota (:mod:`gateway.engine.quotas`) and refuses with a 429 that
carries the headers of its decision. Every other answer of a counted endpoint — a 202, a
replayed answer, a 422 for a request that spent nothing — carries the limits as they stand
once it is decided, so a client can pace itself before it meets a 429. A tenant without
quotas gets no such headers.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.engine.quotas import rate_limit_headers
from gateway.errors import ApiError
from gateway.http.appkeys import QUOTAS
from gateway.http.auth import caller, policy_of

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_COUNTED: set[Handler] = set()


def counted(handler: Handler) -> Handler:
    """Wrap a route whose accepted messages count against the caller's quota: its answers carry the RateLimit headers."""
    return _with_headers(handler, _message_headers)


def events_counted(handler: Handler) -> Handler:
    """Wrap ``POST /api/v1/events``: its answers carry the RateLimit headers of the tenant's ``events_per_minute``."""
    return _with_headers(handler, _event_headers)


def is_counted(handler: Handler) -> bool:
    """Whether ``handler``'s answers carry RateLimit headers (the API description lists them on its responses)."""
    return handler in _COUNTED


def _with_headers(handler: Handler, headers_of: Callable[[web.Request], dict[str, str]]) -> Handler:
    @functools.wraps(handler)
    async def answer(request: web.Request) -> web.StreamResponse:
        try:
            response = await handler(request)
        except ApiError as err:
            err.headers = headers_of(request) | err.headers  # a refusal's own headers (its decision, Retry-After) win
            raise
        for name, value in headers_of(request).items():
            response.headers.setdefault(name, value)
        return response

    _COUNTED.add(answer)
    return answer


def _message_headers(request: web.Request) -> dict[str, str]:
    principal = caller(request)
    return rate_limit_headers(request.app[QUOTAS].state(policy_of(request), principal.tenant, principal.mode))


def _event_headers(request: web.Request) -> dict[str, str]:
    principal = caller(request)
    return rate_limit_headers(request.app[QUOTAS].events_state(policy_of(request), principal.tenant, principal.mode))
