"""API keys and operators' dashboard keys: how they are made, stored in policy (as SHA-256 hashes with a lookup prefix) and checked."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Final

from gateway.errors import ForbiddenError, UnauthorizedError
from gateway.policy.models import ROLES
from gateway.policy.view import PolicySet

KEY_PREFIX: Final = "tdk_"
OPERATOR_KEY_PREFIX: Final = "tdo_"
"""Operators' keys look different from tenants' API keys, so a person can tell which one they hold."""
LOOKUP_LENGTH: Final = 12


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the tenant, which key (by prefix, never the key), the key's mode and its name in policy."""

    tenant: str
    key_prefix: str
    mode: str
    name: str | None = None

    @property
    def label(self) -> str:
        """How the key is named where people read who did something (an acknowledgement): its name, else its prefix."""
        return self.name or self.key_prefix

    @property
    def actor(self) -> str:
        return f"key:{self.key_prefix}"

    @property
    def is_test(self) -> bool:
        return self.mode == "test"

    @property
    def scope(self) -> str | None:
        """The one mode whose data this key sees and touches: ``test`` for a test key; None (every mode) for a live key."""
        return "test" if self.is_test else None

    def require_live(self, what: str) -> None:
        """Refuse a test key what reaches real recipients or real endpoints (403 ``live_key_required``)."""
        if self.is_test:
            raise ForbiddenError(f"{what} is for live keys: it reaches real recipients or endpoints.", code="live_key_required")


@dataclass(frozen=True, slots=True)
class NewKey:
    key: str
    prefix: str
    sha256: str


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Operator:
    """A person who runs the gateway, signed in to the dashboard with an operator key: sees every tenant, acts as the role allows."""

    name: str
    key_prefix: str
    role: str

    @property
    def actor(self) -> str:
        """Who did it, in a notification's history (a replay): the operator's name from policy."""
        return f"operator:{self.name}"

    def may(self, role: str) -> bool:
        """Whether this operator's role is ``role`` or above (viewer < operator < admin)."""
        return ROLES.index(self.role) >= ROLES.index(role)


def create_key(prefix: str = KEY_PREFIX) -> NewKey:
    """A fresh random key (an operator's with :data:`OPERATOR_KEY_PREFIX`); only its prefix and hash are ever stored."""
    key = prefix + secrets.token_urlsafe(30)
    return NewKey(key=key, prefix=key[:LOOKUP_LENGTH], sha256=hash_key(key))


def authenticate(policy: PolicySet, key: str | None) -> Principal:
    """The principal a key belongs to; 401 for an unknown key, 403 for a suspended tenant."""
    if not key:
        raise UnauthorizedError("Send an API key in the X-API-Key header or as Authorization: Bearer <key>.")
    digest = hash_key(key)
    for entry in policy.keys_by_prefix.get(key[:LOOKUP_LENGTH], ()):
        if hmac.compare_digest(entry.key.sha256, digest):
            tenant = policy.tenant(entry.tenant)
            if tenant is None or tenant.status != "active":
                raise ForbiddenError(f"Tenant {entry.tenant!r} is suspended.", code="tenant_suspended")
            return Principal(entry.tenant, entry.key.prefix, entry.key.mode, entry.key.name)
    raise UnauthorizedError("Unknown API key.", code="invalid_api_key")


def authenticate_operator(policy: PolicySet, key: str) -> Operator | None:
    """The operator a dashboard key belongs to, or None: the key is no operator's."""
    return find_operator(policy, key[:LOOKUP_LENGTH], hash_key(key))


def find_operator(policy: PolicySet, prefix: str, digest: str) -> Operator | None:
    """The operator whose key has this prefix and a SHA-256 starting with ``digest`` (a session holds part of it, never the key)."""
    for entry in policy.operators_by_prefix.get(prefix, ()):
        if len(digest) >= 32 and hmac.compare_digest(entry.key.sha256[: len(digest)], digest):
            return Operator(entry.name, entry.key.prefix, entry.key.role)
    return None


def find_principal(policy: PolicySet, prefix: str, digest: str) -> Principal | None:
    """The tenant key with this prefix and a SHA-256 starting with ``digest``; None if it is gone or its tenant is suspended."""
    for entry in policy.keys_by_prefix.get(prefix, ()):
        if len(digest) >= 32 and hmac.compare_digest(entry.key.sha256[: len(digest)], digest):
            tenant = policy.tenant(entry.tenant)
            if tenant is None or tenant.status != "active":
                return None
            return Principal(entry.tenant, entry.key.prefix, entry.key.mode, entry.key.name)
    return None
