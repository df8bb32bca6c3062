"""Dashboard sessions: a signed cookie naming the key it was opened with (never the key), and CSRF tokens bound to it.

Signing in posts a key once. The session that follows is a cookie holding which kind of key it
was, the key's lookup prefix, the first half of its SHA-256 (enough to tell it from any other
key, useless to sign in with), a random nonce and an expiry, signed with HMAC-SHA256. Nothing
is kept on the server: every request finds the key in the policy in force again, so a key
removed from policy (or a tenant suspended) ends its sessions at the next click, and a role
changed in policy applies at once. Signing out deletes the cookie; a copy of it stays good
until it expires (:data:`SESSION_SECONDS`) unless its key leaves the policy.

The signing secret is derived from ``TIDINGS_MASTER_KEY`` when one is set (HKDF, its own
``info``), so every process with that key accepts the same cookies; otherwise it is 32 random
bytes made on first use in the data directory (``dashboard-session.key``, mode 0600), so a
restart does not sign everyone out.

Every form carries a token, an HMAC of the session's nonce, and every POST must bring it
back; with the cookie's ``SameSite=Strict`` that stops another site's page from posting as
the person signed in. The sign-in form, before any session, is bound the same way to a
short-lived cookie of its own.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import orjson
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.settings import Settings

SESSION_COOKIE: Final = "tidings_session"
SIGN_IN_COOKIE: Final = "tidings_sign_in"
SESSION_SECONDS: Final = 8 * 3600
"""How long a session lasts from signing in: a working day; then the key is asked for again."""
SIGN_IN_SECONDS: Final = 3600
"""How long a sign-in form stays good to post."""
SECRET_FILE: Final = "dashboard-session.key"
DIGEST_CHARS: Final = 32
"""How much of the key's SHA-256 (hex) a session holds to find the key again: 128 bits."""
MAX_COOKIE_CHARS: Final = 1024
"""A session cookie is about 250 characters; anything much longer is refused before it is decoded."""
_HKDF_INFO: Final = b"tidings dashboard sessions v1"

Kind = Literal["tenant", "operator"]


@dataclass(frozen=True, slots=True)
class Session:
    """Who signed in: which kind of key, its prefix and part of its hash; the nonce its CSRF token is made from."""

    kind: Kind
    prefix: str
    digest: str
    nonce: str
    expires_at: float


class SessionSigner:
    """Seals and opens session cookies, and makes and checks the CSRF tokens bound to them."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 32:
            raise ValueError("a session secret needs at least 32 bytes")
        self._secret = secret

    @classmethod
    def from_settings(cls, settings: Settings) -> SessionSigner:
        """Derived from the master key if there is one, else the secret kept in the data directory."""
        if settings.master_key is not None:
            hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO)
            return cls(hkdf.derive(settings.master_key.get_secret_value().encode()))
        return cls(_load_or_create(settings.data_dir / SECRET_FILE))

    def open_session(self, kind: Kind, prefix: str, sha256: str, now: float) -> Session:
        """A new session for the key with ``prefix`` and hash ``sha256``, from ``now``."""
        return Session(kind, prefix, sha256[:DIGEST_CHARS], secrets.token_urlsafe(16), now + SESSION_SECONDS)

    def seal(self, session: Session) -> str:
        """The cookie value: the session as JSON, then its HMAC, both base64url."""
        payload = orjson.dumps({"k": session.kind, "p": session.prefix, "d": session.digest, "n": session.nonce, "e": session.expires_at})
        return f"{_b64(payload)}.{_b64(self._mac(b'session', payload))}"

    def unseal(self, value: str | None, now: float) -> Session | None:
        """The session in a cookie if its signature holds and it has not expired; None for anything else."""
        if not value or len(value) > MAX_COOKIE_CHARS:
            return None
        payload_text, _, mac_text = value.partition(".")
        payload, mac = _unb64(payload_text), _unb64(mac_text)
        if payload is None or mac is None or not hmac.compare_digest(mac, self._mac(b"session", payload)):
            return None
        try:
            fields = orjson.loads(payload)
            session = Session(fields["k"], fields["p"], fields["d"], fields["n"], float(fields["e"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None  # signed by us, so only an older format could get here
        return session if now < session.expires_at else None

    def token(self, purpose: str, nonce: str) -> str:
        """The CSRF token of ``nonce`` (a session's, or a sign-in form's) for ``purpose``."""
        return _b64(self._mac(purpose.encode(), nonce.encode()))

    def check_token(self, purpose: str, nonce: str, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token.encode(), self.token(purpose, nonce).encode())

    def _mac(self, purpose: bytes, message: bytes) -> bytes:
        return hmac.new(self._secret, purpose + b"\0" + message, hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes | None:
    """``text`` decoded, only if it is the one encoding :func:`_b64` makes of it.

    base64 leaves unused bits in its last character: without this, two cookies that differ there
    would decode alike, and a changed cookie could still pass its signature check.
    """
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    return raw if _b64(raw) == text else None


def _load_or_create(path: Path) -> bytes:
    """The secret in ``path``, made (mode 0600) on first use so sessions outlive a restart."""
    try:
        secret = bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        secret = os.urandom(32)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first: use theirs
            return _load_or_create(path)
        with os.fdopen(descriptor, "w") as out:
            out.write(secret.hex() + "\n")
        return secret
    except ValueError as err:
        raise ValueError(f"{path} does not hold a dashboard session secret (64 hex digits); delete it to make a new one") from err
    if len(secret) < 32:
        raise ValueError(f"{path} holds a session secret shorter than 32 bytes; delete it to make a new one")
    return secret
