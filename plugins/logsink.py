"""The log provider: writes each rendered message to the log instead of sending it.

Useful while writing templates and wiring a system to Tidings; the log line carries what a
vendor would have received.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, ClassVar

from gateway import OutboundMessage, Provider, ProviderLimits, SendReceipt

log = logging.getLogger("tidings.provider.log")


class LogProvider(Provider):
    channels = frozenset({"*"})
    config_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "properties": {"level": {"enum": ["DEBUG", "INFO", "WARNING"], "default": "INFO"}},
        "additionalProperties": False,
    }
    limits = ProviderLimits(idempotency=True)

    async def send(self, message: OutboundMessage) -> SendReceipt:
        level = logging.getLevelName(self.config.get("level", "INFO"))
        parts = [f"channel={message.channel}", f"to={message.to}"]
        if message.subject is not None:
            parts.append(f"subject={message.subject!r}")
        if message.body is not None:
            parts.append(f"body={message.body!r}")
        if message.provider_template is not None:
            pt = message.provider_template
            parts.append(f"template={pt.name}/{pt.language} params={list(pt.parameters)!r}")
        log.log(level, "[%s] delivery %s: %s", self.name, message.delivery_id, " ".join(parts))
        return SendReceipt(provider_message_id=f"log_{message.delivery_id}")
