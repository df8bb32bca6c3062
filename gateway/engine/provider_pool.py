"""The provider instances a policy set names, built from their plugins and ready to send.

A policy reload builds a new :class:`ProviderPool` that carries over every instance whose
plugin and config did not change, and :class:`PoolHolder` puts it in service; instances the
new pool dropped are closed once the sends already using them have finished.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import aiohttp

from gateway.clock import Clock
from gateway.plugin_api import Provider, ProviderContext, ProviderReport
from gateway.plugins import PluginCatalog
from gateway.policy.models import SANDBOX
from gateway.policy.view import PolicySet
from gateway.redaction import mask_config

log = logging.getLogger(__name__)
Reporter = Callable[[str, Sequence[ProviderReport]], None]
Spec = tuple[str, Mapping[str, Any]]
"""What an instance was built from: its plugin's name and its config."""


class ProviderPool:
    """Live provider instances by name, plus the sandbox that serves test keys."""

    def __init__(self, instances: Mapping[str, Provider], specs: Mapping[str, Spec] | None = None) -> None:
        self._instances = MappingProxyType(dict(instances))
        self._specs = MappingProxyType(dict(specs or {}))

    @classmethod
    def build(
        cls,
        policy: PolicySet,
        plugins: PluginCatalog,
        *,
        session: aiohttp.ClientSession,
        clock: Clock,
        report: Reporter,
        reuse: ProviderPool | None = None,
    ) -> ProviderPool:
        """Instantiate every provider instance in ``policy`` (and a default ``sandbox``).

        An instance of ``reuse`` with the same name, plugin and config is carried over instead
        of built again, so a reload leaves its connections, timers and in-flight sends alone.
        """
        specs: dict[str, Spec] = {name: (i.plugin, i.config) for name, i in policy.provider_instances.items()}
        if SANDBOX not in specs and SANDBOX in plugins.providers:
            specs[SANDBOX] = (SANDBOX, {})
        instances: dict[str, Provider] = {}
        for name, spec in specs.items():
            kept = reuse.unchanged(name, spec) if reuse is not None else None
            if kept is None:
                context = ProviderContext(session=session, clock=clock, report=_reporter_for(report, name))
                kept = _instantiate(name, spec, plugins, context)
            instances[name] = kept
        return cls(instances, specs)

    def unchanged(self, name: str, spec: Spec) -> Provider | None:
        """This pool's instance ``name`` if it was built from exactly ``spec``."""
        return self._instances.get(name) if self._specs.get(name) == spec else None

    def retired_by(self, successor: ProviderPool) -> list[Provider]:
        """This pool's instances that ``successor`` did not carry over."""
        kept = {id(provider) for provider in successor._instances.values()}
        return [provider for provider in self._instances.values() if id(provider) not in kept]

    @property
    def instances(self) -> Mapping[str, Provider]:
        return self._instances

    def get(self, name: str) -> Provider | None:
        return self._instances.get(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._instances)

    def candidates(self, policy: PolicySet, tenant: str, channel: str, *, test: bool) -> list[Provider]:
        """The instances that may carry a delivery, in failover order: the sandbox alone for test keys."""
        names = (SANDBOX,) if test else policy.providers_for(tenant, channel)
        return [provider for name in names if (provider := self._instances.get(name)) is not None]

    async def aclose(self) -> None:
        await close_providers(self._instances.values())


class PoolHolder:
    """The provider pool in service, replaced whole when a policy reload changes providers.

    aiohttp freezes the app's state once it has started, so the app keeps this holder and the
    dispatcher asks it for ``current`` on every delivery. When a new pool drops an instance
    (removed from policy, or its config changed) the instance may still be sending: it is closed
    only after ``idle()`` returns, which the dispatcher answers once every send in flight at that
    moment has finished (each is bounded by the send timeout). Sends that start after the swap
    already get the new pool, so none ever runs on a closed instance; instances carried over
    unchanged are never closed by a reload.
    """

    def __init__(self, pool: ProviderPool) -> None:
        self._current = pool
        self._retiring: set[asyncio.Task[None]] = set()

    @property
    def current(self) -> ProviderPool:
        return self._current

    def swap(self, new: ProviderPool, *, idle: Callable[[], Awaitable[None]]) -> None:
        """Serve ``new`` from now on; close what it dropped once ``idle()`` has returned."""
        retired = self._current.retired_by(new)
        self._current = new
        if retired:
            task = asyncio.create_task(self._retire(retired, idle), name="retire-providers")
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    async def _retire(self, retired: list[Provider], idle: Callable[[], Awaitable[None]]) -> None:
        await idle()
        log.info("closing provider instances no longer in policy: %s", ", ".join(p.name for p in retired))
        await close_providers(retired)

    async def aclose(self) -> None:
        """Close every instance: the current pool's and retired ones still waiting (sending has stopped)."""
        await asyncio.gather(*self._retiring, return_exceptions=True)
        await self._current.aclose()


async def close_providers(instances: Iterable[Provider]) -> None:
    """``aclose`` each instance; one that fails to close is logged and does not stop the rest."""
    for provider in instances:
        try:
            await provider.aclose()
        except Exception:
            log.exception("provider instance %s failed to close", provider.name)


def _instantiate(name: str, spec: Spec, plugins: PluginCatalog, context: ProviderContext) -> Provider:
    plugin_name, config = spec
    plugin = plugins.providers[plugin_name]
    log.info("provider instance %s: %s %s", name, plugin_name, mask_config(plugin.config_schema, config))
    return plugin(name, config, context)


def _reporter_for(report: Reporter, name: str) -> Callable[[Sequence[ProviderReport]], None]:
    def report_for_instance(updates: Sequence[ProviderReport]) -> None:
        report(name, updates)

    return report_for_instance
