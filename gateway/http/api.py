"""HTTP plumbing shared by every route: JSON in and out, the error envelope, authentication."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, Final

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from pydantic import ValidationError as PydanticValidationError

from gateway.errors import (
    ApiError,
    BadRequestError,
    ErrorDetail,
    MethodNotAllowedError,
    NotFoundError,
    PayloadTooLargeError,
    RequestTimeoutError,
    ServiceUnavailableError,
    UnsupportedMediaTypeError,
    ValidationError,
    error_body,
)
from gateway.http.appkeys import SETTINGS
from gateway.store import StorageUnavailableError

log = logging.getLogger(__name__)
JSON: Final = "application/json"
STORAGE_RETRY_AFTER: Final = 5  # seconds a client waits before asking again while the store refuses writes
MAX_JSON_DEPTH: Final = 32
"""How deeply a request body's arrays and objects may nest: far more than any notification needs,
and well inside what the JSON encoder writes back (an idempotency record, a stored payload)."""
# aiohttp reads header bytes that are not UTF-8 as lone surrogates (surrogateescape); no text can hold them.
_UNDECODED: Final = re.compile("[\udc80-\udcff]")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return raw_json_response(orjson.dumps(data), status, headers)


def raw_json_response(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=body, status=status, content_type=JSON, headers=headers)


def error_response(error: ApiError) -> web.Response:
    return json_response(error.body(), error.status, error.headers)


async def read_json(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object; 415, 413, 400 or 422 otherwise."""
    if request.content_type != JSON and not request.content_type.endswith("+json"):
        raise UnsupportedMediaTypeError(
            f"Send JSON with Content-Type: application/json (got {request.content_type or 'none'!r}).",
            code="unsupported_media_type",
        )
    limit = request.app[SETTINGS].max_body_bytes
    raw = await read_body(request, limit, f"Request body is larger than the {limit} bytes allowed.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        raise BadRequestError(f"Request body is not valid JSON: {err}", code="invalid_json") from err
    if not isinstance(body, dict):
        raise ValidationError("Request body must be a JSON object.", details=[ErrorDetail("", "must be a JSON object", "validation_failed")])
    deep = too_deep(body, MAX_JSON_DEPTH)
    if deep is not None:
        message = f"nested deeper than {MAX_JSON_DEPTH} levels"
        raise ValidationError(f"Request body is {message}.", code="validation_failed", details=[ErrorDetail(deep, message, "validation_failed")])
    return body


async def read_body(request: web.Request, limit: int, too_large: str) -> bytes:
    """The body as it streams in: 413 (``too_large``) once it passes ``limit``, the rest never read; 408 if it is too slow.

    A declared length over the limit is refused before a byte is read; a chunked body is read
    no further than ``limit + 1`` bytes. The whole body must arrive within
    ``TIDINGS_REQUEST_TIMEOUT_SECONDS``. A body whose framing is broken (a bad chunk size) is a
    400 ``invalid_body``.
    """
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLargeError(too_large, code="payload_too_large")
    if request.content.is_eof():  # the usual small body came whole with its headers: nothing to wait for
        whole = request.content.read_nowait(limit + 1)
        if len(whole) > limit:
            raise PayloadTooLargeError(too_large, code="payload_too_large")
        return whole
    timeout = request.app[SETTINGS].request_timeout_seconds
    body = bytearray()
    try:
        async with asyncio.timeout(timeout):
            while chunk := await request.content.read(limit + 1 - len(body)):
                body += chunk
                if len(body) > limit:
                    raise PayloadTooLargeError(too_large, code="payload_too_large")
    except TimeoutError:
        raise RequestTimeoutError(f"The request body did not arrive within {timeout:g} s.", code="request_timeout") from None
    except HttpProcessingError as err:
        raise BadRequestError(f"The request body is malformed: {err.message}", code="invalid_body") from None
    return bytes(body)


def too_deep(value: Any, limit: int) -> str | None:
    """The top-level field under which ``value`` nests deeper than ``limit`` arrays and objects, or None."""
    stack: list[tuple[Any, int, str]] = [(value, 1, "")]
    while stack:
        item, depth, field = stack.pop()
        children = item.items() if isinstance(item, dict) else enumerate(item) if isinstance(item, list) else ()
        for key, child in children:
            if isinstance(child, dict | list):
                if depth >= limit:
                    return field or str(key)
                stack.append((child, depth + 1, field or str(key)))
    return None


def parse_model(model: type[Any], body: dict[str, Any]) -> Any:
    """``body`` validated as ``model``; pydantic's complaints become one 422 with a detail each."""
    try:
        return model.model_validate(body)
    except PydanticValidationError as err:
        raise validation_error(err) from None


def validation_error(err: PydanticValidationError, prefix: str = "") -> ValidationError:
    details = [ErrorDetail(prefix + _dotted(e["loc"]), _message(e), "validation_failed") for e in err.errors()]
    return ValidationError("The request body is not valid.", code="validation_failed", details=details)


def _dotted(loc: tuple[Any, ...]) -> str:
    parts = [f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc if part not in ("str", "int")]
    return "".join(parts).lstrip(".")


def _message(error: Any) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "required field is missing"
    return str(error["msg"])




@web.middleware
async def header_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A header whose value is not UTF-8 is a 400 naming it, before any handler (or key check) reads it."""
    for name, value in request.headers.items():
        if not value.isascii() and _UNDECODED.search(value):  # the usual header is ASCII: no regex on the hot path
            message = "is not UTF-8 text"
            raise BadRequestError(f"Header {name} {message}.", code="invalid_header", details=[ErrorDetail(name, message, "invalid_header")])
    return await handler(request)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every refusal in the one error shape; an unexpected failure is a logged 500, never a stack trace."""
    try:
        return await handler(request)
    except ApiError as err:
        return error_response(err)
    except StorageUnavailableError:
        message = "The gateway cannot write to its store right now (disk full or failing); nothing of this request was kept. Try again."
        headers = {"Retry-After": str(STORAGE_RETRY_AFTER)}
        return error_response(ServiceUnavailableError(message, code="storage_unavailable", headers=headers))
    except web.HTTPRequestEntityTooLarge:
        return error_response(PayloadTooLargeError("Request body is too large.", code="payload_too_large"))
    except web.HTTPMethodNotAllowed as err:
        allowed = ", ".join(sorted(err.allowed_methods))
        return error_response(
            MethodNotAllowedError(f"{request.method} is not allowed here (allowed: {allowed}).", headers={"Allow": allowed})
        )
    except web.HTTPNotFound:
        return error_response(NotFoundError(f"No route for {request.path}.", code="route_not_found"))
    except web.HTTPException as err:
        if err.status < 400:
            raise
        return json_response(error_body(f"http_{err.status}", err.reason), err.status)
    except Exception:
        log.exception("unhandled error serving %s %s", request.method, request.path)
        return json_response(error_body("internal_error", "Something went wrong on our side; the error has been logged."), 500)
