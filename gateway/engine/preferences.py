"""Whether a contact gets a message on a channel: pure rules over its addresses and preferences.

Checked in this order, the first that holds is the reason the channel is skipped:

1. ``no_address``: the contact has no address for the channel's recipient fields;
2. ``channel_opted_out``: its preferences say ``channels: {<channel>: false}``;
3. ``category_opted_out``: the message has a category and its preferences say
   ``categories: {<category>: false}`` — unless the message is ``critical``, which reaches the
   contact whatever categories it turned off.

A channel's preference binds even a critical message: the contact said "never on this
channel", which is about the channel, not about what the message says. The legal opt-out (a
STOP reply recorded against the address) binds everything; it needs a read, so the intake
checks it after these (:mod:`gateway.engine.intake`).
"""

from __future__ import annotations

from typing import Final

from gateway.channels import address_for
from gateway.plugin_api import ChannelSpec
from gateway.store import ContactFields

CRITICAL: Final = "critical"
NO_ADDRESS: Final = "no_address"
CHANNEL_OPTED_OUT: Final = "channel_opted_out"
CATEGORY_OPTED_OUT: Final = "category_opted_out"
OPTED_OUT: Final = "opted_out"


def skip_reason(contact: ContactFields, spec: ChannelSpec, category: str | None, severity: str | None) -> str | None:
    """Why the contact does not get this message on ``spec``'s channel, or None when it does (legal opt-outs aside)."""
    if address_for(spec, contact.addresses) is None:
        return NO_ADDRESS
    if contact.channels.get(spec.name) is False:
        return CHANNEL_OPTED_OUT
    if category is not None and contact.categories.get(category) is False and severity != CRITICAL:
        return CATEGORY_OPTED_OUT
    return None
