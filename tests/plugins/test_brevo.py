"""The brevo plugin against a fake Brevo on loopback, and through the real HTTP API."""

from __future__ import annotations

import base64
import json
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import LIVE_KEY, Api, FakeClock, key_entry, serve
from fakes.brevo import API_KEY, PHONE, RECIPIENT, RELAY, WEBHOOK_TOKEN, FakeBrevo, email_event, sms_event

from gateway import (
    CredentialsRejectedError,
    InboundReply,
    InboundRequest,
    OutboundMessage,
    PermanentDeliveryError,
    ProviderContext,
    Sender,
    StatusUpdate,
    TransientDeliveryError,
    WebhookVerificationError,
)
from gateway.http.appkeys import INBOUND, OUTCOMES, STORE
from plugins.brevo import ERRORS, INVALID_RECIPIENT, RATE_LIMITED, BrevoProvider

NOW = 1_800_000_000.0
USER, PASSWORD = "brevo-hooks", "fake-basic-password-0001"


@pytest.fixture
async def brevo() -> AsyncIterator[FakeBrevo]:
    async with FakeBrevo().serving() as fake:
        yield fake


def make_provider(session: aiohttp.ClientSession, fake: FakeBrevo | None = None, **config: Any) -> BrevoProvider:
    settings = {"api_key": API_KEY, "base_url": fake.url if fake else None, "webhook_token": WEBHOOK_TOKEN} | config
    context = ProviderContext(session=session, clock=FakeClock(NOW), report=lambda _updates: None)
    return BrevoProvider("brevo", {k: v for k, v in settings.items() if v is not None}, context)


def email(**overrides: Any) -> OutboundMessage:
    fields: dict[str, Any] = {
        "delivery_id": "dlv_01JBREVO00000000000000001", "notification_id": "ntf_01JBREVO00000000000000001", "tenant": "acme",
        "channel": "email", "to": RECIPIENT, "recipient": {"email": RECIPIENT}, "subject": "Order 1001 shipped",
        "body": "It is on its way.", "html": "<p>It is on its way.</p>", "sender": Sender("no-reply@acme.example", "ACME", "help@acme.example"),
    }
    return OutboundMessage(**(fields | overrides))


def sms(**overrides: Any) -> OutboundMessage:
    fields: dict[str, Any] = {
        "delivery_id": "dlv_01JBREVO00000000000000002", "notification_id": "ntf_01JBREVO00000000000000002", "tenant": "acme",
        "channel": "sms", "to": PHONE, "recipient": {"phone": PHONE}, "body": "Your code is 123456",
    }
    return OutboundMessage(**(fields | overrides))


# -- what Brevo receives --------------------------------------------------------------------------


async def test_an_email_is_json_with_the_api_key_our_delivery_id_and_an_idempotency_key(session: aiohttp.ClientSession, brevo: FakeBrevo) -> None:
    receipt = await make_provider(session, brevo).send(email())
    [received] = brevo.emails
    assert received.headers["api-key"] == API_KEY and received.headers["Content-Type"].startswith("application/json")
    assert received.body == {
        "sender": {"email": "no-reply@acme.example", "name": "ACME"},
        "to": [{"email": RECIPIENT}],
        "subject": "Order 1001 shipped",
        "htmlContent": "<p>It is on its way.</p>",
        "textContent": "It is on its way.",
        "replyTo": {"email": "help@acme.example"},
        "headers": {"X-Mailin-custom": "dlv_01JBREVO00000000000000001", "idempotencyKey": "dlv_01JBREVO00000000000000001"},
    }
    assert f"<{receipt.provider_message_id}>" == received.message_id


async def test_a_retried_email_carries_the_same_idempotency_key_so_brevo_sends_it_once(session: aiohttp.ClientSession, brevo: FakeBrevo) -> None:
    provider = make_provider(session, brevo)
    first = await provider.send(email())
    again = await provider.send(email(attempt=2))
    other = await provider.send(email(delivery_id="dlv_01JBREVO0000000000000000X"))
    assert first.provider_message_id == again.provider_message_id != other.provider_message_id


async def test_an_sms_goes_to_the_new_endpoint_with_the_number_brevo_style(session: aiohttp.ClientSession, brevo: FakeBrevo) -> None:
    provider = make_provider(session, brevo, sms_sender="ACME")
    receipt = await provider.send(sms())
    await provider.send(sms(sender=Sender("ACMEALERTS")))
    first, second = brevo.sms
    assert first.path == "/v3/transactionalSMS/send" and first.headers["api-key"] == API_KEY
    assert first.body == {"sender": "ACME", "recipient": "14155550100", "content": "Your code is 123456", "type": "transactional"}
    assert second.body["sender"] == "ACMEALERTS"
    assert receipt.provider_message_id == first.message_id and receipt.provider_message_id.isdigit()


async def test_without_a_sender_in_policy_or_config_nothing_is_sent(session: aiohttp.ClientSession, brevo: FakeBrevo) -> None:
    provider = make_provider(session, brevo)
    for message in (email(sender=None), sms()):
        with pytest.raises(PermanentDeliveryError) as caught:
            await provider.send(message)
        assert caught.value.code == "sender_missing"
    assert brevo.requests == []
    await make_provider(session, brevo, **{"from": "robot@acme.example", "from_name": "ACME Robot"}).send(email(sender=None, html=None))
    [received] = brevo.emails
    assert received.body["sender"] == {"email": "robot@acme.example", "name": "ACME Robot"} and "htmlContent" not in received.body


# -- what Brevo answers ---------------------------------------------------------------------------

CASES = [
    (400, "invalid_parameter", "email is not valid in to", {}, PermanentDeliveryError, "invalid_recipient", None),
    (400, "invalid_parameter", "scheduledAt is not valid", {}, PermanentDeliveryError, "invalid_parameter", None),
    (400, "missing_parameter", "sender is missing", {}, PermanentDeliveryError, "missing_parameter", None),
    (400, "out_of_range", "tags has too many values", {}, PermanentDeliveryError, "out_of_range", None),
    (400, "bad_request", "Input must be a valid JSON object", {}, PermanentDeliveryError, "bad_request", None),
    (406, "not_acceptable", "Not acceptable", {}, PermanentDeliveryError, "not_acceptable", None),
    (405, "method_not_allowed", "Method not allowed", {}, PermanentDeliveryError, "method_not_allowed", None),
    (404, "document_not_found", "Sender not found", {}, PermanentDeliveryError, "document_not_found", None),
    (400, "campaign_processing", "Campaign is processing", {}, PermanentDeliveryError, "campaign_processing", None),
    (400, "campaign_sent", "Campaign already sent", {}, PermanentDeliveryError, "campaign_sent", None),
    (400, "duplicate_parameter", "to is duplicated", {}, PermanentDeliveryError, "duplicate_parameter", None),
    (400, "duplicate_request", "The request rate of the very same request is too high", {}, TransientDeliveryError, "rate_limited", None),
    (429, None, None, {"Retry-After": "7"}, TransientDeliveryError, "rate_limited", 7.0),
    (429, "too_many_requests", "Too many requests", {"x-sib-ratelimit-reset": "45"}, TransientDeliveryError, "rate_limited", 45.0),
    (401, "unauthorized", "Unable to authenticate: unrecognised IP address", {}, CredentialsRejectedError, "unauthorized", None),
    (403, "permission_denied", "Sender not validated", {}, CredentialsRejectedError, "permission_denied", None),
    (403, "reseller_permission_denied", "You need a reseller plan", {}, CredentialsRejectedError, "reseller_permission_denied", None),
    (402, "not_enough_credits", "Not enough credits", {}, CredentialsRejectedError, "not_enough_credits", None),
    (403, "account_under_validation", "Your account is under validation", {}, CredentialsRejectedError, "account_under_validation", None),
    (500, None, None, {}, TransientDeliveryError, "http_500", None),
    (502, "internal_error", "Bad gateway", {"Retry-After": "60"}, TransientDeliveryError, "internal_error", 60.0),
]


@pytest.mark.parametrize(("status", "vendor_code", "text", "headers", "error", "code", "retry_after"), CASES)
async def test_each_documented_error_is_classified_by_the_table(
    session: aiohttp.ClientSession, brevo: FakeBrevo, status: int, vendor_code: str | None, text: str | None,
    headers: dict[str, str], error: type[Exception], code: str, retry_after: float | None,
) -> None:
    body: dict[str, Any] | str = {"code": vendor_code, "message": text} if vendor_code else ""
    brevo.answer_next(status, body, headers)
    with pytest.raises(error) as caught:
        await make_provider(session, brevo).send(email())
    failure: Any = caught.value
    kind = type(failure)
    assert kind is error and failure.code == code and getattr(failure, "retry_after", None) == retry_after
    assert failure.detail.get("vendor_code") == vendor_code and failure.detail["http_status"] == status


def test_the_error_cases_cover_every_row_of_the_table() -> None:
    covered = {vendor_code for _, vendor_code, *_ in CASES} | {INVALID_RECIPIENT, RATE_LIMITED}
    assert set(ERRORS) <= covered


async def test_a_wrong_api_key_is_a_credential_failure_that_never_shows_the_key(session: aiohttp.ClientSession, brevo: FakeBrevo) -> None:
    with pytest.raises(CredentialsRejectedError) as caught:
        await make_provider(session, brevo, api_key="xkeysib-not-the-right-one").send(email())
    assert [r.authorized for r in brevo.requests] == [False]
    assert "api_key" in str(caught.value) and "xkeysib" not in str(caught.value)


async def test_an_invalid_number_is_an_invalid_recipient(session: aiohttp.ClientSession, brevo: FakeBrevo) -> None:
    brevo.fail_next("reject_recipient")
    with pytest.raises(PermanentDeliveryError) as caught:
        await make_provider(session, brevo, sms_sender="ACME").send(sms())
    assert caught.value.code == "invalid_recipient"


# -- webhook authentication (Brevo signs nothing) ---------------------------------------------------


def callback(*, query: dict[str, str] | None = None, authorization: str | None = None, remote: str | None = "1.179.112.10") -> InboundRequest:
    headers = {"Content-Type": "application/json"} | ({"Authorization": authorization} if authorization else {})
    body = json.dumps(email_event("delivered", f"<1@{RELAY}>")).encode()
    return InboundRequest(method="POST", url="https://tidings.example/api/v1/webhooks/brevo", headers=headers, query=query or {}, body=body, remote=remote)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("config", "request_", "accepted"),
    [
        ({}, callback(query={"token": WEBHOOK_TOKEN}), True),
        ({}, callback(authorization=f"Bearer {WEBHOOK_TOKEN}"), True),
        ({}, callback(query={"token": WEBHOOK_TOKEN[:-1] + "X"}), False),
        ({}, callback(), False),
        ({}, callback(authorization=f"Bearer {WEBHOOK_TOKEN}x"), False),
        ({"webhook_token": None, "webhook_username": USER, "webhook_password": PASSWORD}, callback(authorization=basic(USER, PASSWORD)), True),
        ({"webhook_token": None, "webhook_username": USER, "webhook_password": PASSWORD}, callback(authorization=basic(USER, "wrong-password")), False),
        ({"webhook_token": None, "webhook_username": USER, "webhook_password": PASSWORD}, callback(authorization=basic("root", PASSWORD)), False),
        ({"webhook_token": None, "webhook_username": USER, "webhook_password": PASSWORD}, callback(authorization="Basic !!not-base64"), False),
        ({"webhook_username": USER, "webhook_password": PASSWORD}, callback(authorization=basic(USER, PASSWORD)), False),
        ({"webhook_username": USER, "webhook_password": PASSWORD}, callback(query={"token": WEBHOOK_TOKEN}, authorization=basic(USER, PASSWORD)), True),
        ({"webhook_token": None}, callback(query={"token": WEBHOOK_TOKEN}), False),
    ],
)
async def test_a_callback_needs_every_configured_secret(
    session: aiohttp.ClientSession, config: dict[str, Any], request_: InboundRequest, accepted: bool
) -> None:
    provider = make_provider(session, **config)
    if accepted:
        await provider.verify_webhook(request_)
        return
    with pytest.raises(WebhookVerificationError) as caught:
        await provider.verify_webhook(request_)
    assert caught.value.status == 401


@pytest.mark.parametrize(
    ("remote", "allowed"),
    [("1.179.112.10", True), ("::ffff:1.179.127.254", True), ("172.246.240.9", True), ("8.8.8.8", False), ("2001:db8::1", False), (None, False)],
)
async def test_an_allow_list_refuses_other_sources_with_403_even_with_the_token(
    session: aiohttp.ClientSession, remote: str | None, allowed: bool
) -> None:
    provider = make_provider(session, allowed_source_ranges=["1.179.112.0/20", "172.246.240.0/20"])
    request = callback(query={"token": WEBHOOK_TOKEN}, remote=remote)
    if allowed:
        await provider.verify_webhook(request)
        return
    with pytest.raises(WebhookVerificationError) as caught:
        await provider.verify_webhook(request)
    assert caught.value.status == 403


def test_a_malformed_range_is_refused_when_the_instance_is_built(session: aiohttp.ClientSession) -> None:
    with pytest.raises(ValueError, match="allowed_source_ranges"):
        make_provider(session, allowed_source_ranges=["1.179.112.0/33"])


# -- parsing -------------------------------------------------------------------------------------


async def test_a_batched_callback_yields_every_event_in_order(session: aiohttp.ClientSession) -> None:
    events = [email_event("request", f"<1@{RELAY}>", delivery_id="dlv_1"), email_event("click", "2@" + RELAY), sms_event("delivered", 77)]
    request = InboundRequest("POST", "https://t.example/", {}, {}, json.dumps(events).encode())
    updates = await make_provider(session).parse_webhook(request)
    assert [(u.provider_message_id, u.status) for u in updates if isinstance(u, StatusUpdate)] == [
        (f"1@{RELAY}", "sent"), (f"2@{RELAY}", "clicked"), ("77", "delivered"),
    ]
    first = updates[0]
    assert isinstance(first, StatusUpdate) and first.occurred_at == NOW and first.delivery_id == "dlv_1"


# -- receipts, replies and opt-outs through the real API ------------------------------------------


@pytest.fixture
async def api(aiohttp_client: Any, tmp_path: Path, clock: FakeClock, brevo: FakeBrevo) -> Api:
    policy_dir = tmp_path / "policies"
    (policy_dir / "secrets").mkdir(parents=True)
    (policy_dir / "secrets" / "brevo-key").write_text(API_KEY)
    (policy_dir / "secrets" / "brevo-token").write_text(WEBHOOK_TOKEN)
    instance = f"""plugin: brevo
            tenant: acme
            config:
              api_key: {{$file: secrets/brevo-key}}
              base_url: "{brevo.url}"
              webhook_token: {{$file: secrets/brevo-token}}"""
    (policy_dir / "policy.yaml").write_text(textwrap.dedent(f"""
        tenants:
          acme:
            api_keys: [{key_entry(LIVE_KEY)}]
            senders:
              email: {{from: no-reply@acme.example, name: ACME, reply_to: help@acme.example}}
              sms: {{from: ACME}}
            channels:
              email: {{providers: [brevo]}}
              sms: {{providers: [brevo]}}
        providers:
          brevo:
            {instance}
              allowed_source_ranges: [127.0.0.0/8, "::1/128"]
          brevo_elsewhere:
            {instance}
              allowed_source_ranges: [1.179.112.0/20]
        """))
    return await serve(aiohttp_client, policy_dir, {"brevo": BrevoProvider}, clock)


EMAIL = {"recipient": {"email": RECIPIENT}, "notification": {"channels": ["email"], "subject": "Order 1001 shipped", "body": "It is on its way."}}
SMS = {"recipient": {"phone": PHONE}, "notification": {"channels": ["sms"], "body": "Your code is 123456"}}


async def sent(api: Api, body: dict[str, Any]) -> dict[str, Any]:
    status, accepted = await api.send(body)
    assert status == 202, accepted
    return await api.wait_for(accepted["notification_id"], lambda n: n["status"] == "sent")


async def post_webhook(api: Api, payload: Any, instance: str = "brevo", token: str = WEBHOOK_TOKEN) -> int:
    response = await api.client.post(
        f"/api/v1/webhooks/{instance}", params={"token": token}, data=json.dumps(payload), headers={"Content-Type": "application/json"}
    )
    await api.app[INBOUND].drain()
    await api.app[OUTCOMES].drain()
    return response.status


async def test_a_bearer_token_is_stored_masked_and_nowhere_in_the_data_directory(api: Api, tmp_path: Path) -> None:
    response = await api.client.post(
        "/api/v1/webhooks/brevo", data=json.dumps({"event": "delivered", "message-id": "<m1@brevo>"}),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {WEBHOOK_TOKEN}"},
    )
    assert response.status == 200
    await api.app[INBOUND].drain()
    stored = await api.app[STORE].get_inbound((await response.json())["received"])
    assert stored is not None and stored.request.headers["Authorization"] == "Bearer ********"
    assert not any(WEBHOOK_TOKEN.encode() in path.read_bytes() for path in (tmp_path / "data").iterdir() if path.is_file())


async def delivery_status(api: Api, notification_id: str) -> str:
    return str((await api.notification(notification_id))["deliveries"][0]["status"])


async def test_a_send_through_the_api_reaches_brevo_with_the_tenants_senders(api: Api, brevo: FakeBrevo) -> None:
    mail = (await sent(api, EMAIL))["deliveries"][0]
    text = (await sent(api, SMS))["deliveries"][0]
    [received_mail], [received_sms] = brevo.emails, brevo.sms
    assert received_mail.body["sender"] == {"email": "no-reply@acme.example", "name": "ACME"}
    assert received_mail.body["replyTo"] == {"email": "help@acme.example"}
    assert received_mail.body["headers"]["X-Mailin-custom"] == mail["delivery_id"]
    assert mail["provider_message_id"] == received_mail.message_id.strip("<>")  # type: ignore[union-attr]
    assert (received_sms.body["sender"], received_sms.body["recipient"]) == ("ACME", "14155550100")
    assert text["provider_message_id"] == received_sms.message_id


@pytest.mark.parametrize(
    ("kind", "status"),
    [
        ("request", "sent"), ("delivered", "delivered"), ("deferred", "sent"), ("soft_bounce", "sent"),
        ("hard_bounce", "bounced"), ("invalid_email", "bounced"), ("blocked", "bounced"), ("error", "failed"),
        ("opened", "opened"), ("unique_opened", "opened"), ("proxy_open", "delivered"), ("click", "clicked"),
    ],
)
async def test_each_email_event_moves_the_delivery_to_its_tidings_status(api: Api, brevo: FakeBrevo, kind: str, status: str) -> None:
    found = await sent(api, EMAIL)
    [received] = brevo.emails
    assert received.message_id is not None
    payload = email_event(kind, received.message_id, delivery_id=found["deliveries"][0]["delivery_id"])
    assert await post_webhook(api, payload) == 200
    assert await delivery_status(api, found["notification_id"]) == status


async def test_a_message_id_without_angle_brackets_matches_too(api: Api) -> None:
    found = await sent(api, EMAIL)
    assert await post_webhook(api, email_event("delivered", found["deliveries"][0]["provider_message_id"])) == 200
    assert await delivery_status(api, found["notification_id"]) == "delivered"


@pytest.mark.parametrize(("kind", "status"), [("sent", "sent"), ("delivered", "delivered"), ("soft_bounce", "failed"), ("hard_bounce", "bounced")])
async def test_each_sms_event_moves_the_delivery_to_its_tidings_status(api: Api, kind: str, status: str) -> None:
    found = await sent(api, SMS)
    message_id = int(found["deliveries"][0]["provider_message_id"])
    assert await post_webhook(api, sms_event(kind, message_id, description="Delivered" if kind == "delivered" else "Absent subscriber")) == 200
    assert await delivery_status(api, found["notification_id"]) == status


@pytest.mark.parametrize("kind", ["unsubscribed", "spam"])
async def test_an_unsubscribe_or_spam_complaint_opts_the_email_recipient_out(api: Api, brevo: FakeBrevo, kind: str) -> None:
    found = await sent(api, EMAIL)
    # Brevo reports the address as the contact was stored: the case may differ from what was sent.
    assert await post_webhook(api, email_event(kind, str(brevo.emails[0].message_id), email=RECIPIENT.upper())) == 200
    assert await delivery_status(api, found["notification_id"]) == "delivered"
    _, opt_outs = await api.get("/api/v1/opt-outs")
    assert [(o["channel"], o["address"], o["source"]) for o in opt_outs["items"]] == [("email", RECIPIENT, f"brevo: {kind}")]
    _, replies = await api.get("/api/v1/replies")
    assert replies["items"] == []
    status, refused = await api.send(EMAIL)
    assert status == 422 and refused["error"]["code"] == "recipient_opted_out"


async def test_an_sms_reply_is_stored_against_its_message_and_stop_opts_out(api: Api) -> None:
    found = await sent(api, SMS)
    message_id = int(found["deliveries"][0]["provider_message_id"])
    assert await post_webhook(api, sms_event("replied", message_id, reply="Thanks!")) == 200
    _, replies = await api.get("/api/v1/replies")
    [reply] = replies["items"]
    assert (reply["from"], reply["body"], reply["channel"], reply["notification_id"]) == (PHONE, "Thanks!", "sms", found["notification_id"])
    assert await post_webhook(api, sms_event("replied", message_id, reply="STOP")) == 200
    status, refused = await api.send(SMS)
    assert status == 422 and refused["error"]["code"] == "recipient_opted_out"


async def test_an_sms_unsubscribe_event_opts_out_and_a_subscribe_event_back_in(api: Api) -> None:
    found = await sent(api, SMS)
    message_id = int(found["deliveries"][0]["provider_message_id"])
    assert await post_webhook(api, sms_event("unsubscribe", message_id)) == 200
    status, refused = await api.send(SMS)
    assert status == 422 and refused["error"]["code"] == "recipient_opted_out"
    assert await post_webhook(api, sms_event("subscribe", message_id)) == 200
    status, _ = await api.send(SMS)
    assert status == 202
    events = [e.type for e in await api.app[STORE].list_events(tenant="acme") if e.type.startswith("recipient.")]
    assert events == ["recipient.opted_in", "recipient.opted_out"]  # newest first


async def test_a_callback_with_a_wrong_token_is_401_and_one_from_outside_the_range_403(api: Api, brevo: FakeBrevo) -> None:
    found = await sent(api, EMAIL)
    payload = email_event("hard_bounce", str(brevo.emails[0].message_id))
    assert await post_webhook(api, payload, token="not-the-token-of-this-instance") == 401
    assert await post_webhook(api, payload, instance="brevo_elsewhere") == 403
    assert await delivery_status(api, found["notification_id"]) == "sent"


async def test_basic_auth_in_the_callback_url_as_brevo_configures_it_is_accepted(aiohttp_client: Any, tmp_path: Path, clock: FakeClock, brevo: FakeBrevo) -> None:
    """Brevo's documented way: ``https://user:pass@host/path`` as the webhook URL; an HTTP client turns it into basic auth."""
    policy_dir = tmp_path / "basic-policies"
    policy_dir.mkdir()
    (policy_dir / "brevo-password").write_text(PASSWORD)
    (policy_dir / "policy.yaml").write_text(textwrap.dedent(f"""
        tenants:
          acme: {{api_keys: [{key_entry(LIVE_KEY)}]}}
        providers:
          brevo:
            plugin: brevo
            config: {{api_key: not-used, base_url: "{brevo.url}", webhook_username: {USER}, webhook_password: {{$file: brevo-password}}}}
        """))
    api = await serve(aiohttp_client, policy_dir, {"brevo": BrevoProvider}, clock)
    client = api.client
    url = client.make_url("/api/v1/webhooks/brevo")
    body = json.dumps(email_event("delivered", f"<1@{RELAY}>"))
    async with aiohttp.ClientSession() as outside:
        async with outside.post(url.with_user(USER).with_password(PASSWORD), data=body) as genuine:
            assert genuine.status == 200
        async with outside.post(url.with_user(USER).with_password("guessed-password"), data=body) as forged:
            assert forged.status == 401


def test_parsing_keeps_the_vendors_words_and_restores_the_plus() -> None:
    from plugins.brevo import parse_email_event, parse_sms_event

    [update] = parse_email_event(email_event("hard_bounce", f"<9@{RELAY}>", delivery_id="dlv_9", reason="550 unknown user"))
    assert isinstance(update, StatusUpdate) and (update.provider_message_id, update.status, update.error) == (f"9@{RELAY}", "bounced", "550 unknown user")
    assert update.detail == {"vendor_status": "hard_bounce", "reason": "550 unknown user"} and update.delivery_id == "dlv_9"
    [reply] = parse_sms_event(sms_event("replied", 5, reply="Yes", to="+33612345678"))
    assert isinstance(reply, InboundReply) and (reply.sender, reply.in_reply_to, reply.channel) == ("+33612345678", "5", "sms")


# -- credentials check ----------------------------------------------------------------------------


async def test_check_credentials_names_the_account_and_refuses_a_wrong_key(session: aiohttp.ClientSession, brevo: FakeBrevo) -> None:
    described = await make_provider(session, brevo).check_credentials()
    assert described == "Brevo account ACME (ops@acme.example)"
    with pytest.raises(CredentialsRejectedError):
        await make_provider(session, brevo, api_key="xkeysib-wrong").check_credentials()
    assert brevo.account_checks == [200, 401]
