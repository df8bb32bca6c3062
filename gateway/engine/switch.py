"""Putting a validated policy set in service: provider instances, the set itself, dispatcher channels.

The policy watcher decides *when* a new set is ready; this decides what serving it takes, in
one step without an ``await`` inside, so no request or delivery ever sees half of it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from gateway.engine.dispatcher import Dispatcher
from gateway.engine.provider_pool import PoolHolder, ProviderPool
from gateway.errors import PolicyError, PolicyIssue
from gateway.policy.view import PolicyHolder, PolicySet

log = logging.getLogger(__name__)
PoolBuilder = Callable[[PolicySet, ProviderPool], ProviderPool]
"""Builds the pool for a new set, carrying over the current pool's unchanged instances."""


class PolicySwitch:
    """Puts a validated policy set in service: provider instances, the set, dispatcher channels."""

    def __init__(self, policies: PolicyHolder, pools: PoolHolder, build_pool: PoolBuilder, dispatcher: Dispatcher) -> None:
        self._policies = policies
        self._pools = pools
        self._build_pool = build_pool
        self._dispatcher = dispatcher

    def __call__(self, new: PolicySet) -> None:
        """Switch to ``new``; raise :class:`PolicyError` (nothing switched) if its providers cannot start."""
        try:
            pool = self._build_pool(new, self._pools.current)
        except Exception as err:
            log.exception("provider instances of policy version %s failed to start", new.version)
            issue = PolicyIssue("<policy>", "providers", f"a provider instance failed to start ({type(err).__name__}); see the log")
            raise PolicyError([issue]) from err
        # From here to the end there is no await: everything switches between two event-loop steps.
        self._pools.swap(pool, idle=self._dispatcher.wait_in_flight)
        self._policies.swap(new)
        self._dispatcher.ensure_channels(spec.name for spec in new.channels)

