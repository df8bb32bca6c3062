"""Tidings: a self-hosted notification gateway.

This package's top level is what provider plugin authors need; everything else lives in
its modules (see ``gateway.plugin_api`` for the contract, with a worked example).
"""

from gateway.errors import (
    INVALID_RECIPIENT,
    OPTED_OUT,
    RECIPIENT_UNAVAILABLE,
    CredentialsRejectedError,
    DeliveryError,
    PermanentDeliveryError,
    TidingsError,
    TransientDeliveryError,
    WebhookVerificationError,
)
from gateway.plugin_api import (
    ChannelSpec,
    InboundReply,
    InboundRequest,
    InboundResponse,
    OptOut,
    OutboundMessage,
    Provider,
    ProviderContext,
    ProviderLimits,
    ProviderReport,
    ProviderTemplate,
    Sender,
    SendReceipt,
    StatusUpdate,
)

__version__ = "0.1.0"

__all__ = [
    "ChannelSpec",
    "CredentialsRejectedError",
    "DeliveryError",
    "INVALID_RECIPIENT",
    "InboundReply",
    "InboundRequest",
    "InboundResponse",
    "OPTED_OUT",
    "OptOut",
    "OutboundMessage",
    "PermanentDeliveryError",
    "Provider",
    "ProviderContext",
    "ProviderLimits",
    "ProviderReport",
    "ProviderTemplate",
    "RECIPIENT_UNAVAILABLE",
    "SendReceipt",
    "Sender",
    "StatusUpdate",
    "TidingsError",
    "TransientDeliveryError",
    "WebhookVerificationError",
    "__version__",
]
