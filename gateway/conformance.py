"""The provider conformance suite: the checks every plugin passes, and the kit a plugin brings.

Tidings runs these checks on every installed ``tidings.providers`` entry point; a third-party
plugin can run them in its own tests too. A plugin supplies a :class:`Kit`: how to start its
vendor fake (a small server on loopback that checks auth and request shape the way the vendor
does, and fails on cue), the config that points the plugin at it, a message to send, and — if
the plugin takes webhooks — how to build a genuine and a forged callback. Built-in plugins keep
their kit as ``KIT`` in ``tests/fakes/<plugin>.py``; a distribution registers its own under the
``tidings.conformance`` entry-point group::

    [project.entry-points."tidings.conformance"]
    ntfy = "tidings_ntfy.testing:KIT"

Each ``check_*`` coroutine raises :class:`ConformanceError` saying what is wrong.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Final, Literal, Protocol

import aiohttp
from jsonschema import Draft202012Validator

from gateway.channels import ChannelCatalog
from gateway.clock import SystemClock
from gateway.errors import PermanentDeliveryError, TransientDeliveryError, WebhookVerificationError
from gateway.plugin_api import InboundRequest, OutboundMessage, Provider, ProviderContext, ProviderLimits, SendReceipt
from gateway.redaction import mask_config

Fault = Literal["timeout", "5xx", "reject_recipient"]
ALL_FAULTS: Final[frozenset[Fault]] = frozenset({"timeout", "5xx", "reject_recipient"})
KIT_GROUP: Final = "tidings.conformance"
FAST_TIMEOUT: Final = 0.3
"""The ``timeout_seconds`` a kit's config should set, so the timeout check is quick."""


class ConformanceError(AssertionError):
    """A plugin that does not keep the provider contract."""


class VendorFake(Protocol):
    """A vendor on loopback. ``fail_next`` makes the next send request fail the given way.

    ``timeout``: hold the request without answering (until the client gives up or the fake
    stops); ``5xx``: answer the vendor's server error; ``reject_recipient``: refuse the
    recipient the way the vendor does (invalid number, unknown address, dead device token).
    """

    url: str

    def fail_next(self, fault: Fault) -> None: ...


@dataclass(frozen=True)
class Kit:
    """One plugin's conformance kit.

    ``message`` is sent with ``config(fake)``; it may be built from the running fake (the
    webhook plugin's recipient is the fake's url). ``faults`` lists what the fake can make
    happen (a plugin that talks to no vendor, like the sandbox, has fewer). ``secrets`` are the
    secret values in that config, which must never show in ``repr``. ``genuine_webhook`` and
    ``forged_webhook`` build a callback from the running fake and the current unix time; they
    are None when the plugin accepts no webhooks.
    """

    def message_for(self, fake: VendorFake) -> OutboundMessage:
        return self.message if isinstance(self.message, OutboundMessage) else self.message(fake)

    plugin: type[Provider]
    serve: Callable[[], AbstractAsyncContextManager[VendorFake]]
    config: Callable[[VendorFake], dict[str, Any]]
    message: OutboundMessage | Callable[[VendorFake], OutboundMessage]
    secrets: tuple[str, ...] = ()
    faults: frozenset[Fault] = ALL_FAULTS
    empty_config_ok: bool = False
    genuine_webhook: Callable[[VendorFake, float], InboundRequest] | None = None
    forged_webhook: Callable[[VendorFake, float], InboundRequest] | None = None


def outbound(channel: str, to: str, recipient: Mapping[str, str], **content: Any) -> OutboundMessage:
    """A message as the dispatcher hands it to a plugin (body defaults to a passcode text)."""
    content.setdefault("body", "Your code is 123456")
    return OutboundMessage(
        delivery_id="dlv_01JCONFORMANCE0000000000000", notification_id="ntf_01JCONFORMANCE0000000000000",
        tenant="acme", channel=channel, to=to, recipient=dict(recipient), **content,
    )


def installed_kits() -> dict[str, Kit]:
    """Kits registered by installed distributions under ``tidings.conformance``."""
    found: dict[str, Kit] = {}
    for point in entry_points(group=KIT_GROUP):
        kit = point.load()
        if isinstance(kit, Kit):
            found[point.name] = kit
    return found


def _expect(condition: bool, problem: str) -> None:
    if not condition:
        raise ConformanceError(problem)


def check_declarations(kit: Kit, channels: ChannelCatalog, config: Mapping[str, Any]) -> None:
    """Channels known (built in or added by the plugin), limits declared, config schema valid and strict."""
    plugin = kit.plugin
    _expect(bool(plugin.channels), "declares no channels")
    unknown = {name for name in plugin.channels if name != "*" and channels.get(name) is None}
    _expect(not unknown, f"declares channels nobody defines: {sorted(unknown)}")
    _expect(isinstance(plugin.limits, ProviderLimits), "limits is not a ProviderLimits")
    Draft202012Validator.check_schema(dict(plugin.config_schema))
    validator = Draft202012Validator(dict(plugin.config_schema))
    errors = list(validator.iter_errors(dict(config)))
    _expect(not errors, f"the kit's own config does not validate: {[e.message for e in errors]}")
    if not kit.empty_config_ok:
        _expect(not validator.is_valid({}), "config_schema accepts an empty config: mark what the plugin needs as required")
    _expect(plugin.config_schema.get("additionalProperties") is False, "config_schema allows unknown keys (typos would pass)")


def check_secrets_masked(kit: Kit, provider: Provider) -> None:
    """No secret value in the instance's ``repr`` or its masked config."""
    shown = repr(provider) + repr(mask_config(kit.plugin.config_schema, provider.config))
    leaked = [secret for secret in kit.secrets if secret in shown]
    _expect(not leaked, "secret config values show in repr(): mark them \"x-secret\": true in config_schema")


async def check_send(kit: Kit, fake: VendorFake, provider: Provider) -> SendReceipt:
    receipt = await provider.send(kit.message_for(fake))
    _expect(isinstance(receipt, SendReceipt) and bool(receipt.provider_message_id), "a successful send gave no provider message id")
    return receipt


async def check_fault(kit: Kit, fake: VendorFake, provider: Provider, fault: Fault) -> None:
    """A timeout and a 5xx are transient; a rejected recipient is permanent."""
    fake.fail_next(fault)
    expected = PermanentDeliveryError if fault == "reject_recipient" else TransientDeliveryError
    try:
        await provider.send(kit.message_for(fake))
    except expected:
        return
    except Exception as err:  # noqa: BLE001 - reported as the conformance failure it is
        raise ConformanceError(f"{fault}: raised {type(err).__name__}: {err}, not {expected.__name__}") from err
    raise ConformanceError(f"{fault}: the send succeeded, expected {expected.__name__}")


async def check_webhooks(kit: Kit, fake: VendorFake, provider: Provider) -> None:
    """A genuine callback verifies; a forged one is refused with WebhookVerificationError."""
    if kit.genuine_webhook is None or kit.forged_webhook is None:
        takes_webhooks = type(provider).verify_webhook is not Provider.verify_webhook
        _expect(not takes_webhooks, "the plugin verifies webhooks but its kit has no genuine and forged callback to check")
        return
    now = time.time()
    await provider.verify_webhook(kit.genuine_webhook(fake, now))
    try:
        await provider.verify_webhook(kit.forged_webhook(fake, now))
    except WebhookVerificationError:
        return
    raise ConformanceError("a forged webhook passed verification")


def context(session: aiohttp.ClientSession) -> ProviderContext:
    return ProviderContext(session=session, clock=SystemClock(), report=lambda _updates: None)

