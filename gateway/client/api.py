"""A small client of the Tidings HTTP API: where the gateway is, the key, and refusals as exceptions.

The key comes only from ``TIDINGS_API_KEY``: a key typed as a flag stays in the shell's history
and shows in ``ps`` to every user of the machine. It is sent as ``X-API-Key`` and never printed:
a refusal is shown by the gateway's own code and message, which never hold a key.

Errors::

    ClientError                 the command could not get an answer it can use
    ├── UnreachableError        no HTTP answer at all (refused connection, timeout, bad host)
    └── RefusedError            the gateway answered with an error: status, code, message, details
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
import orjson
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gateway.errors import TidingsError

DEFAULT_URL: Final = "http://127.0.0.1:8080"
KEY_VARIABLE: Final = "TIDINGS_API_KEY"
TIMEOUT_SECONDS: Final = 60.0  # a 10,000-row bulk is committed before its answer; give it time
MAX_DETAILS_SHOWN: Final = 3


class ClientSettings(BaseSettings):
    """Where the commands find the gateway and which key they use, from ``TIDINGS_URL`` and ``TIDINGS_API_KEY``."""

    model_config = SettingsConfigDict(env_prefix="TIDINGS_", extra="ignore", frozen=True)

    url: str = Field(DEFAULT_URL, description="The gateway's base URL, for the commands that call its API.")
    api_key: SecretStr | None = Field(None, description="The tenant key those commands use (never a flag: shell history keeps flags).")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")


class ClientError(TidingsError):
    """The command could not get a usable answer from the gateway."""

    def line(self) -> str:
        """The error as the one line a command prints."""
        return str(self)


class UnreachableError(ClientError):
    """No HTTP answer: nothing listens at the URL, the host is unknown, or the answer took too long."""


class RefusedError(ClientError):
    """The gateway answered with its error shape (or something that is not the Tidings API)."""

    def __init__(
        self, status: int, code: str, message: str, details: Sequence[Mapping[str, Any]] = (), retry_after: float | None = None
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.details = tuple(details)
        self.retry_after = retry_after
        super().__init__(self.line())

    def line(self) -> str:
        """``STATUS CODE: message (field: problem; …)``, the details that add to the message, on one line."""
        adding = [d for d in self.details if d.get("field") and str(d.get("message")) not in self.message]
        shown = [f"{d.get('field')}: {d.get('message')}" for d in adding[:MAX_DETAILS_SHOWN]]
        more = ["…"] if len(adding) > MAX_DETAILS_SHOWN else []
        extra = f" ({'; '.join(shown + more)})" if shown else ""
        return _one_line(f"{self.status} {self.code}: {self.message}{extra}")


def _one_line(text: str) -> str:
    return " ".join(text.split())


@dataclass(frozen=True)
class Answer:
    """A successful answer: its status, JSON body and whether it replays an earlier request (idempotency)."""

    status: int
    body: dict[str, Any]
    replayed: bool = False
    headers: Mapping[str, str] = field(default_factory=dict)


class ApiClient:
    """Calls the gateway at ``base_url`` with ``key``; every method returns the JSON answer or raises a :class:`ClientError`."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, key: str) -> None:
        self._session = session
        self._base_url = base_url
        self._key = key

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> Answer:
        return await self.call("GET", path, params=params)

    async def post(self, path: str, body: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> Answer:
        return await self.call("POST", path, body=body, headers=headers)

    async def call(
        self, method: str, path: str, *, body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None,
    ) -> Answer:
        sent = {"X-API-Key": self._key, "Accept": "application/json", **(headers or {})}
        data = None
        if body is not None:
            data, sent["Content-Type"] = orjson.dumps(body), "application/json"
        url = self._base_url + path
        try:
            async with self._session.request(method, url, data=data, params=params, headers=sent) as response:
                raw = await response.read()
                return _answer(response, raw, url)
        except (aiohttp.ClientConnectionError, aiohttp.InvalidURL, TimeoutError) as err:
            raise UnreachableError(_one_line(f"cannot reach the gateway at {self._base_url}: {_why(err)}")) from err


def _why(err: Exception) -> str:
    if isinstance(err, TimeoutError):
        return f"no answer within {TIMEOUT_SECONDS:g} s"
    if isinstance(err, aiohttp.ClientConnectorError) and err.os_error.errno == errno.ECONNREFUSED:
        return "connection refused (is `tidings serve` running there?)"
    if isinstance(err, aiohttp.ClientConnectorError):
        return str(err.os_error) or type(err.os_error).__name__
    return str(err) or type(err).__name__


def _answer(response: aiohttp.ClientResponse, raw: bytes, url: str) -> Answer:
    try:
        body = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        raise RefusedError(response.status, "not_tidings", f"{url} answered {response.status} with something that is not the Tidings API")
    if response.status >= 400:
        raise _refusal(response, body)
    return Answer(response.status, body, response.headers.get("Idempotent-Replayed") == "true", dict(response.headers))


def _refusal(response: aiohttp.ClientResponse, body: dict[str, Any]) -> RefusedError:
    error = body.get("error")
    if not isinstance(error, dict):
        return RefusedError(response.status, "not_tidings", f"answered {response.status} without the Tidings error shape")
    details = tuple(d for d in error.get("details") or () if isinstance(d, dict))
    retry_after = response.headers.get("Retry-After")
    wait = float(retry_after) if retry_after and retry_after.replace(".", "", 1).isdigit() else None
    return RefusedError(response.status, str(error.get("code")), str(error.get("message")), details, wait)


@contextlib.asynccontextmanager
async def connect(settings: ClientSettings) -> AsyncIterator[ApiClient]:
    """An :class:`ApiClient` for the gateway the settings name; the caller has checked that a key is set."""
    assert settings.api_key is not None, "checked by the command before it connects"
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        yield ApiClient(session, settings.url, settings.api_key.get_secret_value())
