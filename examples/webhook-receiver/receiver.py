"""A tenant's receiver for Tidings event webhooks: verify the signature, then act once per event.

Tidings signs every event the Standard Webhooks way (``webhook-id``, ``webhook-timestamp``,
``webhook-signature``) and delivers at least once, so a receiver must (1) verify before it
trusts anything, with the official ``standardwebhooks`` library rather than its own HMAC code,
and (2) remember which ``webhook-id`` it has handled, because a retry after a timeout carries the
same id. Events of one endpoint arrive in creation order; ``data.seq`` says the order if you need
to restore it.

Run::

    pip install aiohttp standardwebhooks
    TIDINGS_WEBHOOK_SECRET=whsec_… python receiver.py --port 9000

and list ``http://<this host>:9000/tidings`` under ``webhooks:`` in your policy.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

log = logging.getLogger("receiver")
Handler = Callable[[dict[str, Any]], None]


class SeenEvents:
    """Ids of the events already handled, in a small SQLite file, so a restart does not forget them."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path)
        self._db.execute("CREATE TABLE IF NOT EXISTS seen (webhook_id TEXT PRIMARY KEY, type TEXT, at TEXT DEFAULT CURRENT_TIMESTAMP)")

    def first_time(self, webhook_id: str, event_type: str) -> bool:
        """Record ``webhook_id``; False if it was already there (a retry or a replay)."""
        with self._db:
            inserted = self._db.execute("INSERT OR IGNORE INTO seen (webhook_id, type) VALUES (?, ?)", (webhook_id, event_type))
        return inserted.rowcount == 1

    def close(self) -> None:
        self._db.close()


def make_app(secret: str, seen: SeenEvents, handle: Handler) -> web.Application:
    """The receiver: ``POST /tidings`` verifies, dedupes, and hands each new event to ``handle``."""
    webhook = Webhook(secret)

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            webhook.verify(body, dict(request.headers))  # signature and timestamp (5 minutes' tolerance)
        except WebhookVerificationError:
            return web.json_response({"error": "invalid signature"}, status=401)
        event = json.loads(body)
        if seen.first_time(request.headers["webhook-id"], event["type"]):
            handle(event)
            return web.json_response({"handled": True})
        return web.json_response({"handled": False, "reason": "already handled"})  # 2xx: do not retry

    async def close(_app: web.Application) -> None:
        seen.close()

    app = web.Application()
    app.router.add_post("/tidings", receive)
    app.on_cleanup.append(close)
    return app


def log_event(event: dict[str, Any]) -> None:
    data = event.get("data", {})
    log.info("%s: notification %s, %s %s", event["type"], data.get("notification_id"), data.get("channel"), data.get("status"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--seen", type=Path, default=Path("seen-events.sqlite3"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    web.run_app(make_app(os.environ["TIDINGS_WEBHOOK_SECRET"], SeenEvents(args.seen), log_event), port=args.port)


if __name__ == "__main__":
    main()
