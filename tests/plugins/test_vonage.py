"""The vonage plugin against a fake SMS API on loopback, signatures against Vonage's SDK vectors, and end to end."""

from __future__ import annotations

import json
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp
import pytest
from aiohttp import web
from conftest import LIVE_KEY, Api, FakeClock, Reports, key_entry, serve
from fakes.vonage import API_KEY, API_SECRET, PHONE, SENDER, SIGNATURE_SECRET, WEBHOOK_TOKEN, FakeVonage, form_request, inbound, receipt, signed

from gateway import (
    CredentialsRejectedError,
    DeliveryError,
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
from gateway.conformance import outbound
from gateway.http.appkeys import INBOUND, OUTCOMES, STORE
from plugins.vonage import VonageProvider, sign

NOW = 1_800_000_000.0
HOOK = "https://tidings.example.com/api/v1/webhooks/acme_vonage"


@pytest.fixture
async def vonage() -> AsyncIterator[FakeVonage]:
    async with FakeVonage().serving() as fake:
        yield fake


def provider(session: aiohttp.ClientSession, vonage: FakeVonage | None = None, reports: Reports | None = None, **config: Any) -> VonageProvider:
    base = {"api_key": API_KEY, "api_secret": API_SECRET, "from": SENDER, "timeout_seconds": 2}
    settings = base | ({"base_url": vonage.url} if vonage else {}) | config
    settings = {key: value for key, value in settings.items() if value is not None}
    context = ProviderContext(session=session, clock=FakeClock(NOW), report=reports if reports is not None else Reports())
    return VonageProvider("vn", settings, context)


def sms(body: str = "Your code is 123456", **content: Any) -> OutboundMessage:
    return outbound("sms", PHONE, {"phone": PHONE}, body=body, **content)


# -- 1. what Vonage receives -------------------------------------------------------------------


async def test_an_sms_is_a_form_post_with_key_secret_sender_digits_and_our_client_ref(session: aiohttp.ClientSession, vonage: FakeVonage) -> None:
    message = sms()
    sent = await provider(session, vonage, callback_url=HOOK, webhook_token=WEBHOOK_TOKEN).send(message)
    [request] = vonage.sends
    assert request.content_type == "application/x-www-form-urlencoded"
    assert request.params == {
        "api_key": API_KEY, "api_secret": API_SECRET, "from": SENDER, "to": PHONE.removeprefix("+"), "text": "Your code is 123456",
        "client-ref": message.delivery_id, "callback": f"{HOOK}?token={WEBHOOK_TOKEN}",
    }
    assert request.answer["messages"][0]["status"] == "0"
    assert sent.provider_message_id == message.delivery_id  # every part's receipt carries it as client-ref
    assert sent.detail["message_ids"] == [request.answer["messages"][0]["message-id"]]
    assert sent.detail["remaining_balance"] == "10.28000000" and sent.detail["message_price"] == "0.03330000"


async def test_the_tenants_numeric_sender_wins_and_loses_its_plus(session: aiohttp.ClientSession, vonage: FakeVonage) -> None:
    await provider(session, vonage).send(sms(sender=Sender("+447700900000")))
    assert vonage.sends[0].params["from"] == "447700900000"


async def test_with_signed_callbacks_the_callback_url_carries_no_token(session: aiohttp.ClientSession, vonage: FakeVonage) -> None:
    await provider(session, vonage, callback_url=HOOK, signature_secret=SIGNATURE_SECRET, webhook_token=WEBHOOK_TOKEN).send(sms())
    assert vonage.sends[0].params["callback"] == HOOK


@pytest.mark.parametrize(
    ("text", "unicode"),
    [("Your code is 123456", False), ("Café à 10€ {ok} [1]", False), ("Код: 123456", True), ("Done ✅", True), ("你好", True)],
)
async def test_text_outside_the_gsm_alphabet_is_sent_as_unicode(
    session: aiohttp.ClientSession, vonage: FakeVonage, text: str, unicode: bool
) -> None:
    await provider(session, vonage).send(sms(text))
    assert (vonage.sends[0].params.get("type") == "unicode") is unicode
    assert vonage.sends[0].params["text"] == text


async def test_a_long_message_is_split_and_every_parts_id_is_kept(session: aiohttp.ClientSession, vonage: FakeVonage) -> None:
    message = sms("x" * 400)
    sent = await provider(session, vonage).send(message)
    parts = vonage.sends[0].answer["messages"]
    assert len(parts) == 3
    assert sent.provider_message_id == message.delivery_id
    assert sent.detail["message_ids"] == [part["message-id"] for part in parts] and sent.detail["message_count"] == "3"


async def test_signed_requests_carry_a_signature_instead_of_the_secret(session: aiohttp.ClientSession, vonage: FakeVonage) -> None:
    config = {"signature_secret": SIGNATURE_SECRET, "sign_requests": True}
    await provider(session, vonage, **config).send(sms())
    params = vonage.sends[0].params
    assert "api_secret" not in params and params["timestamp"] == str(int(NOW))
    assert params["sig"] == sign({k: v for k, v in params.items() if k != "sig"}, SIGNATURE_SECRET)
    assert vonage.sends[0].answer["messages"][0]["status"] == "0"  # the fake checked it
    with pytest.raises(CredentialsRejectedError, match="signature"):
        await provider(session, vonage, **config | {"signature_secret": "not-the-signature-secret"}).send(sms())
    assert vonage.sends[1].answer["messages"][0]["status"] == "14"


async def test_no_sender_is_permanent_and_vonage_is_not_called(session: aiohttp.ClientSession, vonage: FakeVonage) -> None:
    with pytest.raises(PermanentDeliveryError) as caught:
        await provider(session, vonage, **{"from": None}).send(sms())
    assert caught.value.code == "no_sender" and vonage.requests == []


# -- 2. errors: HTTP 200 with a failure status, and HTTP statuses ------------------------------


@pytest.mark.parametrize(
    ("status", "error", "code"),
    [
        ("1", TransientDeliveryError, "rate_limited"),
        ("2", PermanentDeliveryError, "invalid_request"),
        ("3", PermanentDeliveryError, "invalid_parameters"),
        ("4", CredentialsRejectedError, None),
        ("5", TransientDeliveryError, "5"),
        ("6", PermanentDeliveryError, "invalid_recipient"),
        ("7", PermanentDeliveryError, "recipient_barred"),
        ("8", CredentialsRejectedError, None),
        ("9", TransientDeliveryError, "quota_exceeded"),
        ("10", TransientDeliveryError, "rate_limited"),
        ("11", CredentialsRejectedError, None),
        ("12", PermanentDeliveryError, "body_too_long"),
        ("14", CredentialsRejectedError, None),
        ("15", PermanentDeliveryError, "invalid_sender"),
        ("22", PermanentDeliveryError, "invalid_parameters"),
        ("23", PermanentDeliveryError, "invalid_callback_url"),
        ("29", PermanentDeliveryError, "unverified_recipient"),
        ("32", CredentialsRejectedError, None),
        ("33", PermanentDeliveryError, "invalid_recipient"),
        ("99", PermanentDeliveryError, "99"),
    ],
)
async def test_a_failure_status_in_an_http_200_is_classified(
    session: aiohttp.ClientSession, vonage: FakeVonage, status: str, error: type[DeliveryError], code: str | None
) -> None:
    vonage.refuse_next(status, "Refused")
    with pytest.raises(error) as caught:
        await provider(session, vonage).send(sms())
    assert type(caught.value) is error and vonage.sends[0].status == 200
    assert caught.value.detail == {"vendor_code": status, "http_status": 200}
    if code is not None:
        assert caught.value.code == code


async def test_wrong_credentials_are_a_credentials_error_that_shows_no_secret(session: aiohttp.ClientSession, vonage: FakeVonage) -> None:
    with pytest.raises(CredentialsRejectedError) as caught:
        await provider(session, vonage, api_secret="wrong-secret-that-must-not-leak").send(sms())
    assert vonage.sends[0].answer == {"message-count": "1", "messages": [{"status": "4", "error-text": "Bad Credentials"}]}
    assert "wrong-secret-that-must-not-leak" not in str(caught.value) + repr(caught.value.detail)


@pytest.mark.parametrize(
    ("http_status", "headers", "error", "retry_after"),
    [
        (429, {"Retry-After": "3"}, TransientDeliveryError, 3.0),
        (500, {}, TransientDeliveryError, None),
        (503, {"Retry-After": "60"}, TransientDeliveryError, 60.0),
        (401, {}, CredentialsRejectedError, None),
        (400, {}, PermanentDeliveryError, None),
    ],
)
async def test_http_statuses_are_classified(
    session: aiohttp.ClientSession, vonage: FakeVonage, http_status: int, headers: dict[str, str], error: type[DeliveryError],
    retry_after: float | None,
) -> None:
    vonage.http_next(http_status, headers)
    with pytest.raises(error) as caught:
        await provider(session, vonage).send(sms())
    assert type(caught.value) is error
    if isinstance(caught.value, TransientDeliveryError):
        assert caught.value.retry_after == retry_after


async def test_a_partly_sent_long_message_is_classified_by_the_failed_part_and_names_the_sent_ones(
    session: aiohttp.ClientSession, vonage: FakeVonage
) -> None:
    vonage.answer_next({
        "message-count": "2",
        "messages": [
            {"to": "447700900001", "message-id": "3295d748-4e14-4681-af78-166dca3c5aab", "status": "0", "remaining-balance": "38.07"},
            {"status": "1", "error-text": "Throttled"},
        ],
    })
    with pytest.raises(TransientDeliveryError) as caught:
        await provider(session, vonage).send(sms("x" * 300))
    assert caught.value.code == "rate_limited"
    assert caught.value.detail["accepted_message_ids"] == ["3295d748-4e14-4681-af78-166dca3c5aab"]


async def test_a_200_without_messages_is_transient(session: aiohttp.ClientSession, vonage: FakeVonage) -> None:
    vonage.answer_next({"unexpected": True})
    with pytest.raises(TransientDeliveryError):
        await provider(session, vonage).send(sms())


# -- 3. signatures -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "expected"),
    [  # the vectors of Vonage's own Python SDK (tests/test_client.py): a=1, b=2, timestamp=1461605396, secret "secret"
        ("md5hash", "6af838ef94998832dbfc29020b564830"),
        ("md5", "c15c21ced558c93a226c305f58f902f2"),
        ("sha1", "3e19a4e6880fdc2c1426bfd0587c98b9532f0210"),
        ("sha256", "a321e824b9b816be7c3f28859a31749a098713d39f613c80d455bbaffae1cd24"),
        ("sha512", "812a18f76680fa0fe1b8bd9ee1625466ceb1bd96242e4d050d2cfd9a7b40166c63ed26ec9702168781b6edcf1633db8ff95af9341701004eec3fcf9550572ee8"),
    ],
)
def test_the_signature_matches_vonages_sdk_vectors(method: str, expected: str) -> None:
    assert sign({"a": "1", "b": "2", "timestamp": "1461605396"}, "secret", method) == expected
    assert sign({"b": "2", "a": "1", "timestamp": "1461605396", "sig": expected}, "secret", method) == expected  # order and sig ignored


def test_ampersands_and_equals_in_values_are_signed_as_underscores() -> None:
    assert sign({"text": "a&b=c", "timestamp": "1"}, "secret") == sign({"text": "a_b_c", "timestamp": "1"}, "secret")
    assert sign({"text": "a&b=c", "timestamp": "1"}, "secret") != sign({"text": "a b c", "timestamp": "1"}, "secret")


@pytest.mark.parametrize("method", ["md5hash", "md5", "sha1", "sha256", "sha512"])
async def test_a_signed_callback_verifies_with_each_method(session: aiohttp.ClientSession, method: str) -> None:
    params = signed(receipt("0B00000127FDBC63", "delivered", client_ref="dlv_1"), NOW - 30, method=method)
    assert params["sig"].isupper()  # Vonage sends upper-case hex
    await provider(session, signature_secret=SIGNATURE_SECRET, signature_method=method).verify_webhook(form_request(HOOK, params))


def _signed_with_timestamp(params: dict[str, str], timestamp: str) -> dict[str, str]:
    with_time = params | {"timestamp": timestamp}
    return with_time | {"sig": sign(with_time, SIGNATURE_SECRET)}


def json_request(params: dict[str, str], **json_override: Any) -> InboundRequest:
    return InboundRequest("POST", HOOK, {"Content-Type": "application/json"}, {}, json.dumps(params | json_override).encode())


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda: form_request(HOOK, signed(receipt("M1", "delivered"), NOW, secret="not-the-secret")), id="wrong secret"),
        pytest.param(lambda: form_request(HOOK, receipt("M1", "delivered")), id="unsigned"),
        pytest.param(lambda: form_request(HOOK, signed(receipt("M1", "delivered"), NOW - 301)), id="stale"),
        pytest.param(lambda: form_request(HOOK, signed(receipt("M1", "delivered"), NOW + 301)), id="from the future"),
        pytest.param(lambda: form_request(HOOK, signed(receipt("M1", "failed"), NOW) | {"status": "delivered"}), id="changed value"),
        pytest.param(lambda: form_request(HOOK, signed(receipt("M1", "delivered"), NOW) | {"client-ref": "dlv_other"}), id="added parameter"),
        pytest.param(lambda: form_request(HOOK, signed(receipt("M1", "delivered"), NOW, method="sha256")), id="another method"),
        pytest.param(lambda: json_request(signed(receipt("M1", "failed"), NOW), status="delivered"), id="changed JSON value"),
        pytest.param(lambda: form_request(HOOK, {k: v for k, v in signed(receipt("M1", "delivered"), NOW).items() if k != "timestamp"}), id="no timestamp"),
        pytest.param(lambda: form_request(HOOK, _signed_with_timestamp(receipt("M1", "delivered"), "nan")), id="not-a-number timestamp"),
    ],
)
async def test_forged_stale_or_altered_callbacks_are_refused(session: aiohttp.ClientSession, forge: Any) -> None:
    with pytest.raises(WebhookVerificationError):
        await provider(session, signature_secret=SIGNATURE_SECRET).verify_webhook(forge())


async def test_a_json_callback_is_verified_and_read_like_a_form_one(session: aiohttp.ClientSession) -> None:
    vonage_provider = provider(session, signature_secret=SIGNATURE_SECRET)
    request = json_request(signed(receipt("0B00000127FDBC63", "delivered", client_ref="dlv_1"), NOW))
    await vonage_provider.verify_webhook(request)
    [update] = await vonage_provider.parse_webhook(request)
    assert isinstance(update, StatusUpdate) and (update.provider_message_id, update.status) == ("dlv_1", "delivered")


async def test_without_a_signature_secret_the_url_token_is_required(session: aiohttp.ClientSession) -> None:
    token_provider = provider(session, webhook_token=WEBHOOK_TOKEN)
    params = receipt("M1", "delivered")
    await token_provider.verify_webhook(_with_query(form_request(HOOK, params), token=WEBHOOK_TOKEN))
    for query in ({"token": "not-the-token-0123456789"}, {}):
        with pytest.raises(WebhookVerificationError, match="token"):
            await token_provider.verify_webhook(_with_query(form_request(HOOK, params), **query))
    with pytest.raises(WebhookVerificationError, match="signature_secret or webhook_token"):
        await provider(session).verify_webhook(_with_query(form_request(HOOK, params), token=WEBHOOK_TOKEN))


def _with_query(request: InboundRequest, **query: str) -> InboundRequest:
    url = f"{request.url}?{urlencode(query)}" if query else request.url
    return InboundRequest(request.method, url, request.headers, query, request.body)


# -- reading callbacks -------------------------------------------------------------------------


async def test_a_receipt_without_client_ref_falls_back_to_the_message_id_and_another_accounts_is_ignored(session: aiohttp.ClientSession) -> None:
    vonage_provider = provider(session, webhook_token=WEBHOOK_TOKEN)
    [update] = await vonage_provider.parse_webhook(form_request(HOOK, receipt("0B00000127FDBC63", "expired", err_code="1")))
    assert isinstance(update, StatusUpdate)
    assert (update.provider_message_id, update.status) == ("0B00000127FDBC63", "failed")
    assert update.error == "Vonage receipt expired (err-code 1: unknown: not delivered, no reason could be determined)"
    assert update.occurred_at == 1_577_887_200.0  # scts 2001011400: 2020-01-01 14:00 UTC
    assert await vonage_provider.parse_webhook(form_request(HOOK, receipt("M2", "delivered") | {"api-key": "other123"})) == []


async def test_an_inbound_sms_is_a_reply_from_the_e164_sender(session: aiohttp.ClientSession) -> None:
    [reply] = await provider(session, webhook_token=WEBHOOK_TOKEN).parse_webhook(form_request(HOOK, inbound("Stop please")))
    assert isinstance(reply, InboundReply)
    assert (reply.sender, reply.body, reply.channel, reply.provider_message_id) == (PHONE, "Stop please", "sms", "0A0000000123ABCD1")
    assert reply.detail["keyword"] == "STOP" and reply.detail["to"] == "+447700900000"


# -- 6. check_credentials ----------------------------------------------------------------------


async def test_check_credentials_reports_the_balance_using_basic_auth(session: aiohttp.ClientSession, vonage: FakeVonage) -> None:
    described = await provider(session, vonage).check_credentials()
    assert described == f"Vonage account {API_KEY}: balance 10.28 EUR"
    [request] = vonage.requests
    assert request.path == "/account/get-balance" and request.params == {}  # the secret is not in the URL
    assert request.headers["Authorization"] == aiohttp.encode_basic_auth(API_KEY, API_SECRET)


async def test_check_credentials_refused_is_a_credentials_error(session: aiohttp.ClientSession, vonage: FakeVonage) -> None:
    with pytest.raises(CredentialsRejectedError) as caught:
        await provider(session, vonage, api_secret="wrong-secret-for-the-check").check_credentials()
    assert vonage.requests[0].status == 401 and "wrong-secret-for-the-check" not in str(caught.value)


# -- 4 and 5. end to end: the HTTP API, the fake, and callbacks on /api/v1/webhooks -----------


@pytest.fixture
async def api(aiohttp_client: Any, tmp_path: Path, clock: FakeClock, vonage: FakeVonage) -> Api:
    policy_dir = tmp_path / "policies"
    (policy_dir / "secrets").mkdir(parents=True)
    (policy_dir / "secrets" / "vonage-secret").write_text(API_SECRET)
    (policy_dir / "secrets" / "vonage-signature").write_text(SIGNATURE_SECRET)
    policy = textwrap.dedent(
        f"""
        tenants:
          acme:
            api_keys: [{key_entry(LIVE_KEY)}]
            channels:
              sms: {{providers: [acme_vonage]}}
        providers:
          acme_vonage:
            plugin: vonage
            tenant: acme
            config:
              api_key: {API_KEY}
              api_secret: {{$file: secrets/vonage-secret}}
              signature_secret: {{$file: secrets/vonage-signature}}
              signature_method: sha256
              from: {SENDER}
              base_url: {vonage.url}
              callback_url: {HOOK}
        """
    )
    (policy_dir / "policy.yaml").write_text(policy)
    return await serve(aiohttp_client, policy_dir, {"vonage": VonageProvider}, clock)


async def settle(app: web.Application) -> None:
    await app[INBOUND].drain()
    await app[OUTCOMES].drain()


async def send_and_wait(api: Api, body: str = "Your code is 123456") -> dict[str, Any]:
    status, accepted = await api.send({"recipient": {"phone": PHONE}, "notification": {"channels": ["sms"], "body": body}})
    assert status == 202, accepted
    return await api.wait_for(accepted["notification_id"], lambda n: n["deliveries"][0]["status"] == "sent")


async def post_callback(api: Api, params: dict[str, str], *, as_json: bool = False) -> tuple[int, dict[str, Any]]:
    """POST ``params`` signed now (sha256, as the instance is configured) the way Vonage posts them, form or JSON."""
    body = signed(params, NOW, method="sha256")  # NOW is the app's FakeClock time
    path = urlsplit(HOOK).path
    if as_json:
        response = await api.client.post(path, json=body)
    else:
        response = await api.client.post(path, data=urlencode(body), headers={"Content-Type": "application/x-www-form-urlencoded"})
    answer = await response.json()
    await settle(api.app)
    return response.status, answer


async def test_an_sms_goes_through_the_api_to_vonage_and_the_delivery_id_is_the_client_ref(api: Api, vonage: FakeVonage) -> None:
    found = await send_and_wait(api)
    [request] = vonage.sends
    delivery = found["deliveries"][0]
    assert request.params["client-ref"] == delivery["delivery_id"] == delivery["provider_message_id"]
    assert (request.params["to"], request.params["from"], request.params["callback"]) == (PHONE.removeprefix("+"), SENDER, HOOK)
    [attempt] = delivery["attempts"]
    assert attempt["detail"]["message_ids"] == [request.answer["messages"][0]["message-id"]]


RECEIPTS = [
    ("accepted", "0", "sent"),
    ("buffered", "0", "sent"),
    ("unknown", "1", "sent"),
    ("delivered", "0", "delivered"),
    ("expired", "1", "failed"),
    ("failed", "3", "failed"),
    ("rejected", "6", "failed"),
]


async def test_delivery_receipts_move_each_delivery(api: Api, vonage: FakeVonage) -> None:
    """One real send per receipt status, then its signed receipt: as form fields, and as JSON for every other one."""
    sent = [await send_and_wait(api) for _ in RECEIPTS]
    for number, (found, request, (vendor_status, err_code, expected)) in enumerate(zip(sent, vonage.sends, RECEIPTS, strict=True)):
        message_id = request.answer["messages"][0]["message-id"]
        params = receipt(message_id, vendor_status, client_ref=request.params["client-ref"], err_code=err_code)
        status, answer = await post_callback(api, params, as_json=number % 2 == 1)
        assert status == 200, answer
        after = (await api.notification(found["notification_id"]))["deliveries"][0]
        assert after["status"] == expected, vendor_status
        if expected == "failed":
            assert f"err-code {err_code}" in after["last_error"], vendor_status


async def test_each_parts_receipt_matches_and_a_failed_part_fails_the_delivery(api: Api, vonage: FakeVonage) -> None:
    whole, broken = await send_and_wait(api, "a" * 400), await send_and_wait(api, "b" * 400)
    for found, request, statuses in zip((whole, broken), vonage.sends, (["delivered"] * 3, ["delivered", "failed", "delivered"]), strict=True):
        parts = request.answer["messages"]
        assert len(parts) == 3
        for part, status in zip(parts, statuses, strict=True):
            await post_callback(api, receipt(part["message-id"], status, client_ref=request.params["client-ref"], err_code="0" if status == "delivered" else "4"))
        found["final"] = (await api.notification(found["notification_id"]))["deliveries"][0]["status"]
    assert (whole["final"], broken["final"]) == ("delivered", "failed")


async def test_stop_and_start_by_sms_opt_the_recipient_out_and_back_in(api: Api) -> None:
    await send_and_wait(api)
    status, _ = await post_callback(api, inbound("STOP", message_id="0A0000000123ABCD1"), as_json=True)
    assert status == 200
    status, refused = await api.send({"recipient": {"phone": PHONE}, "notification": {"channels": ["sms"], "body": "hi"}})
    assert status == 422 and refused["error"]["code"] == "recipient_opted_out"
    _, replies = await api.get("/api/v1/replies")
    assert [(item["channel"], item["from"], item["body"]) for item in replies["items"]] == [("sms", PHONE, "STOP")]
    await post_callback(api, inbound("START", message_id="0A0000000123ABCD2"))
    status, _ = await api.send({"recipient": {"phone": PHONE}, "notification": {"channels": ["sms"], "body": "hi"}})
    assert status == 202


async def test_callbacks_by_get_are_stored_verified_and_processed_like_posted_ones(api: Api, vonage: FakeVonage) -> None:
    """GET is the Vonage dashboard's default webhook method, for receipts and inbound SMS alike."""
    found = await send_and_wait(api)
    request = vonage.sends[0]
    params = receipt(request.answer["messages"][0]["message-id"], "delivered", client_ref=request.params["client-ref"])
    forged = signed(params, NOW, secret="not-the-secret", method="sha256")
    response = await api.client.get(f"{urlsplit(HOOK).path}?{urlencode(forged)}")
    assert response.status == 401
    rejected = (await response.json())["error"]["message"]
    await settle(api.app)
    assert (await api.notification(found["notification_id"]))["deliveries"][0]["status"] == "sent"
    response = await api.client.get(f"{urlsplit(HOOK).path}?{urlencode(signed(params, NOW, method='sha256'))}")
    assert response.status == 200
    stored = await api.app[STORE].get_inbound((await response.json())["received"])
    assert stored is not None and stored.request.method == "GET" and stored.outcome in {"received", "processed"}
    await settle(api.app)
    assert (await api.notification(found["notification_id"]))["deliveries"][0]["status"] == "delivered"
    response = await api.client.get(f"{urlsplit(HOOK).path}?{urlencode(signed(inbound('STOP'), NOW, method='sha256'))}")
    assert response.status == 200
    await settle(api.app)
    _, replies = await api.get("/api/v1/replies")
    assert [(item["from"], item["body"]) for item in replies["items"]] == [(PHONE, "STOP")]
    status, refused = await api.send({"recipient": {"phone": PHONE}, "notification": {"channels": ["sms"], "body": "hi"}})
    assert status == 422 and refused["error"]["code"] == "recipient_opted_out"
    assert "stored as" in rejected


async def test_a_token_in_the_callback_url_is_not_stored_in_clear(api: Api, vonage: FakeVonage) -> None:
    found = await send_and_wait(api)
    request = vonage.sends[0]
    params = receipt(request.answer["messages"][0]["message-id"], "delivered", client_ref=request.params["client-ref"])
    response = await api.client.get(f"{urlsplit(HOOK).path}?{urlencode(signed(params, NOW, method='sha256') | {'token': 'tok-visible'})}")
    stored = await api.app[STORE].get_inbound((await response.json())["received"])
    assert stored is not None and "tok-visible" not in stored.request.target and "token=%5Bredacted%5D" in stored.request.target
    await settle(api.app)
    assert (await api.notification(found["notification_id"]))["deliveries"][0]["status"] == "delivered"


async def test_a_forged_receipt_is_401_and_changes_nothing(api: Api, vonage: FakeVonage) -> None:
    found = await send_and_wait(api)
    request = vonage.sends[0]
    params = signed(receipt("X", "delivered", client_ref=request.params["client-ref"]), NOW, secret="not-the-secret", method="sha256")
    response = await api.client.post(urlsplit(HOOK).path, data=urlencode(params), headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status == 401 and (await response.json())["error"]["code"] == "webhook_verification_failed"
    await settle(api.app)
    assert (await api.notification(found["notification_id"]))["deliveries"][0]["status"] == "sent"

