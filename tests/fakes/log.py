"""The log provider's conformance kit: it talks to no vendor, so it can neither fail nor be forged."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from gateway.conformance import Fault, Kit, outbound
from plugins.logsink import LogProvider


class NoVendor:
    url = ""

    def fail_next(self, fault: Fault) -> None:
        raise ValueError(f"the log provider has no vendor to make {fault!r} happen")


@asynccontextmanager
async def serve() -> AsyncIterator[NoVendor]:
    yield NoVendor()


KIT = Kit(
    plugin=LogProvider, serve=serve, config=lambda _fake: {}, message=outbound("email", "a@example.com", {"email": "a@example.com"}, subject="Hi"),
    faults=frozenset(), empty_config_ok=True,
)
