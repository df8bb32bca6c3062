"""Standard Webhooks signatures (https://www.standardwebhooks.com/).

The signed content is ``{webhook-id}.{webhook-timestamp}.{body}``; the ``webhook-signature``
header carries ``v1,<base64 HMAC-SHA256>`` made with the secret's bytes (the base64 after
``whsec_``), and/or ``v1a,<base64 Ed25519 signature>`` made with the gateway's own key, whose
public half (``whpk_…``) receivers verify with. Several signatures, space-separated, let a
receiver rotate secrets.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

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


def signature_headers(
    secrets_: Iterable[str], message_id: str, timestamp: int, body: bytes, *, signer: Ed25519Signer | None = None
) -> dict[str, str]:
    """The three Standard Webhooks headers, signed with every given secret (``v1``) and the signer (``v1a``)."""
    signatures = [sign(secret, message_id, timestamp, body) for secret in secrets_]
    if signer is not None:
        signatures.append(signer.sign(message_id, timestamp, body))
    return {"webhook-id": message_id, "webhook-timestamp": str(timestamp), "webhook-signature": " ".join(signatures)}


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


# -- v1a: Ed25519 ------------------------------------------------------------------------------

SIGNING_KEY_FILE: Final = "webhook-signing.key"
"""Where, in the data directory, the gateway keeps its Ed25519 key."""
SIGNING_KEY_PREFIX: Final = "whsk_"
PUBLIC_KEY_PREFIX: Final = "whpk_"


class Ed25519Signer:
    """The gateway's own Ed25519 key for ``v1a,`` signatures, for endpoints that verify with a public key.

    The private key is kept as ``whsk_<base64 of the 32-byte seed>`` in a file only the owner
    can read; the public key is published as ``whpk_<base64 of its 32 raw bytes>``.
    """

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.public_key = PUBLIC_KEY_PREFIX + base64.b64encode(raw).decode()

    @classmethod
    def generate(cls) -> Ed25519Signer:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, path: Path) -> Ed25519Signer:
        """The key in ``path``, made (mode 0600) on first use so the public key stays the same across restarts."""
        try:
            text = path.read_text().strip()
        except FileNotFoundError:
            signer = cls.generate()
            path.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as out:
                out.write(signer.secret_text() + "\n")
            return signer
        if not text.startswith(SIGNING_KEY_PREFIX):
            raise SignatureError(f"{path} does not hold a {SIGNING_KEY_PREFIX} Ed25519 signing key")
        try:
            seed = base64.b64decode(text.removeprefix(SIGNING_KEY_PREFIX), validate=True)
            return cls(Ed25519PrivateKey.from_private_bytes(seed))
        except (binascii.Error, ValueError) as err:
            raise SignatureError(f"{path} does not hold a valid Ed25519 signing key") from err

    def secret_text(self) -> str:
        seed = self._key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
        return SIGNING_KEY_PREFIX + base64.b64encode(seed).decode()

    def sign(self, message_id: str, timestamp: int, body: bytes) -> str:
        """The ``v1a,…`` signature of one message."""
        content = f"{message_id}.{timestamp}.".encode() + body
        return "v1a," + base64.b64encode(self._key.sign(content)).decode()

    def __repr__(self) -> str:
        return f"<Ed25519Signer {self.public_key}>"


def verify_asymmetric(public_key: str, headers: Mapping[str, str], body: bytes, *, now: float) -> None:
    """Raise :class:`SignatureError` unless one of the ``v1a`` signatures verifies with ``public_key`` and is fresh."""
    try:
        message_id = headers["webhook-id"]
        timestamp = int(headers["webhook-timestamp"])
        offered = [item.removeprefix("v1a,") for item in headers["webhook-signature"].split() if item.startswith("v1a,")]
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key.removeprefix(PUBLIC_KEY_PREFIX), validate=True))
    except (KeyError, ValueError, binascii.Error) as err:
        raise SignatureError("missing or malformed webhook headers or public key") from err
    if abs(now - timestamp) > TOLERANCE_SECONDS:
        raise SignatureError("webhook-timestamp is too far from now")
    content = f"{message_id}.{timestamp}.".encode() + body
    for candidate in offered:
        try:
            key.verify(base64.b64decode(candidate, validate=True), content)
            return
        except (InvalidSignature, binascii.Error, ValueError):
            continue
    raise SignatureError("no matching v1a signature")
