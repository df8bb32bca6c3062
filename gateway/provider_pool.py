"""The provider instances a policy set names, built from their plugins and ready to send."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

import aiohttp

from gateway.clock import Clock
from gateway.plugin_api import InboundReply, Provider, ProviderContext, StatusUpdate
from gateway.plugins import PluginCatalog
from gateway.policies import SANDBOX, PolicySet
from gateway.secrets import mask_config

log = logging.getLogger(__name__)
Reporter = Callable[[str, Sequence[StatusUpdate | InboundReply]], None]


class ProviderPool:
    """Live provider instances by name, plus the sandbox that serves test keys."""

    def __init__(self, instances: Mapping[str, Provider]) -> None:
        self._instances = MappingProxyType(dict(instances))

    @classmethod
    def build(
        cls, policy: PolicySet, plugins: PluginCatalog, *, session: aiohttp.ClientSession, clock: Clock, report: Reporter
    ) -> ProviderPool:
        """Instantiate every provider instance in ``policy`` (and a default ``sandbox``)."""
        configs = dict(policy.provider_instances)
        instances: dict[str, Provider] = {}
        for name, instance in configs.items():
            plugin = plugins.providers[instance.plugin]
            context = ProviderContext(session=session, clock=clock, report=_reporter_for(report, name))
            instances[name] = plugin(name, instance.config, context)
            log.info("provider instance %s: %s %s", name, instance.plugin, mask_config(plugin.config_schema, instance.config))
        if SANDBOX not in instances and SANDBOX in plugins.providers:
            context = ProviderContext(session=session, clock=clock, report=_reporter_for(report, SANDBOX))
            instances[SANDBOX] = plugins.providers[SANDBOX](SANDBOX, {}, context)
        return cls(instances)

    def get(self, name: str) -> Provider | None:
        return self._instances.get(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._instances)

    def for_delivery(self, policy: PolicySet, tenant: str, channel: str, *, test: bool) -> Provider | None:
        """The instance that should carry a delivery: the sandbox for test keys, else the first in policy order."""
        if test:
            return self._instances.get(SANDBOX)
        for name in policy.providers_for(tenant, channel):
            provider = self._instances.get(name)
            if provider is not None:
                return provider
        return None

    async def aclose(self) -> None:
        for name, provider in self._instances.items():
            try:
                await provider.aclose()
            except Exception:
                log.exception("provider instance %s failed to close", name)


def _reporter_for(report: Reporter, name: str) -> Callable[[Sequence[StatusUpdate | InboundReply]], None]:
    def report_for_instance(updates: Sequence[StatusUpdate | InboundReply]) -> None:
        report(name, updates)

    return report_for_instance
