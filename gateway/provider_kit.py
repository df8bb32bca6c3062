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
        payload = await json_answer(response)
        if response.status >= 400:
            raise failure(ERRORS, payload.get("code"), payload.get("message"), http_status=response.status,
                          retry_after=retry_after_seconds(response.headers.get("Retry-After")))

It also has what plugins would otherwise each write again: :func:`json_answer` and
:func:`json_object` (a vendor's answer as a JSON object, or nothing), :func:`retry_after_seconds`
(both forms of ``Retry-After``), :func:`same_secret`, :func:`form_value`, :func:`utc_time`,
:func:`isoformat`, :func:`signature_headers` (Standard Webhooks signatures), and for a plugin
that sends where its caller says (a tenant's url) the SSRF guard: :func:`public_connector`
for its client session, which connects to publicly routable addresses only, and
:func:`refused_as_private` to tell that refusal from a failure to connect. A plugin
imports from ``gateway``, ``gateway.plugin_api`` and this module only; an ``InboundRequest``'s
headers are read in any case already.

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
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Final

import aiohttp

from gateway.clock import isoformat
from gateway.egress import public_connector, refused_as_private
from gateway.errors import CredentialsRejectedError, DeliveryError, PermanentDeliveryError, TransientDeliveryError
from gateway.signing import signature_headers

__all__ = [
    "DEFAULT_TIMEOUT",
    "TIMEOUT_PROPERTY",
    "VendorError",
    "failure",
    "form_value",
    "isoformat",
    "json_answer",
    "json_object",
    "public_connector",
    "refused_as_private",
    "retry_after_seconds",
    "same_secret",
    "signature_headers",
    "timeout_of",
    "utc_time",
    "vendor_call",
]

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


def retry_after_seconds(value: str | float | int | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header or a vendor's ``retry_after`` value, capped at a day.

    Both forms HTTP allows: delta seconds (``120``) and an HTTP date
    (``Wed, 21 Oct 2026 07:28:00 GMT``, counted from ``now``, the wall clock by default).
    None when absent or unreadable.
    """
    if value is None:
        return None
    try:
        seconds: float | None = float(value)
    except ValueError:
        seconds = _seconds_until(str(value), time.time() if now is None else now)
    return None if seconds is None else min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _seconds_until(http_date: str, now: float) -> float | None:
    try:
        at = parsedate_to_datetime(http_date)
    except (TypeError, ValueError):
        return None
    if at.tzinfo is None:  # an HTTP date is always GMT, whether it says so or not
        at = at.replace(tzinfo=UTC)
    return at.timestamp() - now


def json_object(raw: bytes | str, *, text_key: str | None = None) -> dict[str, Any]:
    """The JSON object in ``raw``; ``{}`` for anything else, or with ``text_key`` its text under that key.

    Vendors that answer some errors in plain text (Mailgun, Brevo) keep their words that way.
    """
    try:
        answer = json.loads(raw)
    except ValueError:
        text = (raw.decode(errors="replace") if isinstance(raw, bytes) else raw).strip()
        return {text_key: text[:200]} if text_key and text else {}
    return answer if isinstance(answer, dict) else {}


async def json_answer(response: aiohttp.ClientResponse, *, text_key: str | None = None) -> dict[str, Any]:
    """What a vendor answered, as :func:`json_object` reads it; ``{}`` if the body was cut off."""
    try:
        raw = await response.read()
    except aiohttp.ClientPayloadError:
        return {}
    return json_object(raw, text_key=text_key)


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
