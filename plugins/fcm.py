"""Firebase Cloud Messaging (HTTP v1): push notifications to an app instance's registration token.

Sending is ``POST {base_url}/v1/projects/{project_id}/messages:send`` with ``{"message": {"token",
"notification": {"title", "body"}, "data"}}`` and an OAuth2 Bearer access token; FCM answers
``{"name": "projects/…/messages/…"}``, which is the provider message id. The device token is the
recipient's ``device_token``; the title is the message's subject.

Authentication, done here with ``cryptography`` alone:

- ``service_account`` is the service-account key the Firebase console downloads: the JSON file as
  a string (``{$file: fcm-key.json}``, the usual way) or the same fields as an object (then
  ``private_key`` can be a ``{$env: …}`` reference of its own). It needs ``client_email`` and
  ``private_key``; ``token_uri`` and ``project_id`` come from it unless the config overrides them.
- An RS256 JWT assertion (``iss`` = client_email, ``scope`` = firebase.messaging, ``aud`` =
  token_uri, ``iat``, ``exp`` = iat + 3600) is exchanged at ``token_uri`` (form-encoded
  ``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer``) for ``{access_token, expires_in}``.
- The access token is cached until five minutes before it expires, on the context clock, and
  fetched once for all concurrent sends. A 401 ``UNAUTHENTICATED`` from FCM (a token revoked or
  expired early) fetches a new one and tries once more; a second 401 is a credentials failure.

Vendor quirks handled here:

- **The error that matters is in ``details``.** ``error.status`` is Google's canonical code
  (``NOT_FOUND``, ``INVALID_ARGUMENT``…); the FCM-specific ``errorCode`` (``UNREGISTERED``,
  ``SENDER_ID_MISMATCH``…) is in the ``google.firebase.fcm.v1.FcmError`` entry of ``details``.
  The FCM code is used when present, else the canonical status, else the HTTP status.
- **A dead token** (``UNREGISTERED``, 404: the app was uninstalled or the token rotated) is
  permanent, code ``invalid_recipient``; so is ``INVALID_ARGUMENT`` when its ``BadRequest``
  violation names ``message.token`` (a malformed token). Any other ``INVALID_ARGUMENT`` (message
  too big, reserved data key) is permanent with code ``invalid_message``.
- **THIRD_PARTY_AUTH_ERROR** (401: the APNs certificate or web push key in the Firebase project
  was refused) is a credentials failure and is not "fixed" by a new access token.
- **SENDER_ID_MISMATCH** (403) is permanent: the token belongs to another Firebase project.
- **QUOTA_EXCEEDED** (429), **UNAVAILABLE** (503), **INTERNAL** (500) are transient, honouring
  ``Retry-After``.
- **No idempotency key**: FCM has none, so a send whose answer is lost may be shown twice.
  **No receipts and no webhooks**: FCM says nothing after accepting a message.
- ``data`` values must be strings: the delivery and notification ids go in as
  ``tidings_delivery_id`` / ``tidings_notification_id`` (the app can match a tap to them), with
  the message's metadata (strings as they are, anything else as JSON) except keys FCM reserves
  (``from``, ``gcm…``, ``google…``, ``message_type``, ``collapse_key``) and ``tidings_…`` ones.

Vendor documentation:

- https://firebase.google.com/docs/reference/fcm/rest/v1/projects.messages/send
- https://firebase.google.com/docs/reference/fcm/rest/v1/projects.messages (Message, data map)
- https://firebase.google.com/docs/reference/fcm/rest/v1/ErrorCode
- https://firebase.google.com/docs/cloud-messaging/error-codes (error response shape, details)
- https://firebase.google.com/docs/cloud-messaging/auth-server (the firebase.messaging scope)
- https://firebase.google.com/docs/cloud-messaging/throttling-and-quotas (600k messages a minute)
- https://developers.google.com/identity/protocols/oauth2/service-account#httprest (the JWT
  assertion, its claims, and the token exchange)
- https://datatracker.ietf.org/doc/html/rfc7523 (JWT bearer grant) and rfc6749#section-5.2
  (token endpoint error codes)
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from gateway import (
    CredentialsRejectedError,
    DeliveryError,
    OutboundMessage,
    PermanentDeliveryError,
    Provider,
    ProviderContext,
    ProviderLimits,
    SendReceipt,
    TransientDeliveryError,
)
from gateway.provider_kit import TIMEOUT_PROPERTY, VendorError, failure, json_object, retry_after_seconds, timeout_of, vendor_call

VENDOR: Final = "FCM"
TOKEN_VENDOR: Final = "Google OAuth"
CHANNEL: Final = "push"
DEFAULT_BASE_URL: Final = "https://fcm.googleapis.com"
DEFAULT_TOKEN_URI: Final = "https://oauth2.googleapis.com/token"
SCOPE: Final = "https://www.googleapis.com/auth/firebase.messaging"
GRANT_TYPE: Final = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ASSERTION_LIFETIME: Final = 3600
"""Seconds between the assertion's ``iat`` and ``exp``: Google's maximum."""
REFRESH_MARGIN: Final = 300.0
"""An access token is replaced this many seconds before it expires."""
FCM_ERROR_TYPE: Final = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST_TYPE: Final = "type.googleapis.com/google.rpc.BadRequest"
RESERVED_DATA_KEYS: Final = frozenset({"from", "gcm", "message_type", "collapse_key", "notification"})
RESERVED_DATA_PREFIXES: Final = ("google", "gcm")
_URL: Final = "^https?://[^/?#\\s]+(/[^?#\\s]*)?$"

ERRORS: Final[Mapping[str, VendorError]] = {
    # FCM's own codes (details[].errorCode of the FcmError entry)
    "UNREGISTERED": VendorError(transient=False, meaning="the registration token is no longer valid (app uninstalled, token rotated)", code="invalid_recipient"),
    "INVALID_ARGUMENT": VendorError(transient=False, meaning="FCM refused the message as invalid", code="invalid_message"),
    "SENDER_ID_MISMATCH": VendorError(transient=False, meaning="the token belongs to another Firebase project", code="sender_id_mismatch"),
    "THIRD_PARTY_AUTH_ERROR": VendorError(transient=False, meaning="the APNs certificate or web push key in the Firebase project was refused", credentials=True),
    "QUOTA_EXCEEDED": VendorError(transient=True, meaning="the project's sending quota is used up for now", code="rate_limited"),
    "UNAVAILABLE": VendorError(transient=True, meaning="FCM is overloaded", code="unavailable"),
    "INTERNAL": VendorError(transient=True, meaning="FCM had an internal error", code="internal"),
    # Google's canonical statuses, for answers without an FcmError detail
    "UNAUTHENTICATED": VendorError(transient=False, meaning="the access token was refused", credentials=True),
    "PERMISSION_DENIED": VendorError(transient=False, meaning="the service account may not send for this project (role, or FCM API not enabled)", credentials=True),
    "RESOURCE_EXHAUSTED": VendorError(transient=True, meaning="quota exceeded", code="rate_limited"),
}
"""FCM's refusals of a send."""

TOKEN_ERRORS: Final[Mapping[str, VendorError]] = {
    "invalid_grant": VendorError(transient=False, meaning="the key was refused (deleted or disabled key, wrong client_email, or a clock far off)", credentials=True),
    "invalid_client": VendorError(transient=False, meaning="the service account is unknown or disabled", credentials=True),
    "unauthorized_client": VendorError(transient=False, meaning="the service account may not use this grant", credentials=True),
    "invalid_scope": VendorError(transient=False, meaning="the firebase.messaging scope was refused", credentials=True),
    "access_denied": VendorError(transient=False, meaning="access was denied", credentials=True),
}
"""The token endpoint's refusals (RFC 6749 section 5.2 codes): every one means the key is not usable."""


@dataclass(frozen=True)
class ServiceAccount:
    """The parts of a service-account key this plugin uses; the key itself never shows in ``repr``."""

    client_email: str
    private_key: rsa.RSAPrivateKey = field(repr=False)
    private_key_id: str | None
    token_uri: str
    project_id: str | None


class FcmProvider(Provider):
    channels = frozenset({CHANNEL})
    config_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "required": ["service_account"],
        "properties": {
            "service_account": {
                "x-secret": True,
                "description": "The service-account key JSON from the Firebase console: the file as a string ({$file: key.json}) or its fields.",
                "anyOf": [
                    {"type": "string", "minLength": 2},
                    {
                        "type": "object",
                        "required": ["client_email", "private_key"],
                        "properties": {
                            "client_email": {"type": "string", "minLength": 3},
                            "private_key": {"type": "string", "minLength": 1},
                            "private_key_id": {"type": "string"},
                            "token_uri": {"type": "string", "pattern": _URL},
                            "project_id": {"type": "string"},
                        },
                    },
                ],
            },
            "project_id": {
                "type": "string",
                "pattern": "^[a-z][a-z0-9-]{4,28}[a-z0-9]$",
                "description": "The Firebase project to send for, such as acme-app-1a2b3 (default: the key's project_id).",
            },
            "token_uri": {"type": "string", "pattern": _URL, "description": "Where access tokens come from (default: the key's token_uri)."},
            "base_url": {"type": "string", "pattern": _URL, "default": DEFAULT_BASE_URL},
            "timeout_seconds": TIMEOUT_PROPERTY,
        },
        "additionalProperties": False,
    }
    # 1000 characters keeps the payload under FCM's 4096-byte limit whatever the script.
    limits = ProviderLimits(max_body_chars=1000, rate_per_second=10_000, receipts=False, replies=False, idempotency=False)

    def __init__(self, name: str, config: Mapping[str, Any], context: ProviderContext) -> None:
        super().__init__(name, config, context)
        self._account_cache: ServiceAccount | None = None
        self._token: str | None = None
        self._token_expires = 0.0
        self._token_lock = asyncio.Lock()

    # -- sending ------------------------------------------------------------------------------

    async def send(self, message: OutboundMessage) -> SendReceipt:
        account = self._account()
        project = self._project(account)
        url = f"{self.config.get('base_url', DEFAULT_BASE_URL).rstrip('/')}/v1/projects/{project}/messages:send"
        body = {"message": self._message(message)}
        token = await self._access_token()
        status, retry_after, answer = await self._post(url, body, token)
        if status == 401 and _fcm_code(answer) != "THIRD_PARTY_AUTH_ERROR":
            token = await self._access_token(rejected=token)
            status, retry_after, answer = await self._post(url, body, token)
        if 200 <= status < 300:
            name = answer.get("name")
            if not isinstance(name, str) or not name:
                # Accepted all the same: a retry could show it twice.
                raise PermanentDeliveryError(f"{VENDOR} accepted the message but answered without its name", code="unexpected_answer")
            return SendReceipt(provider_message_id=name, detail={"project_id": project})
        raise _refusal(status, retry_after, answer)

    async def check_credentials(self) -> str | None:
        """An access token from the key: the service account works (FCM itself is not called)."""
        account = self._account()
        project = self._project(account)
        await self._access_token()
        return f"service account {account.client_email} for project {project}"

    def _message(self, message: OutboundMessage) -> dict[str, Any]:
        notification = {key: value for key, value in (("title", message.subject), ("body", message.body)) if value}
        if not notification:
            raise PermanentDeliveryError("a push notification needs a subject or a body; this one has neither", code="empty_body")
        data = {key: _data_value(value) for key, value in message.metadata.items() if _usable_data(key, value)}
        data |= {"tidings_delivery_id": message.delivery_id, "tidings_notification_id": message.notification_id}
        return {"token": message.to, "notification": notification, "data": data}

    async def _post(self, url: str, body: Mapping[str, Any], token: str) -> tuple[int, float | None, dict[str, Any]]:
        async with vendor_call(
            self.context.session, "POST", url, timeout=timeout_of(self.config), vendor=VENDOR,
            json=body, headers={"Authorization": f"Bearer {token}"},
        ) as response:
            return response.status, retry_after_seconds(response.headers.get("Retry-After")), json_object(await response.read())

    # -- the service account and its access token --------------------------------------------

    def _account(self) -> ServiceAccount:
        """The parsed key (once); a key that cannot be used is a credentials failure, worded without it."""
        if self._account_cache is None:
            self._account_cache = parse_service_account(self.config["service_account"], self.config.get("token_uri"))
        return self._account_cache

    def _project(self, account: ServiceAccount) -> str:
        project = self.config.get("project_id") or account.project_id
        if not project:
            raise CredentialsRejectedError("no project_id: set it in the config or use a key that names its project", code="no_project")
        return str(project)

    async def _access_token(self, *, rejected: str | None = None) -> str:
        """A cached access token, or a new one when it is near expiry or FCM just refused it (``rejected``)."""
        async with self._token_lock:
            now = self.context.clock.now()
            current = self._token
            if current is not None and current != rejected and now < self._token_expires - REFRESH_MARGIN:
                return current
            token, lifetime = await self._fetch_token(now)
            self._token, self._token_expires = token, now + lifetime
            return token

    async def _fetch_token(self, now: float) -> tuple[str, float]:
        account = self._account()
        form = {"grant_type": GRANT_TYPE, "assertion": assertion(account, now)}
        async with vendor_call(
            self.context.session, "POST", account.token_uri, timeout=timeout_of(self.config), vendor=TOKEN_VENDOR, data=form,
        ) as response:
            status, retry_after = response.status, retry_after_seconds(response.headers.get("Retry-After"))
            answer = json_object(await response.read())
        token, lifetime = answer.get("access_token"), answer.get("expires_in")
        if 200 <= status < 300 and isinstance(token, str) and token:
            return token, float(lifetime) if isinstance(lifetime, (int, float)) and lifetime > 0 else float(ASSERTION_LIFETIME)
        if 200 <= status < 300:
            raise TransientDeliveryError(f"{TOKEN_VENDOR} answered without an access token", code="unexpected_answer")
        code, reason = answer.get("error"), answer.get("error_description")
        error = failure(
            TOKEN_ERRORS, code if isinstance(code, str) else None, reason if isinstance(reason, str) else None,
            http_status=status, retry_after=retry_after, vendor=TOKEN_VENDOR,
        )
        if isinstance(error, PermanentDeliveryError) and not isinstance(error, CredentialsRejectedError):
            # Any other refusal of the key is still the instance's credentials, not the message.
            raise CredentialsRejectedError(f"{TOKEN_VENDOR} refused the service account: {error.message}", code=error.code, detail=error.detail)
        raise error


def parse_service_account(value: Any, token_uri: str | None = None) -> ServiceAccount:
    """The key from ``service_account`` (a JSON string or an object); raises CredentialsRejectedError naming what is wrong, never the key."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise CredentialsRejectedError("service_account is not JSON (expected the key file's content)", code="bad_service_account") from None
    if not isinstance(value, Mapping):
        raise CredentialsRejectedError("service_account is not a JSON object", code="bad_service_account")
    missing = [name for name in ("client_email", "private_key") if not isinstance(value.get(name), str) or not value.get(name)]
    if missing:
        raise CredentialsRejectedError(f"service_account lacks {', '.join(missing)}", code="bad_service_account")
    try:
        key = serialization.load_pem_private_key(str(value["private_key"]).encode(), password=None)
    except Exception:  # noqa: BLE001 - ValueError, TypeError, UnsupportedAlgorithm: the message could quote the key
        raise CredentialsRejectedError("service_account's private_key is not a PEM private key", code="bad_service_account") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CredentialsRejectedError("service_account's private_key is not an RSA key (RS256 needs one)", code="bad_service_account")
    uri = token_uri or value.get("token_uri") or DEFAULT_TOKEN_URI
    key_id, project = value.get("private_key_id"), value.get("project_id")
    return ServiceAccount(
        client_email=str(value["client_email"]), private_key=key, private_key_id=str(key_id) if key_id else None,
        token_uri=str(uri), project_id=str(project) if project else None,
    )


def assertion(account: ServiceAccount, now: float) -> str:
    """The signed RS256 JWT a service account trades for an access token (RFC 7523)."""
    issued = int(now)
    header: dict[str, Any] = {"alg": "RS256", "typ": "JWT"}
    if account.private_key_id:
        header["kid"] = account.private_key_id
    claims = {"iss": account.client_email, "scope": SCOPE, "aud": account.token_uri, "iat": issued, "exp": issued + ASSERTION_LIFETIME}
    signing_input = f"{_b64url(json.dumps(header, separators=(',', ':')).encode())}.{_b64url(json.dumps(claims, separators=(',', ':')).encode())}"
    signature = account.private_key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64url(signature)}"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _usable_data(key: Any, value: Any) -> bool:
    lowered = str(key).lower()
    return (
        isinstance(key, str) and value is not None and lowered not in RESERVED_DATA_KEYS
        and not lowered.startswith(RESERVED_DATA_PREFIXES) and not lowered.startswith("tidings_")
    )


def _data_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), default=str)


def _error_object(answer: Mapping[str, Any]) -> Mapping[str, Any]:
    error = answer.get("error")
    return error if isinstance(error, dict) else {}


def _details(answer: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    details = _error_object(answer).get("details")
    return [item for item in details if isinstance(item, dict)] if isinstance(details, list) else []


def _fcm_code(answer: Mapping[str, Any]) -> str | None:
    """FCM's own error code, from the FcmError entry of ``details``."""
    for item in _details(answer):
        if item.get("@type") == FCM_ERROR_TYPE and isinstance(item.get("errorCode"), str):
            return str(item["errorCode"])
    return None


def _violated_fields(answer: Mapping[str, Any]) -> list[str]:
    fields: list[str] = []
    for item in _details(answer):
        if item.get("@type") == BAD_REQUEST_TYPE and isinstance(item.get("fieldViolations"), list):
            fields += [str(v.get("field")) for v in item["fieldViolations"] if isinstance(v, dict) and v.get("field")]
    return fields


def _refusal(status: int, retry_after: float | None, answer: Mapping[str, Any]) -> DeliveryError:
    error = _error_object(answer)
    canonical = error.get("status") if isinstance(error.get("status"), str) else None
    code = _fcm_code(answer) or canonical
    reason = error.get("message") if isinstance(error.get("message"), str) else None
    refused = failure(ERRORS, code, reason, http_status=status, retry_after=retry_after, vendor=VENDOR)
    if canonical is not None:
        refused.detail["status"] = canonical
    fields = _violated_fields(answer)
    if fields:
        refused.detail["field_violations"] = fields
    if code == "INVALID_ARGUMENT" and ("message.token" in fields or "registration token" in (reason or "").lower()):
        refused.code = "invalid_recipient"  # the device token itself is malformed: as dead as UNREGISTERED
    return refused

