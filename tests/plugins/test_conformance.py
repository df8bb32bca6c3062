"""The conformance suite, run on every installed ``tidings.providers`` entry point.

Built-in plugins bring their kit as ``KIT`` in ``tests/fakes/<plugin>.py``; an installed
third-party distribution registers one under ``tidings.conformance``. A plugin without a kit
fails here: nothing ships unproven.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import import_module
from pathlib import Path

import aiohttp
import pytest
from conftest import run_cli

from gateway import Provider, conformance
from gateway.conformance import Fault, Kit, VendorFake
from gateway.plugins import PluginCatalog

CATALOG = PluginCatalog.discover()
FAKES = Path(__file__).parents[1] / "fakes"


def built_in_kits() -> dict[str, Kit]:
    """``KIT`` of each ``tests/fakes/<plugin>.py``, by plugin name."""
    modules = (import_module(f"fakes.{path.stem}") for path in sorted(FAKES.glob("*.py")) if not path.stem.startswith(("_", "test_")))
    return {module.__name__.removeprefix("fakes."): module.KIT for module in modules if isinstance(getattr(module, "KIT", None), Kit)}


KITS = built_in_kits() | conformance.installed_kits()
PLUGINS = sorted(set(CATALOG.providers) | set(KITS))
FAULT_CASES = [(name, fault) for name, kit in sorted(KITS.items()) for fault in sorted(kit.faults)]


@asynccontextmanager
async def running(plugin: str) -> AsyncIterator[tuple[Kit, VendorFake, Provider]]:
    kit = KITS[plugin]
    async with kit.serve() as fake, aiohttp.ClientSession() as session:
        provider = kit.plugin(f"conformance-{plugin}", kit.config(fake), conformance.context(session))
        try:
            yield kit, fake, provider
        finally:
            await provider.aclose()


def test_every_installed_plugin_loads_and_brings_a_kit() -> None:
    assert not CATALOG.failures
    assert {"sandbox", "log", "webhook"} <= set(PLUGINS)
    assert [name for name in CATALOG.providers if name not in KITS] == [], "installed plugins without a conformance kit"
    assert [name for name in KITS if name not in CATALOG.providers] == [], "kits whose plugin is not registered under tidings.providers"
    assert {name: kit.plugin for name, kit in KITS.items()} == dict(CATALOG.providers), "each kit tests the class its entry point loads"


@pytest.mark.parametrize("plugin", PLUGINS)
async def test_declarations_and_config_schema(plugin: str) -> None:
    async with running(plugin) as (kit, fake, _provider):
        conformance.check_declarations(kit, CATALOG.channel_catalog(), kit.config(fake))


@pytest.mark.parametrize("plugin", PLUGINS)
async def test_secrets_never_show(plugin: str) -> None:
    async with running(plugin) as (kit, _fake, provider):
        conformance.check_secrets_masked(kit, provider)
        code, listing = run_cli("plugins")
    assert code == 0
    assert not [secret for secret in kit.secrets if secret in listing]


@pytest.mark.parametrize("plugin", PLUGINS)
async def test_a_successful_send_gives_a_provider_message_id(plugin: str) -> None:
    async with running(plugin) as (kit, fake, provider):
        await conformance.check_send(kit, fake, provider)


@pytest.mark.parametrize(("plugin", "fault"), FAULT_CASES)
async def test_timeouts_and_5xx_are_transient_a_rejected_recipient_permanent(plugin: str, fault: Fault) -> None:
    async with running(plugin) as (kit, fake, provider):
        await conformance.check_fault(kit, fake, provider, fault)
        await conformance.check_send(kit, fake, provider)  # and the fake recovers: the fault was for one send


@pytest.mark.parametrize("plugin", PLUGINS)
async def test_webhook_verification_refuses_a_forged_callback(plugin: str) -> None:
    async with running(plugin) as (kit, fake, provider):
        await conformance.check_webhooks(kit, fake, provider)


def test_a_vendor_plugin_simulates_every_fault() -> None:
    """Only plugins that talk to no vendor may leave faults out of their kit."""
    offline = {"sandbox", "log"}
    assert {name: sorted(kit.faults) for name, kit in KITS.items() if name not in offline and kit.faults != conformance.ALL_FAULTS} == {}
