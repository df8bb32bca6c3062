"""Lists, a page at a time: every list route reads ``?limit`` and ``?cursor`` the same way and answers in one shape.

Shared so that ``?limit=0`` or a stale cursor is refused with the same code and wording on
every list, a client needs one error handler for all of them, and every page is
``{"items": [...], "next_cursor": ...}``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

from aiohttp import web

from gateway.errors import BadRequestError, ErrorDetail
from gateway.http.api import json_response
from gateway.store import InvalidCursorError, Page

T = TypeVar("T")
DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 200


def bad_parameter(name: str, message: str) -> BadRequestError:
    """400 ``invalid_parameter`` naming the query parameter and what is wrong with it."""
    return BadRequestError(f"Query parameter {name} {message}.", code="invalid_parameter", details=[ErrorDetail(name, message, "invalid_parameter")])


def bad_cursor() -> BadRequestError:
    """The refusal of a cursor the store did not hand out for this list."""
    return bad_parameter("cursor", "not a cursor this API returned")


def page_limit(raw: str | None) -> int:
    """``?limit=`` as a page size; absent or empty means the default."""
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_LIMIT:  # isdigit alone takes '²'
        raise bad_parameter("limit", f"must be a whole number from 1 to {MAX_LIMIT}")
    return int(raw)


def one_of(name: str, raw: str | None, allowed: frozenset[str] | tuple[str, ...]) -> str | None:
    """``?name=`` if it is one of ``allowed``; absent or empty means no filter."""
    if not raw:
        return None
    if raw not in allowed:
        raise bad_parameter(name, f"must be one of: {', '.join(sorted(allowed))}")
    return raw


async def page_response(
    request: web.Request, fetch: Callable[[int, str | None], Awaitable[Page[T]]], view: Callable[[T], dict[str, Any]]
) -> web.Response:
    """One page of a list: ``fetch(limit, cursor)`` from the store, each item through ``view``."""
    limit = page_limit(request.query.get("limit"))
    try:
        page = await fetch(limit, request.query.get("cursor") or None)
    except InvalidCursorError:
        raise bad_cursor() from None
    return json_response({"items": [view(item) for item in page.items], "next_cursor": page.next_cursor})
