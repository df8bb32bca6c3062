"""Query parameters every list route reads the same way: page size, cursor, and the 400 a bad one gets.

Shared so that ``?limit=0`` or a stale cursor is refused with the same code and wording on
every list, and a client needs one error handler for all of them.
"""

from __future__ import annotations

from typing import Final

from gateway.errors import BadRequestError, ErrorDetail

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
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise bad_parameter("limit", f"must be a whole number from 1 to {MAX_LIMIT}")
    return int(raw)


def one_of(name: str, raw: str | None, allowed: frozenset[str] | tuple[str, ...]) -> str | None:
    """``?name=`` if it is one of ``allowed``; absent or empty means no filter."""
    if not raw:
        return None
    if raw not in allowed:
        raise bad_parameter(name, f"must be one of: {', '.join(sorted(allowed))}")
    return raw
