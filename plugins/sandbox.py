"""The sandbox: a provider that never leaves the machine but runs the whole status lifecycle.

Test-mode API keys always send here. Each message is recorded (the newest ``record_limit``),
reported ``sent`` by the send call and ``delivered`` by a simulated receipt after
``delivery_delay_seconds``. Addresses listed under ``fail`` fail the way a real provider
would for a bad recipient (``invalid_recipient``, or ``recipient_unavailable`` for now), so
fallback and retry handling can be exercised without a vendor.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping
from typing import Any, ClassVar

from gateway import (
    INVALID_RECIPIENT,
    RECIPIENT_UNAVAILABLE,
    OutboundMessage,
    PermanentDeliveryError,
    Provider,
    ProviderContext,
    ProviderLimits,
    SendReceipt,
    StatusUpdate,
    TransientDeliveryError,
)


class SandboxProvider(Provider):
    channels = frozenset({"*"})
    config_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "properties": {
            "delivery_delay_seconds": {"type": "number", "minimum": 0, "default": 0},
            "record_limit": {"type": "integer", "minimum": 0, "default": 1000},
            "fail": {
                "type": "object",
                "description": "address → 'permanent' or 'transient': sends to it fail that way",
                "additionalProperties": {"enum": ["permanent", "transient"]},
            },
        },
        "additionalProperties": False,
    }
    limits = ProviderLimits(receipts=True, idempotency=True)
    simulated = True

    def __init__(self, name: str, config: Mapping[str, Any], context: ProviderContext) -> None:
        super().__init__(name, config, context)
        self.delay = float(self.config.get("delivery_delay_seconds", 0))
        self.failures: Mapping[str, str] = self.config.get("fail", {})
        self.messages: deque[OutboundMessage] = deque(maxlen=int(self.config.get("record_limit", 1000)))
        self._timers: dict[str, asyncio.TimerHandle] = {}

    async def send(self, message: OutboundMessage) -> SendReceipt:
        failure = self.failures.get(message.to)
        if failure == "permanent":
            raise PermanentDeliveryError(f"sandbox rejects {message.to} (configured to fail)", code=INVALID_RECIPIENT)
        if failure == "transient":
            raise TransientDeliveryError(f"sandbox cannot reach {message.to} for now (configured to fail)", code=RECIPIENT_UNAVAILABLE)
        # The delivery id makes the provider id stable, as a vendor idempotency key would.
        message_id = f"sbx_{message.delivery_id}"
        self.messages.append(message)
        loop = asyncio.get_running_loop()
        self._timers[message_id] = loop.call_later(self.delay, self._report_delivered, message_id)
        return SendReceipt(provider_message_id=message_id, detail={"sandbox": True})

    def _report_delivered(self, message_id: str) -> None:
        self._timers.pop(message_id, None)
        when = self.context.clock.now()
        self.context.report([StatusUpdate(message_id, "delivered", occurred_at=when, detail={"sandbox": "delivered"})])

    async def aclose(self) -> None:
        """Report what is still pending now rather than lose the simulated receipts."""
        for message_id, timer in list(self._timers.items()):
            timer.cancel()
            self._report_delivered(message_id)
