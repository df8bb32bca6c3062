"""Every exception Tidings raises, and the one JSON shape errors take on the wire.

The tree::

    TidingsError
    ├── ApiError                      a request the gateway refuses; carries status + code
    │   ├── BadRequestError           400  malformed JSON, bad query parameter
    │   ├── UnauthorizedError         401  unknown or missing API key
    │   ├── ForbiddenError            403  suspended tenant
    │   ├── NotFoundError             404  unknown id, or another tenant's
    │   ├── MethodNotAllowedError     405
    │   ├── RequestTimeoutError       408  a body sent too slowly
    │   ├── ConflictError             409  idempotency key reused with another body
    │   ├── PayloadTooLargeError      413
    │   ├── UnsupportedMediaTypeError 415
    │   ├── ValidationError           422  well-formed but semantically wrong
    │   └── TooManyRequestsError      429  over a rate; says when to try again
    ├── DeliveryError                 raised by provider plugins from ``send``
    │   ├── TransientDeliveryError    try again later (optionally after ``retry_after``)
    │   └── PermanentDeliveryError    never retry this delivery
    │       └── CredentialsRejectedError  the vendor refused the instance's credentials
    ├── WebhookVerificationError      an inbound provider callback failed verification
    ├── PolicyError (ValueError)      a policy set that does not validate
    ├── PluginLoadError               a provider plugin that cannot be imported or used
    └── StoreInUseError               another process has the store open

Plugins raise the ``DeliveryError`` family; the HTTP layer turns any ``ApiError`` into
:func:`error_body` with the error's status.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final

OPTED_OUT: Final = "opted_out"
"""The code of a :class:`PermanentDeliveryError` meaning the recipient refused this sender's
messages (Twilio 21610, a Telegram user who blocked the bot): the gateway records the opt-out."""
INVALID_RECIPIENT: Final = "invalid_recipient"
"""The address does not exist or cannot take messages on this channel (a bad number, an unknown mailbox)."""
RECIPIENT_UNAVAILABLE: Final = "recipient_unavailable"
"""A :class:`TransientDeliveryError` on the recipient's side: a full or busy mailbox, a handset
switched off or out of coverage. Worth retrying later, but not through another instance."""
RECIPIENT_FAULTS: Final = frozenset({
    INVALID_RECIPIENT, RECIPIENT_UNAVAILABLE, OPTED_OUT, "marketing_opted_out", "unverified_recipient",
    "unreachable_recipient", "recipient_barred", "mailbox_busy",
})
"""Codes of failures that belong to the recipient, not the provider: they never count against an
instance's circuit breaker (one bad number must not close an instance for every tenant), and a
transient one is retried on the schedule rather than handed to the next instance."""
BODY_TOO_LONG: Final = "body_too_long"
"""The body is longer than every provider instance of the channel declares it takes
(``ProviderLimits.max_body_chars``): refused at the API, and at dispatch when policy changed since."""


@dataclass(frozen=True, slots=True)
class ErrorDetail:
    """One problem inside a request: which field, what is wrong, and a code to branch on."""

    field: str
    message: str
    code: str | None = None

    def as_dict(self) -> dict[str, str]:
        detail = {"field": self.field, "message": self.message}
        if self.code is not None:
            detail["code"] = self.code
        return detail


def error_body(code: str, message: str, details: Iterable[ErrorDetail] = ()) -> dict[str, Any]:
    """The one error envelope: ``{"error": {"code", "message", "details": [...]}}``."""
    return {
        "error": {
            "code": code,
            "message": message,
            "details": [detail.as_dict() for detail in details],
        }
    }


class TidingsError(Exception):
    """Base class of every error Tidings raises on purpose."""


class ApiError(TidingsError):
    """A request refused with an HTTP status and a machine-readable code."""

    status: ClassVar[int] = 400
    default_code: ClassVar[str] = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: Sequence[ErrorDetail] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.details = tuple(details)
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.code, self.message, self.details)


class BadRequestError(ApiError):
    status = 400
    default_code = "bad_request"


class UnauthorizedError(ApiError):
    status = 401
    default_code = "unauthorized"


class ForbiddenError(ApiError):
    status = 403
    default_code = "forbidden"


class NotFoundError(ApiError):
    status = 404
    default_code = "not_found"


class MethodNotAllowedError(ApiError):
    status = 405
    default_code = "method_not_allowed"


class RequestTimeoutError(ApiError):
    status = 408
    default_code = "request_timeout"


class ConflictError(ApiError):
    status = 409
    default_code = "conflict"


class PayloadTooLargeError(ApiError):
    status = 413
    default_code = "payload_too_large"


class UnsupportedMediaTypeError(ApiError):
    status = 415
    default_code = "unsupported_media_type"


class ValidationError(ApiError):
    """422: the request parses but asks for something policy or the channel forbids."""

    status = 422
    default_code = "validation_failed"

    @classmethod
    def from_details(cls, details: Sequence[ErrorDetail], message: str | None = None) -> ValidationError:
        """One error for several problems; its code is the first problem's code."""
        first = details[0]
        return cls(message or first.message, code=first.code or cls.default_code, details=details)


class TooManyRequestsError(ApiError):
    status = 429
    default_code = "rate_limited"


class ServiceUnavailableError(ApiError):
    """The gateway cannot take the request right now (its store refuses writes); nothing of it was kept."""

    status = 503
    default_code = "service_unavailable"


class DeliveryError(TidingsError):
    """A provider could not deliver; plugins raise one of the two subclasses."""

    def __init__(self, message: str, *, code: str | None = None, detail: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.detail = detail or {}

    @property
    def recipient_fault(self) -> bool:
        """Whether the recipient, not the provider, is why it failed (its code is in :data:`RECIPIENT_FAULTS`)."""
        return self.code in RECIPIENT_FAULTS


class TransientDeliveryError(DeliveryError):
    """Worth retrying: timeouts, connection errors, 5xx, throttling.

    ``retry_after`` (seconds) is the provider's own hint and wins over the schedule.
    """

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        code: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, code=code, detail=detail)
        self.retry_after = retry_after


class PermanentDeliveryError(DeliveryError):
    """Never worth retrying: invalid recipient, rejected content, bad credentials.

    With ``code=OPTED_OUT`` the recipient refused the messages, and the gateway records it.
    """


class CredentialsRejectedError(PermanentDeliveryError):
    """The vendor refused this instance's credentials.

    Permanent for the delivery on this instance, but a fault of the instance rather than the
    message: the breaker counts it and failover tries the next instance of the channel.
    """


class WebhookVerificationError(TidingsError):
    """An inbound callback whose signature, token or timestamp does not check out.

    ``status`` is what the vendor is answered: 401 by default, 403 where the plugin knows the
    caller is identified but not allowed (a known sender address outside the vendor's range).
    """

    def __init__(self, message: str, *, status: int = 401) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True, slots=True)
class PolicyIssue:
    """One problem in a policy set, located as precisely as the loader can."""

    file: str
    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.path or '<root>'}: {self.message}"


class PolicyError(TidingsError, ValueError):
    """A policy set that does not validate; ``issues`` lists every problem found."""

    def __init__(self, issues: Sequence[PolicyIssue]) -> None:
        self.issues = tuple(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))


class PluginLoadError(TidingsError):
    """A provider plugin that cannot be imported, or is not a valid Provider."""


class StoreInUseError(TidingsError):
    """Another process has this store open: two would run two dispatchers over one outbox."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(f"{path} is in use by another Tidings process; stop it first")
