"""The channel vocabulary: which channels exist, how recipients address them, what they allow.

Built-in channels are fixed; a plugin may add its own through ``Provider.new_channels`` and
the core treats it exactly like a built-in one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Final

from gateway.plugin_api import ChannelSpec

BUILTIN_CHANNELS: Final = (
    ChannelSpec("email", ("email",), subject=True, description="Email"),
    ChannelSpec("sms", ("phone",), description="SMS text message"),
    ChannelSpec("voice", ("phone",), description="Voice call reading the message"),
    ChannelSpec("whatsapp", ("phone",), template_required=True, description="WhatsApp message"),
    ChannelSpec("slack", ("slack_user_id", "slack_channel"), description="Slack message"),
    ChannelSpec("telegram", ("telegram_chat_id",), description="Telegram message"),
    ChannelSpec("push", ("device_token",), subject=True, description="Mobile push notification"),
    ChannelSpec("webhook", ("url",), description="Signed JSON POST to a URL"),
)

# Matched whole (``fullmatch``): ``$`` would also match before a trailing newline. Digits are
# ``[0-9]``: ``\d`` takes any Unicode digit (Arabic-Indic, Devanagari…), which no vendor dials.
_EMAIL = re.compile(r"[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+")
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
_URL = re.compile(r"https?://[^\s/?#]+\S*")
_FIELD_FORMATS: Final = {
    "email": (_EMAIL, "must be an email address like ada@example.com"),
    "phone": (_E164, "must be an E.164 phone number like +14155550100"),
    "url": (_URL, "must be an http:// or https:// URL"),
}
MAX_FIELD_LENGTH: Final = 512


class ChannelCatalog:
    """The channels this gateway knows: built-in plus those added by installed plugins."""

    def __init__(self, specs: Iterable[ChannelSpec]) -> None:
        by_name: dict[str, ChannelSpec] = {}
        for spec in specs:
            by_name.setdefault(spec.name, spec)
        self._specs = MappingProxyType(by_name)
        self.recipient_fields = frozenset(f for spec in by_name.values() for f in spec.recipient_fields)

    @classmethod
    def with_builtins(cls, extra: Iterable[ChannelSpec] = ()) -> ChannelCatalog:
        return cls([*BUILTIN_CHANNELS, *extra])

    @property
    def specs(self) -> Mapping[str, ChannelSpec]:
        return self._specs

    def get(self, name: str) -> ChannelSpec | None:
        return self._specs.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[ChannelSpec]:
        return iter(self._specs.values())


def address_for(spec: ChannelSpec, recipient: Mapping[str, str]) -> str | None:
    """The recipient's address on this channel: the first of its recipient fields present."""
    for field_name in spec.recipient_fields:
        value = recipient.get(field_name)
        if value:
            return value
    return None


_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
"""No address of any channel holds one; a NUL or a line break in one is a mistake or an injection."""


def check_recipient_field(name: str, value: str) -> str | None:
    """Why ``value`` is not a valid ``name`` field, or None when it is."""
    if not value.strip():
        return "must not be empty"
    if len(value) > MAX_FIELD_LENGTH:
        return f"must be at most {MAX_FIELD_LENGTH} characters"
    if _CONTROL.search(value):
        return "must not contain control characters (line breaks, NUL, ...)"
    rule = _FIELD_FORMATS.get(name)
    if rule is not None and not rule[0].fullmatch(value):
        return rule[1]
    return None
