"""The conformance suite, run on every installed ``tidings.providers`` entry point.

Built-in plugins bring their kit as ``KIT`` in ``tests/fakes/<plugin>.py``; an installed
third-party distribution registers one under ``tidings.conformance``. A plugin without a kit
fails here: nothing ships unproven.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import import_module

import aiohttp
import pytest

from conftest import run_cli
from gateway import Provider
from gateway import conformance
from gateway.conformance import Fault, Kit, VendorFake
from gateway.plugins import PluginCatalog

CATALOG = PluginCatalog.discover()
PLUGINS = sorted(CATALOG.providers)
INSTALLED_KITS = conformance.installed_kits()


def kit_of(plugin: str) -> Kit | None:
    try:
        module = import_module(f"fakes.{plugin}")
    except ModuleNotFoundError:
        return INSTALLED_KITS.get(plugin)
    found = getattr(module, "KIT", None)
    return found if isinstance(found, Kit) else INSTALLED_KITS.get(plugin)


KITS = {name: kit for name in PLUGINS if (kit := kit_of(name)) is not None}
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
    assert [name for name in PLUGINS if name not in KITS] == []
    assert {name: KITS[name].plugin for name in PLUGINS} == dict(CATALOG.providers), "each kit tests the class its entry point loads"


@pytest.mark.parametrize("plugin", PLUGINS)
async def test_declarations_and_config_schema(plugin: str) -> None:
    async with running(plugin) as (kit, fake, _provider):
        conformance.check_declarations(kit, CATALOG.channel_catalog(), kit.config(fake))


@pytest.mark.parametrize("plugin", PLUGINS)
async def test_secrets_never_show(plugin: str) -> None:
    async with running(plugin) as (kit, _fake, provider):
        conformance.check_secrets_masked(kit, provider)
        code, listing = run_cli("plugins")
    assert code == 0 and plugin in listing
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
