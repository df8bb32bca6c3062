"""What is kept of a callback: its headers and target with no credential of the instance in clear."""

from __future__ import annotations

from typing import Any, ClassVar
from unittest.mock import Mock

from gateway.engine.inbound import kept_headers, kept_target, redactor
from gateway.plugin_api import OutboundMessage, Provider, ProviderContext, SendReceipt
from gateway.redaction import MASK

TOKEN = "vendor-token-0001"


class Vendor(Provider):
    channels = frozenset({"sms"})
    config_schema: ClassVar[dict[str, Any]] = {"type": "object", "properties": {"token": {"type": "string", "x-secret": True}, "from": {"type": "string"}}}

    async def send(self, message: OutboundMessage) -> SendReceipt:
        raise NotImplementedError


class OwnRedaction(Vendor):
    """A plugin that masks more than its config's secrets."""

    def redact(self, text: str) -> str:
        return super().redact(text).replace("account-42", "[account]")


def instance(kind: type[Vendor]) -> Vendor:
    return kind("vendor", {"token": TOKEN, "from": "ACME"}, Mock(spec=ProviderContext))


def test_a_callbacks_headers_and_target_are_kept_with_the_instances_secrets_masked() -> None:
    redact = redactor(instance(Vendor))
    headers = kept_headers([("X-Token", f"Bearer {TOKEN}"), ("X-Account", "account-42"), ("From", "ACME")], redact)
    assert headers == {"X-Token": f"Bearer {MASK}", "X-Account": "account-42", "From": "ACME"}, "a value that is no secret is kept"
    assert redact(kept_target(f"/api/v1/webhooks/vendor?sig={TOKEN}")) == f"/api/v1/webhooks/vendor?sig={MASK}"


def test_a_plugin_that_redacts_its_own_way_has_every_text_of_a_callback_through_it() -> None:
    redact = redactor(instance(OwnRedaction))
    headers = kept_headers([("X-Token", f"Bearer {TOKEN}"), ("X-Account", "account-42")], redact)
    assert headers == {"X-Token": f"Bearer {MASK}", "X-Account": "[account]"}
