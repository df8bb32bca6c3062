"""Standard Webhooks signatures (https://www.standardwebhooks.com/).

The signed content is ``{webhook-id}.{webhook-timestamp}.{body}``; the ``webhook-signature``
header carries ``v1,<base64 HMAC-SHA256>`` made with the secret's bytes (the base64 after
``whsec_``). Several signatures, space-separated, let a receiver rotate secrets.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping
from typing import Final

SECRET_PREFIX: Final = "whsec_"
TOLERANCE_SECONDS: Final = 300


class SignatureError(ValueError):
    """A signature that is missing, malformed, stale or wrong."""


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_bytes(secret: str) -> bytes:
    """The HMAC key a ``whsec_`` secret stands for."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as err:
        raise SignatureError("webhook secret is not whsec_ followed by base64") from err


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``v1,…`` signature of one message."""
    content = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_bytes(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_headers(secrets_: Iterable[str], message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers, signed with every given secret."""
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(secret, message_id, timestamp, body) for secret in secrets_),
    }


def verify(secret: str, headers: Mapping[str, str], body: bytes, *, now: float) -> None:
    """Raise :class:`SignatureError` unless one of the header's signatures is ours and fresh."""
    try:
        message_id = headers["webhook-id"]
        timestamp = int(headers["webhook-timestamp"])
        offered = headers["webhook-signature"].split()
    except (KeyError, ValueError) as err:
        raise SignatureError("missing or malformed webhook-id / webhook-timestamp / webhook-signature") from err
    if abs(now - timestamp) > TOLERANCE_SECONDS:
        raise SignatureError("webhook-timestamp is too far from now")
    expected = sign(secret, message_id, timestamp, body)
    if not any(hmac.compare_digest(expected, candidate) for candidate in offered):
        raise SignatureError("no matching signature")
