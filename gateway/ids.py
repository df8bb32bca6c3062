"""Prefixed ULIDs: sortable by creation time, and the kind is readable off the wire."""

from __future__ import annotations

from typing import Final

from ulid import ULID

NOTIFICATION: Final = "ntf"
DELIVERY: Final = "dlv"
EVENT: Final = "evt"
ATTEMPT: Final = "att"
WEBHOOK: Final = "whk"
KEY: Final = "key"

PREFIXES: Final = frozenset({NOTIFICATION, DELIVERY, EVENT, ATTEMPT, WEBHOOK, KEY})


def new_id(prefix: str) -> str:
    """A new id such as ``ntf_01J9Z3…``; later ids sort after earlier ones (to the millisecond)."""
    return f"{prefix}_{ULID()}"


def has_prefix(value: str, prefix: str) -> bool:
    """Whether ``value`` looks like an id of kind ``prefix`` (cheap shape check, no decoding)."""
    return value.startswith(prefix + "_") and len(value) == len(prefix) + 27
