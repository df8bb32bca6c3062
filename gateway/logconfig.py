"""Log output: readable text for people, one JSON object per line for log pipelines, no credentials in either.

Every record that reaches the handler, aiohttp's own included, passes :class:`CredentialFilter`
first: aiohttp logs a header line it cannot parse as it came (``X-API-Key: tdk_…\\x00``), and an
exception's text can quote a header.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Final

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
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": isoformat(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        return orjson.dumps(entry).decode()


def configure_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(CredentialFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Per-request access lines and watchfiles' "N changes detected" say nothing our own lines don't.
    for chatty in ("aiohttp.access", "watchfiles.main"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
