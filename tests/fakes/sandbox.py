"""The sandbox's conformance kit: no vendor, failures come from its ``fail`` config."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from gateway.conformance import Fault, Kit, outbound
from plugins.sandbox import SandboxProvider

PHONE = "+14155550100"


class _OneShotFailures(dict[str, str]):
    """The sandbox's ``fail`` mapping, each entry used up by the one send it fails."""

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return self.pop(key, default)


class SandboxStandIn:
    """No server: ``fail_next`` arms the sandbox's own ``fail`` setting for the next send."""

    url = ""

    def __init__(self) -> None:
        self.failures = _OneShotFailures()

    def fail_next(self, fault: Fault) -> None:
        self.failures[PHONE] = "permanent" if fault == "reject_recipient" else "transient"


@asynccontextmanager
async def serve() -> AsyncIterator[SandboxStandIn]:
    yield SandboxStandIn()


KIT = Kit(
    plugin=SandboxProvider,
    serve=serve,
    config=lambda fake: {"fail": fake.failures},  # type: ignore[attr-defined]
    message=outbound("sms", PHONE, {"phone": PHONE}),
    faults=frozenset({"5xx", "reject_recipient"}),
    empty_config_ok=True,
)
