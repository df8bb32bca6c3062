"""The contract a provider plugin implements.

A plugin is a :class:`Provider` subclass registered under the ``tidings.providers`` entry-point
group. The gateway builds one instance per provider instance named in the policy (``config``
already validated against ``config_schema`` and with secrets resolved), hands it plain value
objects, and does the timing, logging, retrying and bookkeeping itself. The plugin only talks
to its vendor. A worked example, a provider that posts to a chat service::

    from gateway import OutboundMessage, PermanentDeliveryError, Provider, SendReceipt
    from gateway import TransientDeliveryError

    class ChatProvider(Provider):
        channels = frozenset({"slack"})
        config_schema = {
            "type": "object",
            "required": ["token"],
            "properties": {
                "token": {"type": "string", "x-secret": True},
                "base_url": {"type": "string", "default": "https://chat.example.com"},
            },
            "additionalProperties": False,
        }
        limits = ProviderLimits(max_body_chars=4000)

        async def send(self, message: OutboundMessage) -> SendReceipt:
            url = self.config.get("base_url", "https://chat.example.com") + "/post"
            async with self.context.session.post(
                url, json={"to": message.to, "text": message.body},
                headers={"Authorization": f"Bearer {self.config['token']}"},
            ) as response:
                if response.status >= 500:
                    raise TransientDeliveryError(f"chat answered {response.status}")
                if response.status >= 400:
                    raise PermanentDeliveryError(f"chat refused: {response.status}")
                return SendReceipt(provider_message_id=(await response.json())["id"])

and in its ``pyproject.toml``::

    [project.entry-points."tidings.providers"]
    chat = "tidings_chat:ChatProvider"

Failure is always an exception: :class:`TransientDeliveryError` (retry, optionally after
``retry_after`` seconds) or :class:`PermanentDeliveryError` (never retry). Anything else a
plugin raises is treated as transient and logged as a plugin bug.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.clock import Clock
from gateway.redaction import mask_config, redact, secret_texts


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    """A channel: its name, which recipient fields can address it, and its template policy.

    ``recipient_fields`` are alternatives: any one present in the recipient is enough
    (slack takes ``slack_user_id`` or ``slack_channel``).
    """

    name: str
    recipient_fields: tuple[str, ...]
    template_required: bool = False
    subject: bool = False
    description: str = ""

    @property
    def raw_allowed(self) -> bool:
        return not self.template_required


@dataclass(frozen=True, slots=True)
class ProviderLimits:
    """What a provider can take and do; the core uses these to validate and to report."""

    max_body_chars: int | None = None
    rate_per_second: float | None = None
    receipts: bool = False
    replies: bool = False
    idempotency: bool = False


@dataclass(frozen=True, slots=True)
class ProviderTemplate:
    """A template stored at the vendor (WhatsApp): its name, language and ordered parameters."""

    name: str
    language: str
    parameters: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Sender:
    """Who a message comes from, as the tenant's policy sets it for the channel (``senders:``).

    ``address`` is whatever the channel uses: an email address, a phone number or alphanumeric
    sender id, a bot name. A plugin uses it in place of its configured default, if it can.
    """

    address: str
    name: str | None = None
    reply_to: str | None = None


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """One delivery attempt, rendered and addressed, as the plugin receives it."""

    delivery_id: str
    notification_id: str
    tenant: str
    channel: str
    to: str
    recipient: Mapping[str, str]
    body: str | None = None
    subject: str | None = None
    html: str | None = None
    template_id: str | None = None
    provider_template: ProviderTemplate | None = None
    attempt: int = 1
    metadata: Mapping[str, Any] = field(default_factory=dict)
    sender: Sender | None = None

    @property
    def idempotency_key(self) -> str:
        """Stable across attempts of one delivery: forward it where the vendor supports one."""
        return self.delivery_id


@dataclass(frozen=True, slots=True)
class SendReceipt:
    """The provider accepted the message; its id is how later receipts find the delivery."""

    provider_message_id: str
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """A provider's word on a message it accepted, in the Tidings vocabulary.

    ``delivery_id`` is the Tidings delivery id when the vendor echoes it back (a custom
    argument, a parameter of the callback URL, a client reference: whatever the plugin sent as
    :attr:`OutboundMessage.idempotency_key`). With it the receipt finds its delivery even when
    the send's own answer never arrived (a timeout after the vendor accepted), so the delivery
    is not sent again.
    """

    provider_message_id: str
    status: str
    occurred_at: float | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None
    delivery_id: str | None = None


@dataclass(frozen=True, slots=True)
class InboundReply:
    """A message a recipient sent back through a provider.

    ``in_reply_to`` is the provider message id of the message it answers, when the vendor
    says. SMS keywords (STOP, START…) are recognised by the gateway; a reply the vendor itself
    marks as an opt-out (a Telegram ``/stop``, Twilio's ``OptOutType``) says so in
    ``detail["opt_out"]`` (True: opted out, False: opted back in). A vendor's opt-out signal
    that is not a reply is an :class:`OptOut`.
    """

    sender: str
    body: str
    channel: str
    in_reply_to: str | None = None
    provider_message_id: str | None = None
    occurred_at: float | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class OptOut:
    """A recipient refused further messages on a channel (``opted_out=False``: consented again), by the vendor's word.

    For the signals that are not replies: an email unsubscribe or spam complaint, a user who
    blocked a bot, a WhatsApp user who stopped marketing messages. The gateway records it for
    the tenant whose message it was about (``about``: that message's provider message id, when
    the vendor names one), refuses sends to the address from then on, and emits
    ``recipient.opted_out`` (or ``recipient.opted_in``). ``reason`` says why, in a few words.

    A send the vendor refuses because the recipient opted out is a
    :class:`~gateway.errors.PermanentDeliveryError` with code ``opted_out``
    (:data:`~gateway.errors.OPTED_OUT`): the gateway records that opt-out too.
    """

    channel: str
    address: str
    opted_out: bool = True
    reason: str = ""
    about: str | None = None
    occurred_at: float | None = None


@dataclass(frozen=True, slots=True)
class InboundRequest:
    """An inbound provider callback as plain values: no framework objects reach plugins.

    ``headers`` is read without regard to case, as HTTP means it
    (``request.headers.get("x-hub-signature-256")`` finds ``X-Hub-Signature-256``).
    """

    method: str
    url: str
    headers: Mapping[str, str]
    query: Mapping[str, str]
    body: bytes
    remote: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "headers", CIMultiDictProxy(CIMultiDict(self.headers)))


@dataclass(frozen=True, slots=True)
class InboundResponse:
    """What to answer a vendor's verification handshake (a ``GET`` on the webhook URL)."""

    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain"
    headers: Mapping[str, str] = field(default_factory=dict)


ProviderReport = StatusUpdate | InboundReply | OptOut
"""What a plugin reads from a callback, or learns by itself: statuses, replies, opt-outs."""

ReportSink = Callable[[Sequence[ProviderReport]], None]


@dataclass(frozen=True, slots=True)
class ProviderContext:
    """What the gateway lends every provider instance.

    ``session`` is the gateway's shared HTTP client; ``report`` takes what the provider learns
    outside a webhook (statuses, replies and opt-outs from polling, or from a simulated
    provider such as the sandbox) and handles it exactly as if it had arrived by webhook.
    """

    session: aiohttp.ClientSession
    clock: Clock
    report: ReportSink


class Provider(ABC):
    """Base class of every provider plugin; subclass it and implement :meth:`send`."""

    channels: ClassVar[frozenset[str]] = frozenset()
    """Channels this plugin can deliver on; ``"*"`` means every channel (the sandbox)."""

    new_channels: ClassVar[tuple[ChannelSpec, ...]] = ()
    """Channels this plugin adds to the vocabulary (say ``ntfy``), beyond the built-in ones."""

    config_schema: ClassVar[Mapping[str, Any]] = {"type": "object"}
    """JSON Schema for the instance's ``config:`` block; mark secrets with ``"x-secret": true``."""

    limits: ClassVar[ProviderLimits] = ProviderLimits()

    simulated: ClassVar[bool] = False
    """Whether what this plugin "sends" reaches no one (the sandbox): a delivery it carries is shown as
    ``simulated: true``, and a live key routed to it is warned about."""

    callbacks_by_get: ClassVar[bool] = False
    """Whether the vendor may send callbacks as ``GET`` with query parameters (Vonage can): a
    ``GET`` that :meth:`handshake` does not answer is then received like a ``POST`` — stored,
    verified and processed — instead of refused with 405."""

    def __init__(self, name: str, config: Mapping[str, Any], context: ProviderContext) -> None:
        self.name = name
        self.config = dict(config)
        self.context = context

    @property
    def takes_callbacks(self) -> bool:
        """Whether this instance's webhook URL takes callbacks at all; if not, it answers 404 and stores nothing.

        By default: whether the plugin handles them (overrides :meth:`verify_webhook` or
        :meth:`handshake`). The sandbox, the log and an outbound-only plugin take none.
        """
        cls = type(self)
        return cls.verify_webhook is not Provider.verify_webhook or cls.handshake is not Provider.handshake

    def serves(self, channel: str) -> bool:
        return "*" in self.channels or channel in self.channels

    @abstractmethod
    async def send(self, message: OutboundMessage) -> SendReceipt:
        """Deliver one message to the vendor, or raise a ``DeliveryError``."""

    async def verify_webhook(self, request: InboundRequest) -> None:
        """Raise ``WebhookVerificationError`` unless the callback is authentic."""
        from gateway.errors import WebhookVerificationError

        raise WebhookVerificationError(f"{type(self).__name__} accepts no webhooks")

    async def parse_webhook(self, request: InboundRequest) -> Sequence[ProviderReport]:
        """Normalise a verified callback into status updates, replies and opt-outs."""
        return []

    async def answer_webhook(self, request: InboundRequest) -> InboundResponse | None:
        """What to answer a verified callback instead of the usual ``200 {"received": …}`` (Slack's
        ``url_verification`` challenge); None: the usual. Called after the callback is stored."""
        return None

    async def handshake(self, request: InboundRequest) -> InboundResponse | None:
        """Answer a vendor's ``GET`` on the webhook URL (subscription check); None: not supported (405)."""
        return None

    async def check_credentials(self) -> str | None:
        """Confirm the instance's credentials with a cheap authenticated call to the vendor.

        Returns a short description of what the vendor confirmed (the account, the sender or
        bot it knows), or None when the vendor offers no such call (the default). Raises
        ``CredentialsRejectedError`` when refused and ``TransientDeliveryError`` when the vendor
        cannot be reached. Never include a secret in what it returns. Used by
        ``tidings providers check``.
        """
        return None

    async def aclose(self) -> None:
        """Release anything the instance holds (connections, tasks)."""

    def redact(self, text: str) -> str:
        """``text`` with every secret of this instance's config masked.

        The gateway passes everything a plugin says through it (failure messages and details,
        the traceback of a plugin bug, a verification refusal) before logging, storing or
        answering it, so a credential a plugin puts in an error by mistake goes no further.
        Plugins may use it for their own log lines too.
        """
        return redact(text, secret_texts(self.config_schema, self.config))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} config={mask_config(self.config_schema, self.config)!r}>"

