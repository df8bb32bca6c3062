"""Log output: readable text for people, one JSON object per line for log pipelines."""

from __future__ import annotations

import logging
import sys

import orjson

from gateway.clock import isoformat


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": isoformat(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def configure_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Per-request access lines and watchfiles' "N changes detected" say nothing our own lines don't.
    for chatty in ("aiohttp.access", "watchfiles.main"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
