"""Pagination cursors: opaque to clients, checked on the way back in so a made-up one is a 400, not a wrong page."""

from __future__ import annotations

import base64
import binascii

from gateway import ids
from gateway.store.protocol import InvalidCursorError


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, prefix: str = ids.NOTIFICATION) -> str:
    """The last id of the page before; ``prefix`` is the kind of id the list is of."""
    try:
        decoded = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as err:
        raise InvalidCursorError(cursor) from err
    if not ids.has_prefix(decoded, prefix):
        raise InvalidCursorError(cursor)
    return decoded


def encode_seq_cursor(seq: int) -> str:
    return encode_text_cursor(f"seq:{seq}")


def decode_seq_cursor(cursor: str) -> int:
    """The ``seq`` a page of a seq-ordered list ended at."""
    text = decode_text_cursor(cursor)
    if not (text.startswith("seq:") and text[4:].isascii() and text[4:].isdigit()):  # isdigit alone takes '²'
        raise InvalidCursorError(cursor)
    return int(text[4:])


def encode_text_cursor(text: str) -> str:
    return "t" + base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_text_cursor(cursor: str) -> str:
    if not cursor.startswith("t"):
        raise InvalidCursorError(cursor)
    try:
        return base64.urlsafe_b64decode(cursor[1:] + "=" * (-len(cursor[1:]) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as err:
        raise InvalidCursorError(cursor) from err
