from __future__ import annotations

import gateway
from gateway.errors import ErrorDetail, error_body


def test_the_package_exports_exactly_what_plugin_authors_need() -> None:
    assert gateway.__all__ == sorted(gateway.__all__)
    assert set(gateway.__all__) == {
        "ChannelSpec", "CredentialsRejectedError", "DeliveryError", "INVALID_RECIPIENT", "InboundReply", "InboundRequest", "InboundResponse",
        "OPTED_OUT", "OptOut", "OutboundMessage", "PermanentDeliveryError", "Provider", "ProviderContext", "ProviderLimits", "ProviderReport",
        "ProviderTemplate", "RECIPIENT_UNAVAILABLE", "SendReceipt", "Sender", "StatusUpdate", "TidingsError", "TransientDeliveryError", "WebhookVerificationError",
        "__version__",
    }


def test_error_body_has_the_one_documented_shape() -> None:
    body = error_body("template_required", "use a template", [ErrorDetail("notification.template_id", "needed", "template_required")])
    assert body == {
        "error": {
            "code": "template_required",
            "message": "use a template",
            "details": [{"field": "notification.template_id", "message": "needed", "code": "template_required"}],
        }
    }
