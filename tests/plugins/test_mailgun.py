"""The mailgun plugin against a fake Mailgun on loopback, and through the real HTTP API."""

from __future__ import annotations

import hashlib
import hmac
import json
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import LIVE_KEY, Api, FakeClock, key_entry, serve
from fakes.mailgun import API_KEY, DOMAIN, RECIPIENT, SIGNING_KEY, FakeMailgun, event

from gateway import (
    CredentialsRejectedError,
    InboundRequest,
    OptOut,
    OutboundMessage,
    PermanentDeliveryError,
    ProviderContext,
    Sender,
    StatusUpdate,
    TransientDeliveryError,
    WebhookVerificationError,
)
from gateway.http.appkeys import INBOUND, OUTCOMES, STORE
from plugins.mailgun import ERRORS, MailgunProvider, _SeenTokens, parse_event

NOW = 1_800_000_000.0


@pytest.fixture
async def mailgun() -> AsyncIterator[FakeMailgun]:
    async with FakeMailgun().serving() as fake:
        yield fake


def make_provider(session: aiohttp.ClientSession, fake: FakeMailgun, clock: FakeClock | None = None, **config: Any) -> MailgunProvider:
    settings = {"api_key": API_KEY, "domain": DOMAIN, "from": "robot@acme.example", "base_url": fake.url, "webhook_signing_key": SIGNING_KEY} | config
    context = ProviderContext(session=session, clock=clock or FakeClock(NOW), report=lambda _updates: None)
    return MailgunProvider("mail", {k: v for k, v in settings.items() if v is not None}, context)


def message(**overrides: Any) -> OutboundMessage:
    fields: dict[str, Any] = {
        "delivery_id": "dlv_01JMAILGUN0000000000000001", "notification_id": "ntf_01JMAILGUN0000000000000001", "tenant": "acme",
        "channel": "email", "to": RECIPIENT, "recipient": {"email": RECIPIENT}, "subject": "Order 1001 shipped",
        "body": "It is on its way.", "html": "<p>It is on its way.</p>",
        "sender": Sender("no-reply@acme.example", "ACME Støtte", "help@acme.example"),
    }
    return OutboundMessage(**(fields | overrides))


# -- what Mailgun receives ----------------------------------------------------------------------


async def test_a_send_is_a_multipart_form_with_basic_auth_and_our_delivery_id(session: aiohttp.ClientSession, mailgun: FakeMailgun) -> None:
    receipt = await make_provider(session, mailgun).send(message())
    [received] = mailgun.requests
    assert received.authorized and received.domain == DOMAIN and received.status == 200
    assert received.content_type == "multipart/form-data"
    assert received.get("from") == "=?utf-8?q?ACME_St=C3=B8tte?= <no-reply@acme.example>"
    assert (received.get("to"), received.get("subject")) == (RECIPIENT, "Order 1001 shipped")
    assert (received.get("text"), received.get("html")) == ("It is on its way.", "<p>It is on its way.</p>")
    assert received.get("h:Reply-To") == "help@acme.example"
    assert received.get("v:tidings-delivery-id") == "dlv_01JMAILGUN0000000000000001"
    assert receipt.provider_message_id == received.message_id and not receipt.provider_message_id.startswith("<")


async def test_without_a_policy_sender_the_instance_default_is_used(session: aiohttp.ClientSession, mailgun: FakeMailgun) -> None:
    provider = make_provider(session, mailgun, from_name="ACME", reply_to="desk@acme.example")
    await provider.send(message(sender=None, html=None))
    await provider.send(message(sender=Sender("shop@acme.example")))
    first, second = mailgun.requests
    assert (first.get("from"), first.get("h:Reply-To")) == ("ACME <robot@acme.example>", "desk@acme.example")
    assert "html" not in first.names()
    assert second.get("from") == "shop@acme.example" and "h:Reply-To" not in second.names()


def test_the_region_picks_the_api_host_and_base_url_overrides_it(session: aiohttp.ClientSession) -> None:
    def host(**config: Any) -> str:
        context = ProviderContext(session=session, clock=FakeClock(NOW), report=lambda _u: None)
        return MailgunProvider("mail", {"api_key": API_KEY, "domain": DOMAIN, "from": "robot@acme.example"} | config, context).base_url

    assert host() == "https://api.mailgun.net"
    assert host(region="eu") == "https://api.eu.mailgun.net"
    assert host(region="eu", base_url="http://127.0.0.1:9/") == "http://127.0.0.1:9"


# -- what Mailgun answers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "headers", "error", "code", "retry_after"),
    [
        (400, {"message": "'to' parameter is not a valid address. please check documentation"}, {}, PermanentDeliveryError, "invalid_recipient", None),
        (400, {"message": "'o:deliverytime' parameter is not a valid date"}, {}, PermanentDeliveryError, "400", None),
        (402, {"message": "Request failed"}, {}, PermanentDeliveryError, "402", None),
        (403, {"message": "Domain mg.acme.example is disabled"}, {}, CredentialsRejectedError, "403", None),
        (413, {"message": "Message size exceeds the limit"}, {}, PermanentDeliveryError, "message_too_large", None),
        (429, {"message": "Too many requests"}, {"Retry-After": "30"}, TransientDeliveryError, "rate_limited", 30.0),
        (500, "Internal Server Error", {}, TransientDeliveryError, "500", None),
        (503, {"message": "Service Unavailable"}, {"Retry-After": "120"}, TransientDeliveryError, "503", 120.0),
    ],
)
async def test_each_answer_is_classified_by_the_error_table(
    session: aiohttp.ClientSession, mailgun: FakeMailgun, status: int, body: Any, headers: dict[str, str],
    error: type[Exception], code: str, retry_after: float | None,
) -> None:
    mailgun.answer_next(status, body, headers)
    with pytest.raises(error) as caught:
        await make_provider(session, mailgun).send(message())
    assert type(caught.value) is error and caught.value.code == code  # type: ignore[attr-defined]
    assert getattr(caught.value, "retry_after", None) == retry_after
    assert caught.value.detail["http_status"] == status  # type: ignore[attr-defined]


async def test_a_wrong_key_and_an_unknown_domain_are_credential_failures_that_never_show_the_key(
    session: aiohttp.ClientSession, mailgun: FakeMailgun
) -> None:
    with pytest.raises(CredentialsRejectedError) as wrong_key:
        await make_provider(session, mailgun, api_key="key-not-the-right-one").send(message())
    with pytest.raises(CredentialsRejectedError) as unknown_domain:
        await make_provider(session, mailgun, domain="mg.nobody.example").send(message())
    assert [r.status for r in mailgun.requests] == [401, 404]
    assert "api_key" in str(wrong_key.value) and "domain" in str(unknown_domain.value)
    assert not any(key in str(err.value) for err in (wrong_key, unknown_domain) for key in (API_KEY, "key-not-the-right-one"))


def test_every_row_of_the_error_table_says_what_it_means() -> None:
    assert all(row.meaning for row in ERRORS.values())
    assert {status for status, row in ERRORS.items() if isinstance(status, int) and row.transient} == {429, 500, 502, 503, 504}


# -- webhook signatures ---------------------------------------------------------------------------


def reference_signature(key: str, timestamp: str, token: str) -> str:
    """Mailgun's recipe, step by step: concatenate timestamp and token, HMAC-SHA256 with the signing key, hex digest."""
    return hmac.new(key.encode(), msg=(timestamp + token).encode(), digestmod=hashlib.sha256).hexdigest()


def callback(body: bytes, content_type: str = "application/json") -> InboundRequest:
    return InboundRequest(method="POST", url="https://tidings.example/api/v1/webhooks/mail", headers={"Content-Type": content_type}, query={}, body=body)


def signed(
    at: float = NOW, token: str = "a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0", key: str = SIGNING_KEY, block: dict[str, str] | None = None
) -> bytes:
    timestamp = str(int(at))
    signature = {"timestamp": timestamp, "token": token, "signature": reference_signature(key, timestamp, token)} | (block or {})
    return json.dumps({"signature": signature, "event-data": event("delivered", "m1@" + DOMAIN)}).encode()


async def test_a_signature_made_by_the_reference_recipe_verifies_and_ours_matches_it(session: aiohttp.ClientSession, mailgun: FakeMailgun) -> None:
    await make_provider(session, mailgun).verify_webhook(callback(signed()))
    body = mailgun.webhook(event("delivered", "m1@" + DOMAIN), at=NOW)  # signed by the plugin's own `sign`
    block = json.loads(body)["signature"]
    assert block["signature"] == reference_signature(SIGNING_KEY, block["timestamp"], block["token"])


@pytest.mark.parametrize(
    ("how", "body", "content_type"),
    [
        ("signed with another key", signed(key="another-accounts-signing-key"), "application/json"),
        ("stale", signed(at=NOW - 301), "application/json"),
        ("from the future", signed(at=NOW + 301), "application/json"),
        ("timestamp changed after signing", signed().replace(str(int(NOW)).encode(), str(int(NOW) + 1).encode(), 1), "application/json"),
        ("no signature block", json.dumps({"event-data": event("delivered", "m1")}).encode(), "application/json"),
        ("an empty signature", signed(block={"signature": ""}), "application/json"),
        ("legacy form-encoded", b"token=abc&timestamp=1800000000&signature=00&event=delivered", "application/x-www-form-urlencoded"),
    ],
)
async def test_a_forged_stale_or_malformed_webhook_is_refused(
    session: aiohttp.ClientSession, mailgun: FakeMailgun, how: str, body: bytes, content_type: str
) -> None:
    with pytest.raises(WebhookVerificationError):
        await make_provider(session, mailgun).verify_webhook(callback(body, content_type))


async def test_a_token_is_accepted_once_even_in_a_body_a_proxy_re_serialised(session: aiohttp.ClientSession, mailgun: FakeMailgun) -> None:
    """The signature covers timestamp and token only: re-serialising the body cannot break it, replaying it can."""
    provider = make_provider(session, mailgun)
    body = signed()
    await provider.verify_webhook(callback(json.dumps(json.loads(body), indent=2).encode()))
    with pytest.raises(WebhookVerificationError, match="already used"):
        await provider.verify_webhook(callback(body))
    await provider.verify_webhook(callback(signed(token="another-token-from-mailgun-0000000000000000000000000")))


async def test_a_forged_signature_does_not_use_up_the_token(session: aiohttp.ClientSession, mailgun: FakeMailgun) -> None:
    provider = make_provider(session, mailgun)
    with pytest.raises(WebhookVerificationError):
        await provider.verify_webhook(callback(signed(key="forger")))
    await provider.verify_webhook(callback(signed()))


async def test_a_subaccount_event_verifies_by_its_parent_signature(session: aiohttp.ClientSession, mailgun: FakeMailgun) -> None:
    timestamp, token = str(int(NOW)), "subaccount-token-0000000000000000000000000000000000"
    body = signed(token=token, key="the-subaccounts-own-key", block={"parent-signature": reference_signature(SIGNING_KEY, timestamp, token)})
    await make_provider(session, mailgun).verify_webhook(callback(body))


async def test_without_a_signing_key_every_webhook_is_refused(session: aiohttp.ClientSession, mailgun: FakeMailgun) -> None:
    with pytest.raises(WebhookVerificationError, match="webhook_signing_key"):
        await make_provider(session, mailgun, webhook_signing_key=None).verify_webhook(callback(signed()))


def test_remembered_tokens_are_forgotten_by_age_and_bounded_in_number() -> None:
    seen = _SeenTokens(max_age=600, capacity=3)
    assert all(seen.accept(token, NOW) for token in ("a", "b", "c"))
    assert not seen.accept("a", NOW + 599)
    assert seen.accept("d", NOW + 599) and len(seen) == 3  # the oldest made room
    assert seen.accept("a", NOW + 599)
    assert seen.accept("e", NOW + 1300) and len(seen) == 1


# -- receipts and opt-outs through the real API ----------------------------------------------------


@pytest.fixture
async def api(aiohttp_client: Any, tmp_path: Path, clock: FakeClock, mailgun: FakeMailgun) -> Api:
    policy_dir = tmp_path / "policies"
    (policy_dir / "secrets").mkdir(parents=True)
    (policy_dir / "secrets" / "mailgun-key").write_text(API_KEY)
    (policy_dir / "secrets" / "mailgun-signing-key").write_text(SIGNING_KEY)
    (policy_dir / "policy.yaml").write_text(textwrap.dedent(f"""
        tenants:
          acme:
            api_keys: [{key_entry(LIVE_KEY)}]
            senders:
              email: {{from: no-reply@acme.example, name: ACME, reply_to: help@acme.example}}
            channels:
              email: {{providers: [acme_mail]}}
        providers:
          acme_mail:
            plugin: mailgun
            tenant: acme
            config:
              api_key: {{$file: secrets/mailgun-key}}
              domain: {DOMAIN}
              from: robot@acme.example
              base_url: "{mailgun.url}"
              webhook_signing_key: {{$file: secrets/mailgun-signing-key}}
        """))
    return await serve(aiohttp_client, policy_dir, {"mailgun": MailgunProvider}, clock)


EMAIL = {"channels": ["email"], "subject": "Order 1001 shipped", "body": "It is on its way.", "html": "<p>It is on its way.</p>"}


async def sent_email(api: Api) -> dict[str, Any]:
    status, accepted = await api.send({"recipient": {"email": RECIPIENT}, "notification": EMAIL})
    assert status == 202, accepted
    return await api.wait_for(accepted["notification_id"], lambda n: n["status"] == "sent")


async def post_webhook(api: Api, body: bytes) -> int:
    response = await api.client.post("/api/v1/webhooks/acme_mail", data=body, headers={"Content-Type": "application/json"})
    await api.app[INBOUND].drain()
    await api.app[OUTCOMES].drain()
    return response.status


async def test_a_send_through_the_api_reaches_mailgun_with_the_tenants_sender(api: Api, mailgun: FakeMailgun) -> None:
    found = await sent_email(api)
    [delivery] = found["deliveries"]
    [received] = mailgun.accepted
    assert (received.get("from"), received.get("h:Reply-To")) == ("ACME <no-reply@acme.example>", "help@acme.example")
    assert (received.get("to"), received.get("subject"), received.get("text")) == (RECIPIENT, "Order 1001 shipped", "It is on its way.")
    assert received.get("v:tidings-delivery-id") == delivery["delivery_id"]
    assert delivery["provider_message_id"] == received.message_id


@pytest.mark.parametrize(
    ("kind", "extra", "status"),
    [
        ("accepted", {}, "sent"),
        ("delivered", {}, "delivered"),
        ("failed", {"severity": "temporary", "reason": "generic"}, "sent"),
        ("failed", {"severity": "permanent", "reason": "bounce"}, "bounced"),
        ("failed", {"severity": "permanent", "reason": "suppress-bounce"}, "bounced"),
        ("failed", {"severity": "permanent", "reason": "old"}, "failed"),
        ("opened", {}, "opened"),
        ("clicked", {}, "clicked"),
    ],
)
async def test_each_mailgun_event_moves_the_delivery_to_its_tidings_status(
    api: Api, mailgun: FakeMailgun, clock: FakeClock, kind: str, extra: dict[str, Any], status: str
) -> None:
    found = await sent_email(api)
    [delivery] = found["deliveries"]
    data = event(kind, delivery["provider_message_id"], variables={"tidings-delivery-id": delivery["delivery_id"]}, **extra)
    assert await post_webhook(api, mailgun.webhook(data, at=clock.now())) == 200
    after = (await api.notification(found["notification_id"]))["deliveries"][0]
    assert after["status"] == status
    if status in ("bounced", "failed"):
        assert after["last_error"]


@pytest.mark.parametrize(("kind", "extra"), [("unsubscribed", {}), ("complained", {}), ("failed", {"reason": "suppress-unsubscribe"})])
async def test_an_unsubscribe_or_complaint_opts_the_recipient_out(
    api: Api, mailgun: FakeMailgun, clock: FakeClock, kind: str, extra: dict[str, Any]
) -> None:
    found = await sent_email(api)
    data = event(kind, found["deliveries"][0]["provider_message_id"], **extra)
    assert await post_webhook(api, mailgun.webhook(data, at=clock.now())) == 200
    await api.app[INBOUND].drain()
    _, opt_outs = await api.get("/api/v1/opt-outs")
    assert [(o["channel"], o["address"], o["source"]) for o in opt_outs["items"]] == [("email", RECIPIENT, f"acme_mail: {kind if kind != 'failed' else 'suppress-unsubscribe'}")]
    [opted] = [e for e in await api.app[STORE].list_events(tenant="acme") if e.type == "recipient.opted_out"]
    assert opted.data["address"] == RECIPIENT and opted.data["channel"] == "email"
    _, replies = await api.get("/api/v1/replies")
    assert replies["items"] == []  # an unsubscribe is not something the recipient wrote
    status, refused = await api.send({"recipient": {"email": RECIPIENT}, "notification": EMAIL})
    assert status == 422 and refused["error"]["code"] == "recipient_opted_out"


async def test_a_forged_or_replayed_webhook_is_401_and_changes_nothing(api: Api, mailgun: FakeMailgun, clock: FakeClock) -> None:
    found = await sent_email(api)
    message_id = found["deliveries"][0]["provider_message_id"]
    assert await post_webhook(api, mailgun.webhook(event("delivered", message_id), at=clock.now(), key="forged")) == 401
    assert (await api.notification(found["notification_id"]))["deliveries"][0]["status"] == "sent"
    genuine = mailgun.webhook(event("opened", message_id), at=clock.now())
    assert await post_webhook(api, genuine) == 200
    assert await post_webhook(api, genuine) == 401


def test_parsing_reports_the_vendors_own_words() -> None:
    data = event("failed", "<m1@mg.acme.example>", severity="permanent", reason="bounce", variables={"tidings-delivery-id": "dlv_1"})
    [update] = parse_event(data)
    assert isinstance(update, StatusUpdate)
    assert (update.provider_message_id, update.status, update.occurred_at) == ("m1@mg.acme.example", "bounced", NOW + 0.908181)
    assert update.detail["vendor_status"] == "failed" and update.detail["reason"] == "bounce" and update.delivery_id == "dlv_1"
    assert update.error is not None and "550" in update.error and "does not exist" in update.error
    [_, opt_out] = parse_event(event("complained", "m2@mg.acme.example"))
    assert opt_out == OptOut("email", RECIPIENT, reason="complained", about="m2@mg.acme.example", occurred_at=NOW + 0.908181)


# -- credentials check ----------------------------------------------------------------------------


async def test_check_credentials_names_the_domain_and_refuses_a_wrong_key_or_domain(session: aiohttp.ClientSession, mailgun: FakeMailgun) -> None:
    described = await make_provider(session, mailgun).check_credentials()
    assert described is not None and DOMAIN in described and "active" in described and API_KEY not in described
    with pytest.raises(CredentialsRejectedError):
        await make_provider(session, mailgun, api_key="key-wrong").check_credentials()
    with pytest.raises(CredentialsRejectedError):
        await make_provider(session, mailgun, domain="mg.nobody.example").check_credentials()
    assert mailgun.domain_lookups == [(DOMAIN, 200), (DOMAIN, 401), ("mg.nobody.example", 404)]
