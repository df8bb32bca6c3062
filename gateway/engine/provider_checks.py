"""``tidings providers check``: ask each vendor whether an instance's credentials work.

Each plugin decides how (``Provider.check_credentials``: a cheap authenticated call such as
Twilio's account lookup or Slack's ``auth.test``), or says it has no such call. Nothing is
sent. What is printed never includes a secret: a plugin's own error text is shown only for
the delivery errors it raises on purpose, whose wording the plugin controls.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import aiohttp

from gateway.clock import SystemClock
from gateway.engine.provider_pool import ProviderPool
from gateway.errors import CredentialsRejectedError, DeliveryError, TransientDeliveryError
from gateway.plugin_api import Provider
from gateway.plugins import PluginCatalog
from gateway.policy.view import PolicySet

log = logging.getLogger(__name__)

OK: Final = "ok"
NO_CHECK: Final = "no check"
REFUSED: Final = "refused"
UNREACHABLE: Final = "unreachable"
PLUGIN_ERROR: Final = "plugin error"


@dataclass(frozen=True, slots=True)
class CheckResult:
    instance: str
    verdict: str
    message: str

    @property
    def ok(self) -> bool:
        """Nothing wrong found: confirmed, or nothing the vendor lets us confirm."""
        return self.verdict in (OK, NO_CHECK)


async def check_instances(policy: PolicySet, plugins: PluginCatalog, names: Sequence[str], *, timeout: float) -> list[CheckResult]:
    """Check ``names`` side by side, each within ``timeout`` seconds."""
    async with aiohttp.ClientSession() as session:
        pool = ProviderPool.build(policy, plugins, session=session, clock=SystemClock(), report=lambda _name, _updates: None)
        try:
            return list(await asyncio.gather(*(check_one(pool.instances[name], timeout) for name in names)))
        finally:
            await pool.aclose()


async def check_one(provider: Provider, timeout: float) -> CheckResult:
    name = provider.name
    try:
        async with asyncio.timeout(timeout):
            confirmed = await provider.check_credentials()
    except CredentialsRejectedError as err:
        return CheckResult(name, REFUSED, err.message)
    except TransientDeliveryError as err:
        return CheckResult(name, UNREACHABLE, err.message)
    except DeliveryError as err:
        return CheckResult(name, REFUSED, err.message)
    except TimeoutError:
        return CheckResult(name, UNREACHABLE, f"no answer within {timeout:g}s")
    except Exception as err:  # noqa: BLE001 - a plugin bug: name it, never print its text (it may hold a secret)
        trace = provider.redact("".join(traceback.format_exception(err)))  # its text may hold a secret of the instance
        log.debug("credentials check of %s raised:\n%s", name, trace)
        return CheckResult(name, PLUGIN_ERROR, f"the {type(provider).__name__} plugin raised {type(err).__name__}")
    if confirmed is None:
        return CheckResult(name, NO_CHECK, f"{type(provider).__name__} has no credentials check; send a test message to confirm")
    return CheckResult(name, OK, confirmed)
