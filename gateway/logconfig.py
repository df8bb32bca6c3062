"""Log output: readable text for people, one JSON object per line for log pipelines, no credentials in either.

Every record that reaches the handler, aiohttp's own included, passes :class:`CredentialFilter`
first: aiohttp logs a header line it cannot parse as it came (``X-API-Key: tdk_…\\x00``), and an
exception's text can quote a header.

One handler on the root logger writes every line, in the one format chosen: the start and stop
lines, the request log (logger ``gateway.access``), aiohttp's and asyncio's own records, and
Python warnings (captured into the log rather than printed as they come). A record may carry
structured fields (``extra=fields(tenant=…, delivery_id=…)``): JSON lines hold them as keys of
their own beside ``message``; text lines already say them in the message.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any, Final

import orjson

from gateway.clock import isoformat
from gateway.redaction import MASK

# A credential header as text, a repr or a mapping: ``X-API-Key: k``, ``'Authorization': 'Bearer k'``,
# ``b'x-api-key:\\tk'`` (a tab as a repr writes it).
_SPACE: Final = r"(?:\s|\\t|['\"])*"
_CREDENTIAL_HEADER: Final = re.compile(
    rf"(?i)\b((?:proxy-)?authorization|x-api-key)({_SPACE}[:=]{_SPACE})((?:bearer|basic|token|digest)(?:\s|\\t)+)?[^\s'\",\\]+"
)
_API_KEY: Final = re.compile(r"(td[ko])_[A-Za-z0-9_-]+")  # a Tidings API or operator key wherever it appears, even right after a repr's \t


ACCESS_LOGGER: Final = "gateway.access"
FIELDS: Final = "fields"
"""The attribute of a log record that holds its structured fields (see :func:`fields`)."""


def fields(**values: Any) -> dict[str, dict[str, Any]]:
    """``extra=`` for a log call whose record carries ``values`` as structured fields (JSON keys of their own)."""
    return {FIELDS: values}


def redact_credentials(text: str) -> str:
    """``text`` with the values of credential headers, and anything shaped like a Tidings API or operator key, masked."""
    text = _CREDENTIAL_HEADER.sub(lambda match: f"{match[1]}{match[2]}{match[3] or ''}{MASK}", text)
    return _API_KEY.sub(rf"\1_{MASK}", text)


class CredentialFilter(logging.Filter):
    """Masks credentials in a record's message, its exception and its stack before any handler writes it.

    The record is rewritten in place (message formatted, exception rendered to ``exc_text``), so
    every handler after this one sees the masked text too.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == ACCESS_LOGGER:  # method, route template, status, duration, tenant: nothing a client wrote, no header
            return True
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed call: logging reports it itself, in the handler
            return True
        clean = redact_credentials(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = redact_credentials(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_credentials(record.stack_info)
        values = getattr(record, FIELDS, None)
        if values:
            for name, value in values.items():
                if isinstance(value, str):
                    values[name] = redact_credentials(value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the record's fields, and its exception if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": isoformat(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        values = getattr(record, FIELDS, None)
        if values:
            entry.update(values)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        return orjson.dumps(entry).decode()


def configure_logging(level: str, fmt: str) -> None:
    """Every line of the process to stderr in ``fmt`` (``text`` or ``json``) from ``level`` up, credentials masked."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(CredentialFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.captureWarnings(True)  # a warning is a line of the log too, in its format, not a bare line on stderr
    # aiohttp's access lines (the server runs without them: gateway.access logs each request with its route
    # and tenant) and watchfiles' "N changes detected" say nothing our own lines don't.
    for chatty in ("aiohttp.access", "watchfiles.main"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
