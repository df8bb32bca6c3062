"""The policy set in service: an immutable, validated :class:`PolicySet` with the lookups requests and
deliveries need, and :class:`PolicyHolder`, which swaps whole sets so a request keeps the one it began with.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final
from zoneinfo import ZoneInfo

from gateway.channels import ChannelCatalog
from gateway.errors import PolicyError
from gateway.lifecycle import RetrySchedule
from gateway.plugin_api import ProviderLimits, Sender
from gateway.policy.durations import parse_duration
from gateway.policy.models import (
    DEFAULT_RETRY_SCHEDULE,
    SANDBOX,
    ApiKeyPolicy,
    CircuitBreakerPolicy,
    OperatorKeyPolicy,
    PolicyDocument,
    ProviderInstancePolicy,
    RetrySchedulePolicy,
    TenantDefaults,
    TenantPolicy,
)
from gateway.policy.templates import CompiledTemplate

_NO_DEFAULTS: Final = TenantDefaults()


_DEFAULT_BREAKER: Final = CircuitBreakerPolicy()


@functools.lru_cache(maxsize=256)
def _breaker_policy(failures: int, window: str, cooldown: str) -> BreakerPolicy:
    """Parsed once per distinct setting: every send asks for its instance's policy."""
    return BreakerPolicy(failures, parse_duration(window), parse_duration(cooldown))


@functools.lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """When a breaker opens and how long it stays open."""

    failures: int = 5
    """Transient failures within ``window`` that open the circuit."""
    window: float = 60.0
    """Seconds over which failures are counted; older ones no longer count."""
    cooldown: float = 30.0
    """Seconds the circuit stays open before one probe is let through."""

    def __post_init__(self) -> None:
        if self.failures < 1:
            raise ValueError(f"breaker failures must be at least 1, not {self.failures}")
        if self.window <= 0 or self.cooldown < 0:
            raise ValueError(f"breaker window must be positive and cooldown not negative ({self.window}, {self.cooldown})")


def retry_schedule_of(policy: RetrySchedulePolicy) -> RetrySchedule:
    """A schedule of N delays: N retries, or more when ``max_attempts`` asks, the last delay repeating."""
    delays = tuple(parse_duration(delay) for delay in policy.delays)
    return RetrySchedule(policy.max_attempts or len(delays) + 1, delays)


def retention_seconds(retention: str | int) -> float | None:
    """A ``retention`` from policy in seconds; None when it keeps for ever (``0``, ``0s``, ``0d``…)."""
    seconds = parse_duration(retention) if isinstance(retention, str) else float(retention)
    return seconds or None


@dataclass(frozen=True)
class KeyEntry:
    tenant: str
    key: ApiKeyPolicy


@dataclass(frozen=True)
class OperatorEntry:
    """An operator's dashboard key, with the name policy gives it."""

    name: str
    key: OperatorKeyPolicy


@dataclass(frozen=True)
class PolicySet:
    """An immutable, validated policy set and the indexes requests need from it."""

    document: PolicyDocument
    version: str
    loaded_at: float
    files: tuple[str, ...]
    channels: ChannelCatalog
    keys_by_prefix: Mapping[str, tuple[KeyEntry, ...]]
    templates: Mapping[tuple[str | None, str], CompiledTemplate]
    provider_instances: Mapping[str, ProviderInstancePolicy] = field(default_factory=dict)
    instance_limits: Mapping[str, ProviderLimits] = field(default_factory=dict)
    """What each instance's plugin declares it can take (``ProviderLimits``), by instance name."""
    simulated_instances: frozenset[str] = frozenset({SANDBOX})
    """Instances whose plugin reaches no one (``Provider.simulated``: the sandbox), the default ``sandbox`` included."""
    operators_by_prefix: Mapping[str, tuple[OperatorEntry, ...]] = field(default_factory=dict)
    """Operators' dashboard keys by lookup prefix (``operators``), apart from tenants' API keys: they never open the API."""

    def tenant(self, name: str) -> TenantPolicy | None:
        return self.document.tenants.get(name)

    @property
    def suspended_tenants(self) -> frozenset[str]:
        """Tenants whose policy says ``status: suspended``: their keys are refused and their deliveries held."""
        return frozenset(name for name, tenant in self.document.tenants.items() if tenant.status == "suspended")

    def template(self, tenant: str, template_id: str) -> CompiledTemplate | None:
        """The tenant's own template of that id, else the shared one."""
        return self.templates.get((tenant, template_id)) or self.templates.get((None, template_id))

    def instance_rate(self, name: str) -> str | None:
        instance = self.provider_instances.get(name)
        return instance.rate if instance else None

    def breaker_policy(self, name: str) -> BreakerPolicy:
        instance = self.provider_instances.get(name)
        found = instance.circuit_breaker if instance else _DEFAULT_BREAKER
        return _breaker_policy(found.failures, found.window, found.cooldown)

    def channel_throughput(self, channel: str) -> str | None:
        """The shared throughput limit of ``channel`` (one limit for all tenants' traffic on it)."""
        route = self.document.channels.get(channel)
        return route.throughput if route else None

    def tenant_timezone(self, tenant: str) -> ZoneInfo:
        """The tenant's time zone (``timezone``, validated at load), for its daily digests; UTC for a tenant not in policy."""
        tenant_policy = self.document.tenants.get(tenant)
        return _zone(tenant_policy.timezone if tenant_policy else "UTC")

    def tenant_defaults(self, tenant: str) -> TenantDefaults:
        tenant_policy = self.document.tenants.get(tenant)
        return tenant_policy.defaults if tenant_policy else _NO_DEFAULTS

    def sender(self, tenant: str, channel: str) -> Sender | None:
        """The tenant's sender identity on ``channel``, if its policy sets one."""
        tenant_policy = self.document.tenants.get(tenant)
        found = tenant_policy.senders.get(channel) if tenant_policy else None
        return Sender(found.from_, found.name, found.reply_to) if found else None

    def retry_schedule(self, tenant: str, channel: str) -> RetrySchedule | None:
        """The schedule for a tenant's deliveries on ``channel``; None means the built-in backoff.

        The tenant's own route for the channel wins, then the tenant's default, then the shared
        route for the channel, then a policy schedule named ``default``.
        """
        tenant_policy = self.document.tenants.get(tenant)
        tenant_route = tenant_policy.channels.get(channel) if tenant_policy else None
        shared_route = self.document.channels.get(channel)
        candidates = (
            tenant_route.retry_schedule if tenant_route else None,
            tenant_policy.defaults.retry_schedule if tenant_policy else None,
            shared_route.retry_schedule if shared_route else None,
            DEFAULT_RETRY_SCHEDULE,
        )
        for name in candidates:
            if name is not None and (found := self.document.retry_schedules.get(name)) is not None:
                return retry_schedule_of(found)
        return None

    def providers_for(self, tenant: str, channel: str) -> tuple[str, ...]:
        """Provider instances serving ``channel`` for ``tenant``, in failover order."""
        tenant_policy = self.document.tenants.get(tenant)
        route = tenant_policy.channels.get(channel) if tenant_policy else None
        route = route or self.document.channels.get(channel)
        return tuple(route.providers) if route else ()

    def simulated_live_routes(self) -> list[str]:
        """Where a live key's sends would be simulated: one line per tenant with a live key and channel routed to a sandbox.

        The sandbox never reaches anyone, yet reports ``delivered``; an operator who gave a tenant a
        live key (or kept the demo's ``channels:`` routing) should hear of it before a customer does.
        A sandbox behind a real instance is named too: failover would simulate what that one could not send.
        """
        found = []
        for tenant, policy in sorted(self.document.tenants.items()):
            if not any(key.mode == "live" for key in policy.api_keys):
                continue
            for channel in sorted(set(self.document.channels) | set(policy.channels)):
                route = self.providers_for(tenant, channel)
                sandboxes = [name for name in route if name in self.simulated_instances]
                if not sandboxes:
                    continue
                how = "every send" if len(sandboxes) == len(route) else "sends that fail over to " + ", ".join(sandboxes)
                found.append(
                    f"tenant {tenant!r}, channel {channel!r}: live traffic goes through the sandbox ({how}, via {' -> '.join(route)}); "
                    "nothing reaches the recipient, yet it reports delivered"
                )
        return found

    def tenants_served_by(self, instance: str) -> tuple[str, ...]:
        """The tenants whose deliveries ``instance`` carries: its owner, or those a route sends to it (shared)."""
        found = self.provider_instances.get(instance)
        if found is not None and found.tenant is not None:
            return (found.tenant,)
        channels = set(self.document.channels).union(*(policy.channels for policy in self.document.tenants.values()))
        return tuple(
            tenant for tenant in self.document.tenants if any(instance in self.providers_for(tenant, channel) for channel in channels)
        )

    @property
    def retentions(self) -> dict[str, float | None]:
        """How long each tenant in policy keeps its notifications, in seconds; None: for ever (``retention: 0``)."""
        return {name: retention_seconds(tenant.retention) for name, tenant in self.document.tenants.items()}

    def max_body_chars(self, tenant: str, channel: str) -> int | None:
        """The longest body any instance serving ``channel`` for ``tenant`` takes; None: no limit (or no instance)."""
        limits = [self.instance_limits.get(name, ProviderLimits()).max_body_chars for name in self.providers_for(tenant, channel)]
        if not limits or None in limits:
            return None
        return max(limit for limit in limits if limit is not None)


class PolicyHolder:
    """The policy set currently served; replaced whole, never edited in place."""

    def __init__(self, initial: PolicySet) -> None:
        self._current = initial
        self.last_error: PolicyError | None = None
        self.last_error_at: float | None = None
        self.last_reload_at: float = initial.loaded_at

    @property
    def current(self) -> PolicySet:
        return self._current

    def swap(self, new: PolicySet) -> None:
        self._current = new
        self.clear_error()
        self.last_reload_at = new.loaded_at

    def reject(self, error: PolicyError) -> None:
        """Keep serving the current set, and record why the files on disk were not taken."""
        self.last_error = error
        self.last_error_at = time.time()

    def clear_error(self) -> None:
        """The files on disk are the set being served again: no rejection is pending."""
        self.last_error = None
        self.last_error_at = None
