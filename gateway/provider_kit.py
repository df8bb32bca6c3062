"""Helpers every provider plugin needs: one way to call a vendor and to classify what it answers.

Each plugin keeps its vendor's error codes in a module-level table of :class:`VendorError`
rows and lets :func:`failure` turn a code (or, failing that, an HTTP status) into the right
:class:`~gateway.errors.DeliveryError`::

    ERRORS: Final = {
        21211: VendorError(transient=False, meaning="invalid To number", code="invalid_recipient"),
        20429: VendorError(transient=True, meaning="too many requests"),
    }

    async with vendor_call(self.context.session, "POST", url, timeout=timeout_of(self.config),
                           vendor="Twilio", data=form, auth=auth) as response:
        payload = await response.json(content_type=None)
        if response.status >= 400:
            raise failure(ERRORS, payload.get("code"), payload.get("message"), http_status=response.status,
                          retry_after=retry_after_seconds(response.headers.get("Retry-After")))

Connection errors and timeouts inside :func:`vendor_call` become transient failures. The
defaults follow the vendors' common ground: 408, 425, 429 and 5xx are transient, 401 and 403
are :class:`CredentialsRejectedError` (the instance is misconfigured: every send will fail, so
the circuit breaker counts it and failover tries the next instance), any other status is
permanent.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import aiohttp

from gateway.errors import CredentialsRejectedError, DeliveryError, PermanentDeliveryError, TransientDeliveryError

TRANSIENT_HTTP: Final = frozenset({408, 425, 429})
CREDENTIALS_HTTP: Final = frozenset({401, 403})
MAX_RETRY_AFTER: Final = 86400.0
DEFAULT_TIMEOUT: Final = 10.0
TIMEOUT_PROPERTY: Final[Mapping[str, Any]] = {
    "type": "number",
    "exclusiveMinimum": 0,
    "default": DEFAULT_TIMEOUT,
    "description": "Seconds to wait for the vendor's answer; a send that takes longer is retried.",
}
"""The ``timeout_seconds`` property every plugin that calls a vendor over the network offers."""


@dataclass(frozen=True, slots=True)
class VendorError:
    """One row of a plugin's error table: what a vendor code means for the delivery.

    ``code`` is the Tidings-side code recorded with the attempt (``invalid_recipient``,
    ``opted_out``, ``rate_limited``…); without one the vendor's own code is recorded.
    ``credentials`` marks codes that mean the instance's credentials are bad.
    """

    transient: bool
    meaning: str
    code: str | None = None
    credentials: bool = False


def retry_after_seconds(value: str | float | int | None) -> float | None:
    """A ``Retry-After`` (delta seconds) or vendor ``retry_after`` value, capped at a day; None if absent or a date."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def timeout_of(config: Mapping[str, Any]) -> aiohttp.ClientTimeout:
    """The instance's ``timeout_seconds`` as an aiohttp timeout."""
    return aiohttp.ClientTimeout(total=float(config.get("timeout_seconds", DEFAULT_TIMEOUT)))


def failure(
    table: Mapping[Any, VendorError], vendor_code: Any, message: str | None, *,
    http_status: int | None = None, retry_after: float | None = None, vendor: str = "vendor",
) -> DeliveryError:
    """The delivery error for a vendor's refusal: its code's row in ``table``, else the HTTP status's default."""
    row = table.get(vendor_code) if vendor_code is not None else None
    detail: dict[str, Any] = {"vendor_code": vendor_code} if vendor_code is not None else {}
    if http_status is not None:
        detail["http_status"] = http_status
    text = f"{vendor} refused the message: {message or 'no reason given'}"
    if vendor_code is not None:
        text += f" (code {vendor_code})"
    code = (row.code if row is not None else None) or (str(vendor_code) if vendor_code is not None else None)
    if row is not None:
        if row.credentials:
            return CredentialsRejectedError(f"{vendor} rejected the credentials: {row.meaning}", code=code, detail=detail)
        if row.transient:
            return TransientDeliveryError(text, retry_after=retry_after, code=code, detail=detail)
        return PermanentDeliveryError(text, code=code, detail=detail)
    if http_status is not None and (http_status in TRANSIENT_HTTP or http_status >= 500):
        return TransientDeliveryError(text, retry_after=retry_after, code=code or f"http_{http_status}", detail=detail)
    if http_status in CREDENTIALS_HTTP:
        return CredentialsRejectedError(f"{vendor} rejected the credentials (HTTP {http_status})", code=code or "credentials_rejected", detail=detail)
    return PermanentDeliveryError(text, code=code or (f"http_{http_status}" if http_status else None), detail=detail)


@asynccontextmanager
async def vendor_call(
    session: aiohttp.ClientSession, method: str, url: str, *, timeout: aiohttp.ClientTimeout, vendor: str, **kwargs: Any
) -> AsyncIterator[aiohttp.ClientResponse]:
    """``session.request`` with redirects off and network failures turned into transient errors.

    Errors are worded without the URL, which may carry a credential (Telegram's bot token).
    """
    try:
        async with session.request(method, url, timeout=timeout, allow_redirects=False, **kwargs) as response:
            yield response
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as err:
        raise TransientDeliveryError(f"could not reach {vendor}: {_network_reason(err)}", code="unreachable") from err


def _network_reason(err: BaseException) -> str:
    if isinstance(err, asyncio.TimeoutError):
        return "timed out"
    if isinstance(err, aiohttp.ClientConnectorError):
        return f"connection failed ({err.os_error.strerror or type(err.os_error).__name__})"
    return type(err).__name__


def same_secret(expected: str | bytes, offered: str | bytes) -> bool:
    """Constant-time comparison of a token or signature."""
    left = expected.encode() if isinstance(expected, str) else expected
    right = offered.encode() if isinstance(offered, str) else offered
    return hmac.compare_digest(left, right)


def form_value(value: Any) -> str:
    """A JSON callback value as the text a form-encoded one would carry (what vendors sign)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else json.dumps(value)


def utc_time(value: str | None, pattern: str) -> float | None:
    """A vendor's UTC timestamp in ``pattern`` (strptime) as epoch seconds; None if absent or malformed."""
    if not value:
        return None
    try:
        return datetime.strptime(value, pattern).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None
