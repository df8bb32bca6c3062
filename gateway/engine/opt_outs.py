"""Who asked to hear nothing more: the words that mean it, and the check every send makes.

An opt-out is per tenant, channel and address. It is recorded from a recipient's STOP reply
(or the vendor's own marking of a reply), from a vendor's opt-out signal that is not a reply
(:class:`~gateway.plugin_api.OptOut`: an unsubscribe, a blocked bot), from a send the vendor
refused with code ``opted_out``, and from the tenant's own system through the API. Only the
recipient lifts one: a START reply, or the vendor saying it consented again.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from gateway.plugin_api import InboundReply
from gateway.store import Store

OPT_OUT_WORDS: Final = frozenset({"STOP", "UNSUBSCRIBE", "STOPALL", "CANCEL", "END", "QUIT"})
OPT_IN_WORDS: Final = frozenset({"START", "UNSTOP", "YES"})
OPT_OUT: Final = "out"
OPT_IN: Final = "in"
SMS: Final = "sms"


def opt_change(reply: InboundReply) -> str | None:
    """``out`` for STOP and its synonyms (or the vendor marking the reply so), ``in`` for START, else None."""
    signal = reply.detail.get("opt_out")
    if isinstance(signal, bool):
        return OPT_OUT if signal else OPT_IN
    if reply.channel != SMS:
        return None
    word = reply.body.strip().upper()
    if word in OPT_OUT_WORDS:
        return OPT_OUT
    return OPT_IN if word in OPT_IN_WORDS else None


class OptOuts:
    """Which recipients refused a tenant's messages, checked on every send.

    Most tenants have no opt-out at all, so the set of tenants that have one is held in memory
    and a send of any other tenant reads nothing. The set only grows while the process runs: a
    tenant whose last opt-out was lifted pays one indexed lookup per send until a restart.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._tenants: set[str] = set()

    async def load(self) -> None:
        self._tenants = await self._store.tenants_with_opt_outs()

    def note(self, tenants: Iterable[str]) -> None:
        """Tenants whose opt-outs just changed (called after the change committed)."""
        self._tenants.update(tenants)

    async def refused(self, tenant: str, targets: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """Those (channel, address) pairs the tenant may not send to."""
        if tenant not in self._tenants:
            return set()
        return await self._store.opted_out(tenant, targets)
