"""The twilio plugin against a fake Twilio on loopback, signatures checked with the twilio package, and end to end."""

from __future__ import annotations

import json
import textwrap
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import aiohttp
import pytest
from aiohttp import web
from conftest import LIVE_KEY, Api, FakeClock, Reports, key_entry, serve
from fakes.twilio import ACCOUNT_SID, API_KEY_SECRET, API_KEY_SID, AUTH_TOKEN, FROM, FakeTwilio, message_status, signed_callback
from twilio.request_validator import RequestValidator

from gateway import (
    CredentialsRejectedError,
    DeliveryError,
    InboundRequest,
    OutboundMessage,
    PermanentDeliveryError,
    ProviderContext,
    ProviderTemplate,
    Sender,
    StatusUpdate,
    TransientDeliveryError,
    WebhookVerificationError,
)
from gateway.conformance import outbound
from gateway.http.appkeys import INBOUND, OUTCOMES, STORE
from plugins.twilio import TwilioProvider, compute_signature

PHONE = "+14155550100"
WHATSAPP_FROM = "+14155238886"
CONTENT_SID = "HX" + "0123456789abcdef" * 2
SHARED_KEY = "twilio-shared-signing-key-0123456789"
PUBLIC = "https://tidings.example.com/api/v1/webhooks/acme_twilio"


@pytest.fixture
async def twilio() -> AsyncIterator[FakeTwilio]:
    async with FakeTwilio().serving() as fake:
        yield fake


def provider(session: aiohttp.ClientSession, twilio: FakeTwilio, **config: Any) -> TwilioProvider:
    settings = {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN, "from": FROM, "base_url": twilio.url, "timeout_seconds": 2} | config
    settings = {key: value for key, value in settings.items() if value is not None}
    return TwilioProvider("tw", settings, ProviderContext(session=session, clock=FakeClock(), report=Reports()))


def sms(body: str = "Your code is 123456", **content: Any) -> OutboundMessage:
    return outbound("sms", PHONE, {"phone": PHONE}, body=body, **content)


# -- 1. what Twilio receives -------------------------------------------------------------------


async def test_an_sms_is_a_form_post_with_basic_auth_a_sender_and_a_status_callback_naming_the_delivery(
    session: aiohttp.ClientSession, twilio: FakeTwilio
) -> None:
    message = sms()
    receipt = await provider(session, twilio, status_callback_url=PUBLIC).send(message)
    [request] = twilio.sends
    assert request.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    assert request.authorized and request.headers["Authorization"] == aiohttp.encode_basic_auth(ACCOUNT_SID, AUTH_TOKEN)
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert request.params == {"To": PHONE, "From": FROM, "Body": "Your code is 123456", "StatusCallback": f"{PUBLIC}?d={message.delivery_id}"}
    assert receipt.provider_message_id == request.answer["sid"] and receipt.provider_message_id.startswith("SM")
    assert receipt.detail["status"] == "queued"


async def test_without_a_status_callback_url_none_is_sent(session: aiohttp.ClientSession, twilio: FakeTwilio) -> None:
    await provider(session, twilio).send(sms())
    assert "StatusCallback" not in twilio.sends[0].params


async def test_the_tenants_sender_wins_and_a_messaging_service_goes_along(session: aiohttp.ClientSession, twilio: FakeTwilio) -> None:
    service = "MG" + "1" * 32
    await provider(session, twilio, messaging_service_sid=service).send(sms(sender=Sender("+15005550009")))
    assert twilio.sends[0].params["From"] == "+15005550009"
    assert twilio.sends[0].params["MessagingServiceSid"] == service


async def test_without_a_from_the_messaging_service_picks_the_sender(session: aiohttp.ClientSession, twilio: FakeTwilio) -> None:
    service = "MG" + "1" * 32
    await provider(session, twilio, **{"from": None, "messaging_service_sid": service}).send(sms())
    assert "From" not in twilio.sends[0].params and twilio.sends[0].params["MessagingServiceSid"] == service
    assert twilio.sends[0].answer["status"] == "accepted"


async def test_no_sender_at_all_is_permanent_and_twilio_is_not_called(session: aiohttp.ClientSession, twilio: FakeTwilio) -> None:
    with pytest.raises(PermanentDeliveryError) as caught:
        await provider(session, twilio, **{"from": None}).send(sms())
    assert caught.value.code == "no_sender" and twilio.requests == []


async def test_an_api_key_authenticates_in_place_of_the_auth_token(session: aiohttp.ClientSession, twilio: FakeTwilio) -> None:
    config = {"auth_token": None, "api_key_sid": API_KEY_SID, "api_key_secret": API_KEY_SECRET}
    await provider(session, twilio, **config).send(sms())
    assert twilio.sends[0].authorized
    assert twilio.sends[0].headers["Authorization"] == aiohttp.encode_basic_auth(API_KEY_SID, API_KEY_SECRET)


async def test_wrong_credentials_are_a_credentials_error_that_shows_no_secret(session: aiohttp.ClientSession, twilio: FakeTwilio) -> None:
    wrong = "wrong-token-that-must-not-leak"
    with pytest.raises(CredentialsRejectedError) as caught:
        await provider(session, twilio, auth_token=wrong).send(sms())
    assert twilio.sends[0].status == 401 and twilio.sends[0].answer["code"] == 20003
    assert wrong not in str(caught.value) and wrong not in repr(caught.value.detail)


async def test_a_whatsapp_template_goes_as_content_sid_with_positional_variables(session: aiohttp.ClientSession, twilio: FakeTwilio) -> None:
    template = ProviderTemplate("otp_code", "en_US", ("123456", "10 minutes"))
    message = outbound("whatsapp", PHONE, {"phone": PHONE}, body=None, provider_template=template)
    config = {"whatsapp_from": WHATSAPP_FROM, "content_sids": {"otp_code:en_US": CONTENT_SID}}
    receipt = await provider(session, twilio, **config).send(message)
    params = twilio.sends[0].params
    assert (params["To"], params["From"], params["ContentSid"]) == (f"whatsapp:{PHONE}", f"whatsapp:{WHATSAPP_FROM}", CONTENT_SID)
    assert json.loads(params["ContentVariables"]) == {"1": "123456", "2": "10 minutes"}
    assert "Body" not in params and receipt.provider_message_id.startswith("SM")


async def test_a_template_named_by_its_hx_sid_is_used_as_is(session: aiohttp.ClientSession, twilio: FakeTwilio) -> None:
    message = outbound("whatsapp", PHONE, {"phone": PHONE}, body=None, provider_template=ProviderTemplate(CONTENT_SID, "en", ()))
    await provider(session, twilio, content_sids={"other": "HX" + "f" * 32}).send(message)
    assert twilio.sends[0].params["ContentSid"] == CONTENT_SID and "ContentVariables" not in twilio.sends[0].params
    assert twilio.sends[0].params["From"] == f"whatsapp:{FROM}"  # no whatsapp_from: the default sender, prefixed


async def test_an_unmapped_template_is_template_not_found_without_calling_twilio(session: aiohttp.ClientSession, twilio: FakeTwilio) -> None:
    message = outbound("whatsapp", PHONE, {"phone": PHONE}, body=None, provider_template=ProviderTemplate("otp_code", "pt_BR", ("1",)))
    with pytest.raises(PermanentDeliveryError) as caught:
        await provider(session, twilio, content_sids={"otp_code:en_US": CONTENT_SID}).send(message)
    assert caught.value.code == "template_not_found" and twilio.requests == []


async def test_a_voice_call_reads_the_escaped_body_with_say(session: aiohttp.ClientSession, twilio: FakeTwilio) -> None:
    body = 'Your code is <1 & 2> "now"'
    message = outbound("voice", PHONE, {"phone": PHONE}, body=body)
    receipt = await provider(session, twilio, voice="Polly.Joanna", voice_language="en-US", status_callback_url=PUBLIC).send(message)
    [request] = twilio.sends
    assert request.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json"
    assert (request.params["To"], request.params["From"]) == (PHONE, FROM)
    assert request.params["StatusCallback"] == f"{PUBLIC}?d={message.delivery_id}"
    say = ET.fromstring(request.params["Twiml"]).find("Say")
    assert say is not None and say.text == body and say.attrib == {"voice": "Polly.Joanna", "language": "en-US"}
    assert receipt.provider_message_id.startswith("CA")


# -- 2. the error table ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status", "headers", "error", "tidings_code", "retry_after"),
    [
        (21211, 400, {}, PermanentDeliveryError, "invalid_recipient", None),
        (21614, 400, {}, PermanentDeliveryError, "invalid_recipient", None),
        (21610, 400, {}, PermanentDeliveryError, "opted_out", None),
        (21408, 400, {}, PermanentDeliveryError, "region_not_enabled", None),
        (21606, 400, {}, PermanentDeliveryError, "invalid_sender", None),
        (63016, 400, {}, PermanentDeliveryError, "outside_session_window", None),
        (21655, 400, {}, PermanentDeliveryError, "template_not_found", None),
        (20003, 401, {}, CredentialsRejectedError, None, None),
        (20429, 429, {"Retry-After": "7"}, TransientDeliveryError, "rate_limited", 7.0),
        (21611, 400, {}, TransientDeliveryError, "rate_limited", None),
        (20500, 500, {}, TransientDeliveryError, None, None),
        (20503, 503, {"Retry-After": "30"}, TransientDeliveryError, None, 30.0),
        (21999, 400, {}, PermanentDeliveryError, "21999", None),
        (29999, 502, {}, TransientDeliveryError, "29999", None),
    ],
)
async def test_twilio_errors_are_classified_by_code(
    session: aiohttp.ClientSession, twilio: FakeTwilio, code: int, status: int, headers: dict[str, str],
    error: type[DeliveryError], tidings_code: str | None, retry_after: float | None,
) -> None:
    twilio.refuse_next(code, status, "refused", headers)
    with pytest.raises(error) as caught:
        await provider(session, twilio).send(sms())
    if tidings_code is not None:
        assert caught.value.code == tidings_code
    assert caught.value.detail["vendor_code"] == code and caught.value.detail["http_status"] == status
    if isinstance(caught.value, TransientDeliveryError):
        assert caught.value.retry_after == retry_after
    assert type(caught.value) is error


async def test_twilios_own_request_checks_are_permanent(session: aiohttp.ClientSession, twilio: FakeTwilio) -> None:
    with pytest.raises(PermanentDeliveryError) as caught:
        await provider(session, twilio).send(outbound("sms", "4155550100", {"phone": "4155550100"}))
    assert caught.value.code == "invalid_recipient" and twilio.sends[0].answer["code"] == 21211


# -- 3. webhook signatures, against the twilio package ----------------------------------------


def status_request(url: str, *, signed_url: str | None = None, token: str = AUTH_TOKEN, **extra: str) -> InboundRequest:
    return signed_callback(url, message_status("SM" + "a" * 32, "delivered", **extra), token=token, signed_url=signed_url)


async def test_a_callback_signed_by_twilios_request_validator_verifies(session: aiohttp.ClientSession, twilio: FakeTwilio) -> None:
    await provider(session, twilio).verify_webhook(status_request("https://tidings.example.com/api/v1/webhooks/tw?d=dlv_1"))


async def test_our_signature_is_what_twilios_request_validator_expects(session: aiohttp.ClientSession, twilio: FakeTwilio) -> None:
    params = message_status("SM" + "b" * 32, "undelivered", error_code="30003") | {"Body": "a=b&c d+é"}
    url = "https://tidings.example.com/api/v1/webhooks/tw?d=dlv_1&x=%2F"
    ours = compute_signature(AUTH_TOKEN, url, sorted(params.items()))
    assert RequestValidator(AUTH_TOKEN).validate(url, params, ours)
    assert ours == RequestValidator(AUTH_TOKEN).compute_signature(url, params)


@pytest.mark.parametrize(
    ("seen", "signed", "config"),
    [
        ("https://tidings.example.com/hook", "https://tidings.example.com:443/hook", {}),  # Twilio kept the port
        ("https://tidings.example.com:443/hook", "https://tidings.example.com/hook", {}),  # the proxy added it
        ("http://10.0.0.5:8080/hook?d=dlv_1", "https://tidings.example.com/hook?d=dlv_1", {"webhook_url": "https://tidings.example.com/hook"}),
        ("http://10.0.0.5:8080/hook?d=dlv_1", "https://tidings.example.com/hook?d=dlv_1", {"status_callback_url": "https://tidings.example.com/hook"}),
        ("http://10.0.0.5:8080/hook", "https://tidings.example.com:443/hook", {"webhook_url": "https://tidings.example.com/hook"}),
    ],
)
async def test_behind_a_proxy_the_public_url_and_both_port_forms_are_tried(
    session: aiohttp.ClientSession, twilio: FakeTwilio, seen: str, signed: str, config: dict[str, str]
) -> None:
    request = status_request(seen, signed_url=signed)
    assert RequestValidator(AUTH_TOKEN).validate(signed, _form(request), request.headers["X-Twilio-Signature"])
    await provider(session, twilio, **config).verify_webhook(request)


def _form(request: InboundRequest) -> dict[str, str]:
    return dict(parse_qsl(request.body.decode(), keep_blank_values=True))


async def test_behind_a_tls_proxy_without_webhook_url_the_callback_is_refused(session: aiohttp.ClientSession, twilio: FakeTwilio) -> None:
    request = status_request("http://10.0.0.5:8080/hook", signed_url="https://tidings.example.com/hook")
    with pytest.raises(WebhookVerificationError):
        await provider(session, twilio).verify_webhook(request)


def _tampered(request: InboundRequest, body: bytes) -> InboundRequest:
    return InboundRequest(request.method, request.url, request.headers, request.query, body, request.remote)


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda: status_request(PUBLIC, token="not-the-auth-token"), id="wrong key"),
        pytest.param(lambda: _without_signature(status_request(PUBLIC)), id="no signature"),
        pytest.param(lambda: _tampered(status_request(PUBLIC), status_request(PUBLIC).body.replace(b"delivered", b"failed")), id="changed value"),
        pytest.param(lambda: _tampered(status_request(PUBLIC), status_request(PUBLIC).body + b"&ErrorCode=30003"), id="added parameter"),
        pytest.param(lambda: status_request(PUBLIC, signed_url=PUBLIC.replace("acme_twilio", "other")), id="replayed from another instance"),
        pytest.param(lambda: status_request(PUBLIC + "?d=dlv_2", signed_url=PUBLIC + "?d=dlv_1"), id="changed query"),
    ],
)
async def test_forged_or_altered_callbacks_are_refused(session: aiohttp.ClientSession, twilio: FakeTwilio, forge: Any) -> None:
    with pytest.raises(WebhookVerificationError):
        await provider(session, twilio, webhook_url=PUBLIC).verify_webhook(forge())


def _without_signature(request: InboundRequest) -> InboundRequest:
    headers = {name: value for name, value in request.headers.items() if name != "X-Twilio-Signature"}
    return InboundRequest(request.method, request.url, headers, request.query, request.body)


def json_callback(body: bytes, url: str = PUBLIC, *, token: str = AUTH_TOKEN) -> InboundRequest:
    validator = RequestValidator(token)
    signed = f"{url}?bodySHA256={validator.compute_hash(body.decode())}"
    headers = {"Content-Type": "application/json", "X-Twilio-Signature": validator.compute_signature(signed, {})}
    return InboundRequest("POST", signed, headers, {}, body)


async def test_a_json_body_is_checked_against_its_body_sha256(session: aiohttp.ClientSession, twilio: FakeTwilio) -> None:
    body = json.dumps({"MessageSid": "SM" + "c" * 32, "MessageStatus": "delivered"}).encode()
    request = json_callback(body)
    assert RequestValidator(AUTH_TOKEN).validate(request.url, body.decode(), request.headers["X-Twilio-Signature"])
    twilio_provider = provider(session, twilio)
    await twilio_provider.verify_webhook(request)
    [update] = await twilio_provider.parse_webhook(request)
    assert isinstance(update, StatusUpdate) and update.status == "delivered"
    reserialized = json.dumps(json.loads(body), indent=2).encode()
    with pytest.raises(WebhookVerificationError, match="bodySHA256"):
        await twilio_provider.verify_webhook(_tampered(request, reserialized))
    unsigned = InboundRequest("POST", PUBLIC, {"Content-Type": "application/json", "X-Twilio-Signature": "x"}, {}, body)
    with pytest.raises(WebhookVerificationError, match="bodySHA256"):
        await twilio_provider.verify_webhook(unsigned)


async def test_a_shared_key_signature_uses_the_key_and_algorithm_the_header_names(session: aiohttp.ClientSession, twilio: FakeTwilio) -> None:
    params = message_status("SM" + "d" * 32, "delivered")
    settings = {"X-Twilio-Webhooks-Signature-Settings": "key=webhooks_sharedkey_01ABC,algorithm=HMAC_SHA256"}
    signature = RequestValidator(SHARED_KEY).compute_signature(PUBLIC, params, algorithm="HMAC_SHA256")
    request = InboundRequest(
        "POST", PUBLIC, {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature, **settings}, {},
        urlencode(params).encode(),
    )
    await provider(session, twilio, webhook_shared_key=SHARED_KEY).verify_webhook(request)
    with pytest.raises(WebhookVerificationError, match="webhook_shared_key"):
        await provider(session, twilio).verify_webhook(request)
    token_signed = signed_callback(PUBLIC, params, headers=settings)  # signed with the auth token, yet claims a shared key
    with pytest.raises(WebhookVerificationError):
        await provider(session, twilio, webhook_shared_key=SHARED_KEY).verify_webhook(token_signed)


async def test_without_an_auth_token_callbacks_cannot_be_verified(session: aiohttp.ClientSession, twilio: FakeTwilio) -> None:
    config = {"auth_token": None, "api_key_sid": API_KEY_SID, "api_key_secret": API_KEY_SECRET}
    with pytest.raises(WebhookVerificationError, match="auth_token"):
        await provider(session, twilio, **config).verify_webhook(status_request(PUBLIC))


# -- 6. check_credentials ----------------------------------------------------------------------


async def test_check_credentials_names_the_account_and_its_status(session: aiohttp.ClientSession, twilio: FakeTwilio) -> None:
    described = await provider(session, twilio).check_credentials()
    assert described == f"Twilio account {ACCOUNT_SID} (Acme Notifications): active, Full"
    assert twilio.requests[0].path == f"/2010-04-01/Accounts/{ACCOUNT_SID}.json" and twilio.requests[0].authorized


async def test_check_credentials_with_an_api_key_lists_one_message(session: aiohttp.ClientSession, twilio: FakeTwilio) -> None:
    config = {"auth_token": None, "api_key_sid": API_KEY_SID, "api_key_secret": API_KEY_SECRET}
    described = await provider(session, twilio, **config).check_credentials()
    assert described == f"Twilio API key {API_KEY_SID} accepted for account {ACCOUNT_SID}"
    assert twilio.requests[0].path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json" and twilio.requests[0].status == 200
    with pytest.raises(CredentialsRejectedError):
        await provider(session, twilio, **config | {"api_key_secret": "wrong-api-key-secret"}).check_credentials()


async def test_check_credentials_refused_or_suspended_is_a_credentials_error(session: aiohttp.ClientSession, twilio: FakeTwilio) -> None:
    with pytest.raises(CredentialsRejectedError) as refused:
        await provider(session, twilio, auth_token="wrong-token-for-the-check").check_credentials()
    assert "wrong-token-for-the-check" not in str(refused.value)
    twilio.account_status = "suspended"
    with pytest.raises(CredentialsRejectedError, match="suspended"):
        await provider(session, twilio).check_credentials()


# -- 4 and 5. end to end: the HTTP API, the fake, and callbacks on /api/v1/webhooks -----------


@pytest.fixture
async def api(aiohttp_client: Any, tmp_path: Path, clock: FakeClock, twilio: FakeTwilio) -> Api:
    policy_dir = tmp_path / "policies"
    (policy_dir / "secrets").mkdir(parents=True)
    (policy_dir / "secrets" / "twilio-token").write_text(AUTH_TOKEN)
    policy = textwrap.dedent(
        f"""
        tenants:
          acme:
            api_keys: [{key_entry(LIVE_KEY)}]
            channels:
              sms: {{providers: [acme_twilio]}}
              whatsapp: {{providers: [acme_twilio]}}
              voice: {{providers: [acme_twilio]}}
            templates:
              otp:
                channels:
                  whatsapp:
                    provider_template: {{name: otp_code, language: en_US, parameters: ["{{{{ code }}}}"]}}
        providers:
          acme_twilio:
            plugin: twilio
            tenant: acme
            config:
              account_sid: {ACCOUNT_SID}
              auth_token: {{$file: secrets/twilio-token}}
              from: "{FROM}"
              whatsapp_from: "{WHATSAPP_FROM}"
              base_url: {twilio.url}
              status_callback_url: {PUBLIC}
              content_sids: {{"otp_code:en_US": {CONTENT_SID}}}
        """
    )
    (policy_dir / "policy.yaml").write_text(policy)
    return await serve(aiohttp_client, policy_dir, {"twilio": TwilioProvider}, clock)


async def settle(app: web.Application) -> None:
    await app[INBOUND].drain()
    await app[OUTCOMES].drain()


async def send_and_wait(api: Api, channel: str = "sms", **notification: Any) -> dict[str, Any]:
    content = {"channels": [channel], "body": "Your code is 123456"} | notification
    status, accepted = await api.send({"recipient": {"phone": PHONE}, "notification": content})
    assert status == 202, accepted
    return await api.wait_for(accepted["notification_id"], lambda n: n["deliveries"][0]["status"] == "sent")


async def post_callback(api: Api, params: dict[str, str], signed_url: str, *, token: str = AUTH_TOKEN) -> tuple[int, dict[str, Any]]:
    """POST ``params`` to the gateway the way Twilio calls ``signed_url`` (which the gateway sees on loopback, over http)."""
    parts = urlsplit(signed_url)
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Twilio-Signature": RequestValidator(token).compute_signature(signed_url, params),
    }
    response = await api.client.post(f"{parts.path}?{parts.query}" if parts.query else parts.path, data=urlencode(params), headers=headers)
    answer = await response.json() if response.content_type == "application/json" else {"twiml": await response.text()}
    await settle(api.app)
    return response.status, answer


async def test_an_sms_goes_through_the_api_to_twilio(api: Api, twilio: FakeTwilio) -> None:
    found = await send_and_wait(api)
    [request] = twilio.sends
    delivery = found["deliveries"][0]
    assert request.params["To"] == PHONE and request.params["From"] == FROM and request.params["Body"] == "Your code is 123456"
    assert request.params["StatusCallback"] == f"{PUBLIC}?d={delivery['delivery_id']}"
    assert delivery["provider"] == "acme_twilio" and delivery["provider_message_id"] == request.answer["sid"]


async def test_a_whatsapp_template_is_rendered_and_sent_as_content_variables(api: Api, twilio: FakeTwilio) -> None:
    status, accepted = await api.send(
        {"recipient": {"phone": PHONE}, "notification": {"channels": ["whatsapp"], "template_id": "otp", "data": {"code": "424242"}}}
    )
    assert status == 202, accepted
    await api.wait_for(accepted["notification_id"], lambda n: n["deliveries"][0]["status"] == "sent")
    params = twilio.sends[0].params
    assert params["ContentSid"] == CONTENT_SID and json.loads(params["ContentVariables"]) == {"1": "424242"}
    assert (params["To"], params["From"]) == (f"whatsapp:{PHONE}", f"whatsapp:{WHATSAPP_FROM}")


MESSAGE_CALLBACKS = [
    ("queued", None, "sent"),
    ("sent", None, "sent"),
    ("delivered", None, "delivered"),
    ("read", None, "read"),
    ("undelivered", "30003", "failed"),
    ("failed", "30008", "failed"),
    ("canceled", None, "failed"),
]
CALL_CALLBACKS = [
    ("initiated", "sent"), ("ringing", "sent"), ("in-progress", "sent"), ("completed", "delivered"),
    ("busy", "failed"), ("no-answer", "failed"), ("canceled", "failed"), ("failed", "failed"),
]


async def test_message_status_callbacks_move_each_delivery(api: Api, twilio: FakeTwilio) -> None:
    """One real send per status Twilio reports, then its signed callback on the StatusCallback URL it was given."""
    sent = [await send_and_wait(api) for _ in MESSAGE_CALLBACKS]
    for found, request, (vendor_status, error_code, expected) in zip(sent, twilio.sends, MESSAGE_CALLBACKS, strict=True):
        delivery = found["deliveries"][0]
        params = message_status(delivery["provider_message_id"], vendor_status, error_code=error_code, ChannelPrefix="sms")
        status, answer = await post_callback(api, params, request.params["StatusCallback"])
        assert status == 200, answer
        after = (await api.notification(found["notification_id"]))["deliveries"][0]
        assert after["status"] == expected, vendor_status
        if error_code is not None:
            assert error_code in after["last_error"], vendor_status


async def test_call_status_callbacks_move_each_delivery(api: Api, twilio: FakeTwilio) -> None:
    sent = [await send_and_wait(api, "voice", body="Your code is 1 2 3 4 5 6") for _ in CALL_CALLBACKS]
    for found, request, (call_status, expected) in zip(sent, twilio.sends, CALL_CALLBACKS, strict=True):
        sid = found["deliveries"][0]["provider_message_id"]
        assert sid.startswith("CA")
        params = {
            "AccountSid": ACCOUNT_SID, "ApiVersion": "2010-04-01", "CallSid": sid, "CallStatus": call_status, "Direction": "outbound-api",
            "From": FROM, "To": PHONE, "Timestamp": "Tue, 15 Jan 2030 08:00:00 +0000", "CallbackSource": "call-progress-events",
            "SequenceNumber": "0",
        } | ({"CallDuration": "12"} if call_status == "completed" else {})
        status, _ = await post_callback(api, params, request.params["StatusCallback"])
        assert status == 200
        assert (await api.notification(found["notification_id"]))["deliveries"][0]["status"] == expected, call_status


_INBOUND_SIDS = iter(range(1, 1_000_000))


def inbound(body: str, **extra: str) -> dict[str, str]:
    sid = f"SM{next(_INBOUND_SIDS):032x}"  # each inbound message its own SID: Twilio's retries repeat one
    return {
        "ToCountry": "US", "SmsMessageSid": sid, "NumMedia": "0", "SmsSid": sid, "SmsStatus": "received", "Body": body, "To": FROM,
        "NumSegments": "1", "MessageSid": sid, "AccountSid": ACCOUNT_SID, "From": PHONE, "ApiVersion": "2010-04-01",
    } | extra


async def test_advanced_opt_out_signals_opt_the_recipient_out_and_back_in(api: Api) -> None:
    await send_and_wait(api)
    status, answer = await post_callback(api, inbound("ARRET", OptOutType="STOP"), PUBLIC)  # a custom keyword: only Twilio's signal says STOP
    assert status == 200 and answer["twiml"].endswith("<Response/>"), "empty TwiML: Twilio sends no automatic reply"
    status, refused = await api.send({"recipient": {"phone": PHONE}, "notification": {"channels": ["sms"], "body": "hi"}})
    assert status == 422 and refused["error"]["code"] == "recipient_opted_out"
    _, opt_outs = await api.get("/api/v1/opt-outs")
    assert [(item["channel"], item["address"]) for item in opt_outs["items"]] == [("sms", PHONE)]
    await post_callback(api, inbound("DEMARRER", OptOutType="START"), PUBLIC)
    status, _ = await api.send({"recipient": {"phone": PHONE}, "notification": {"channels": ["sms"], "body": "hi"}})
    assert status == 202


async def test_a_whatsapp_reply_is_stored_against_the_message_it_answers(api: Api) -> None:
    status, accepted = await api.send(
        {"recipient": {"phone": PHONE}, "notification": {"channels": ["whatsapp"], "template_id": "otp", "data": {"code": "1"}}}
    )
    assert status == 202
    found = await api.wait_for(accepted["notification_id"], lambda n: n["deliveries"][0]["status"] == "sent")
    sid = found["deliveries"][0]["provider_message_id"]
    params = inbound("Thanks!", From=f"whatsapp:{PHONE}", To=f"whatsapp:{WHATSAPP_FROM}", OriginalRepliedMessageSid=sid, ProfileName="Ada")
    status, _ = await post_callback(api, params, PUBLIC)
    assert status == 200
    _, replies = await api.get("/api/v1/replies")
    [reply] = replies["items"]
    assert (reply["channel"], reply["from"], reply["body"]) == ("whatsapp", PHONE, "Thanks!")
    assert reply["in_reply_to"] == sid and reply["notification_id"] == accepted["notification_id"]


async def test_a_forged_callback_is_401_and_changes_nothing(api: Api, twilio: FakeTwilio) -> None:
    found = await send_and_wait(api)
    params = message_status(found["deliveries"][0]["provider_message_id"], "delivered")
    status, answer = await post_callback(api, params, twilio.sends[0].params["StatusCallback"], token="not-the-auth-token")
    assert status == 401 and answer["error"]["code"] == "webhook_verification_failed"
    assert (await api.notification(found["notification_id"]))["deliveries"][0]["status"] == "sent"


async def test_a_send_refused_because_the_recipient_replied_stop_records_the_opt_out(api: Api, twilio: FakeTwilio) -> None:
    """Twilio's 21610: the number replied STOP to this sender (maybe before Tidings was there to see it)."""
    twilio.refuse_next(21610, message="Attempt to send to unsubscribed recipient")
    status, accepted = await api.send({"recipient": {"phone": PHONE}, "notification": {"channels": ["sms"], "body": "hi"}})
    assert status == 202
    failed = await api.wait_for(accepted["notification_id"], lambda n: n["status"] == "failed")
    assert "21610" in failed["deliveries"][0]["last_error"]
    _, opt_outs = await api.get("/api/v1/opt-outs")
    [opt_out] = opt_outs["items"]
    assert (opt_out["channel"], opt_out["address"]) == ("sms", PHONE) and opt_out["source"].startswith("acme_twilio refused a send")
    [event] = [e for e in await api.app[STORE].list_events(tenant="acme") if e.type == "recipient.opted_out"]
    assert event.data == {"tenant": "acme", "channel": "sms", "address": PHONE, "source": opt_out["source"]}
    status, refused = await api.send({"recipient": {"phone": PHONE}, "notification": {"channels": ["sms"], "body": "hi"}})
    assert status == 422 and refused["error"]["code"] == "recipient_opted_out"
    assert len(twilio.sends) == 1
