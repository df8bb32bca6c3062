"""Authentication on the HTTP face: done once per request, by middleware, before any handler runs.

:func:`auth_middleware` takes the policy set the request will run on (so a reload mid-request
changes nothing), reads the API key from ``X-API-Key`` or ``Authorization: Bearer``, and puts
the :class:`~gateway.policy.keys.Principal` on the request; handlers read it with
:func:`caller`, never re-derive it. Routes that take no key (health, provider callbacks,
which their plugins verify, the public signing key) are marked :func:`public`. A request that
matches no route is left for the 404 or 405 it gets.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Final, TypeVar

from aiohttp import web

from gateway.http.appkeys import POLICIES
from gateway.policy.keys import Principal, authenticate
from gateway.policy.view import PolicySet

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
H = TypeVar("H", bound=Handler)
PRINCIPAL: Final = web.RequestKey("principal", Principal)
POLICY: Final = web.RequestKey("policy", PolicySet)
_PUBLIC: set[Handler] = set()


def public(handler: H) -> H:
    """Mark a route that takes no API key."""
    _PUBLIC.add(handler)
    return handler


def is_public(handler: Handler) -> bool:
    """Whether ``handler`` is a route that takes no API key (the API description leaves its security out)."""
    return handler in _PUBLIC


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request[POLICY] = request.app[POLICIES].current
    match = request.match_info
    if match.http_exception is None and match.handler not in _PUBLIC:
        request[PRINCIPAL] = authenticate(request[POLICY], key_from_headers(request.headers))
    return await handler(request)


def caller(request: web.Request) -> Principal:
    """Who is calling: put on the request by :func:`auth_middleware`."""
    return request[PRINCIPAL]


def policy_of(request: web.Request) -> PolicySet:
    """The policy set this request runs on, taken once when it arrived."""
    return request[POLICY]


def key_from_headers(headers: Mapping[str, str]) -> str | None:
    """The key from ``X-API-Key`` or ``Authorization: Bearer``, if either is present."""
    key = headers.get("X-API-Key")
    if key:
        return key.strip()
    authorization = headers.get("Authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return None
