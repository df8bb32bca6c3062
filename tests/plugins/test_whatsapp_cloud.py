"""The whatsapp_cloud plugin against a fake Graph API on loopback, and end to end through a real app."""

from __future__ import annotations

import hashlib
import hmac
import json
import textwrap
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from conftest import LIVE_KEY, Api, FakeClock, key_entry, serve
from fakes.whatsapp_cloud import (
    APP_SECRET,
    PHONE_NUMBER_ID,
    RECIPIENT,
    TOKEN,
    VERIFY_TOKEN,
    FakeGraph,
    GraphError,
    callback_request,
    message_callback,
    preference_callback,
    status_callback,
    undeliverable,
)

from gateway import (
    CredentialsRejectedError,
    InboundReply,
    InboundRequest,
    OptOut,
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
from gateway.http.appkeys import INBOUND, OUTCOMES
from plugins.whatsapp_cloud import DEFAULT_API_VERSION, ERRORS, WhatsAppCloudProvider

WA_ID = RECIPIENT.removeprefix("+")
OTP = ProviderTemplate("otp_code", "en_US", ("123456",))


@pytest.fixture
async def graph() -> AsyncIterator[FakeGraph]:
    async with FakeGraph().serving() as fake:
        yield fake


def make_provider(session: aiohttp.ClientSession, graph: FakeGraph, **config: Any) -> WhatsAppCloudProvider:
    settings = {
        "access_token": TOKEN, "phone_number_id": PHONE_NUMBER_ID, "app_secret": APP_SECRET, "verify_token": VERIFY_TOKEN,
        "base_url": graph.url, "timeout_seconds": 2,
    } | config
    context = ProviderContext(session=session, clock=FakeClock(), report=lambda _updates: None)
    return WhatsAppCloudProvider("wa", settings, context)


@pytest.fixture
async def provider(graph: FakeGraph) -> AsyncIterator[WhatsAppCloudProvider]:
    async with aiohttp.ClientSession() as session:
        yield make_provider(session, graph)


def template_message(template: ProviderTemplate = OTP, **fields: Any) -> OutboundMessage:
    return outbound("whatsapp", RECIPIENT, {"phone": RECIPIENT}, provider_template=template, **fields)


# -- 1. the request Meta expects ------------------------------------------------------------------


async def test_a_template_goes_out_as_meta_expects_it(provider: WhatsAppCloudProvider, graph: FakeGraph) -> None:
    receipt = await provider.send(template_message())
    [sent] = graph.sends
    assert sent.path == f"/{DEFAULT_API_VERSION}/{PHONE_NUMBER_ID}/messages"
    assert sent.headers["Authorization"] == f"Bearer {TOKEN}" and sent.headers["Content-Type"] == "application/json"
    assert sent.body == {
        "messaging_product": "whatsapp", "recipient_type": "individual", "to": WA_ID,
        "biz_opaque_callback_data": "dlv_01JCONFORMANCE0000000000000",
        "type": "template",
        "template": {"name": "otp_code", "language": {"code": "en_US"},
                     "components": [{"type": "body", "parameters": [{"type": "text", "text": "123456"}]}]},
    }
    assert receipt.provider_message_id == sent.answer["messages"][0]["id"] and receipt.provider_message_id.startswith("wamid.")
    assert receipt.detail["message_status"] == "accepted" and receipt.detail["wa_id"] == WA_ID


async def test_a_template_without_parameters_has_no_components(provider: WhatsAppCloudProvider, graph: FakeGraph) -> None:
    graph.templates["hello_world"] = 0
    await provider.send(template_message(ProviderTemplate("hello_world", "en_US")))
    assert "components" not in graph.sends[0].body["template"]


async def test_free_form_text_goes_out_inside_the_window_and_is_refused_outside_it(
    provider: WhatsAppCloudProvider, graph: FakeGraph
) -> None:
    text = outbound("whatsapp", RECIPIENT, {"phone": RECIPIENT}, body="Your parcel is at the door")
    with pytest.raises(PermanentDeliveryError) as outside:
        await provider.send(text)
    assert outside.value.code == "outside_window" and outside.value.detail["vendor_code"] == 131047
    graph.open_window(WA_ID)
    await provider.send(text)
    assert graph.sends[-1].body["type"] == "text" and graph.sends[-1].body["text"] == {"body": "Your parcel is at the door"}


async def test_the_tenants_sender_is_the_phone_number_id_sent_from(provider: WhatsAppCloudProvider, graph: FakeGraph) -> None:
    with pytest.raises(PermanentDeliveryError) as unknown:
        await provider.send(template_message(sender=Sender("109999999999999")))
    assert graph.sends[-1].path.endswith("/109999999999999/messages") and unknown.value.detail["vendor_code"] == 100
    with pytest.raises(PermanentDeliveryError) as refused:
        await provider.send(template_message(sender=Sender("+14155550199")))
    assert refused.value.code == "invalid_sender" and len(graph.sends) == 1  # refused before any request


async def test_the_api_version_and_base_url_are_config(graph: FakeGraph) -> None:
    async with aiohttp.ClientSession() as session:
        # YAML reads an unquoted phone number id as an integer: taken as well.
        configured = make_provider(session, graph, api_version="v23.0", base_url=graph.url + "/", phone_number_id=int(PHONE_NUMBER_ID))
        await configured.send(template_message())
        assert await configured.check_credentials()
    assert [request.path.split("?")[0] for request in graph.requests] == [f"/v23.0/{PHONE_NUMBER_ID}/messages", f"/v23.0/{PHONE_NUMBER_ID}"]


# -- 2. the error table ---------------------------------------------------------------------------------

REFUSALS = [
    # (HTTP status, Graph code, error raised, Tidings code)
    (400, 131026, PermanentDeliveryError, "invalid_recipient"),
    (400, 131030, PermanentDeliveryError, "invalid_recipient"),
    (400, 131047, PermanentDeliveryError, "outside_window"),
    (400, 131050, PermanentDeliveryError, "marketing_opted_out"),  # marketing only: not an opt-out of the channel
    (400, 132000, PermanentDeliveryError, "template_parameters_mismatch"),
    (404, 132001, PermanentDeliveryError, "template_not_found"),
    (400, 132015, PermanentDeliveryError, "template_paused"),
    (400, 131051, PermanentDeliveryError, "131051"),
    (400, 131009, PermanentDeliveryError, "131009"),
    (400, 100, PermanentDeliveryError, "100"),
    (401, 190, CredentialsRejectedError, "190"),
    (403, 10, CredentialsRejectedError, "10"),
    (403, 200, CredentialsRejectedError, "200"),
    (403, 294, CredentialsRejectedError, "200"),  # 200-299: all permission errors
    (400, 131031, CredentialsRejectedError, "131031"),
    (400, 130429, TransientDeliveryError, "rate_limited"),
    (400, 131056, TransientDeliveryError, "rate_limited"),
    (400, 131048, TransientDeliveryError, "rate_limited"),
    (400, 4, TransientDeliveryError, "rate_limited"),
    (400, 80007, TransientDeliveryError, "rate_limited"),
    (500, 131000, TransientDeliveryError, "131000"),
    (500, 1, TransientDeliveryError, "1"),
    (503, 2, TransientDeliveryError, "2"),
    (503, 131016, TransientDeliveryError, "131016"),
    (500, 999999, TransientDeliveryError, "999999"),  # unknown code: the HTTP status decides
    (400, 999999, PermanentDeliveryError, "999999"),
]


@pytest.mark.parametrize(("status", "code", "error", "tidings_code"), REFUSALS)
async def test_each_graph_error_is_classified_by_its_code(
    provider: WhatsAppCloudProvider, graph: FakeGraph, status: int, code: int, error: type[Exception], tidings_code: str
) -> None:
    graph.refuse_next(GraphError(status, code, f"(#{code}) refused", "details from Meta"))
    with pytest.raises(error) as caught:
        await provider.send(template_message())
    assert type(caught.value) is error
    assert caught.value.code == tidings_code  # type: ignore[attr-defined]
    assert caught.value.detail["vendor_code"] == code and caught.value.detail["http_status"] == status  # type: ignore[attr-defined]
    assert caught.value.detail["fbtrace_id"] == "AbCdEfGhIjKlMnOp"  # type: ignore[attr-defined]


def test_the_table_covers_the_codes_meta_documents_for_sending() -> None:
    documented = {131026, 131047, 132000, 132001, 131051, 131009, 100, 190, 10, 200, 130429, 131056, 131048, 4, 80007, 131000, 1, 2, 131016}
    assert documented <= set(ERRORS)
    assert {code for code, row in ERRORS.items() if row.code == "rate_limited"} >= {130429, 131056, 131048, 4, 80007}
    assert all(row.transient for code, row in ERRORS.items() if row.code == "rate_limited")


async def test_retry_after_is_honoured_when_meta_sends_one(provider: WhatsAppCloudProvider, graph: FakeGraph) -> None:
    graph.refuse_next(GraphError(429, 130429, "(#130429) Rate limit hit", headers={"Retry-After": "42"}))
    with pytest.raises(TransientDeliveryError) as caught:
        await provider.send(template_message())
    assert caught.value.retry_after == 42.0


async def test_a_refused_token_is_a_credentials_failure_that_never_shows_the_token(graph: FakeGraph) -> None:
    async with aiohttp.ClientSession() as session:
        wrong = make_provider(session, graph, access_token="EAAGnotTheRightToken")
        with pytest.raises(CredentialsRejectedError) as caught:
            await wrong.send(template_message())
    assert graph.sends[0].status == 401
    assert "EAAG" not in str(caught.value) and TOKEN not in repr(wrong) and APP_SECRET not in repr(wrong)


async def test_a_malformed_answer_without_a_message_id_is_transient(graph: FakeGraph) -> None:
    async def no_id(_request: web.Request) -> web.Response:
        return web.json_response({"messaging_product": "whatsapp", "messages": []})

    app = web.Application()
    app.router.add_post("/{version}/{node}/messages", no_id)
    async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession() as session:
        bare = make_provider(session, graph, base_url=str(server.make_url("")).rstrip("/"))
        with pytest.raises(TransientDeliveryError, match="without a message id"):
            await bare.send(template_message())


# -- 3. webhook signatures and the GET handshake ----------------------------------------------------------


def meta_signature(secret: str, body: bytes) -> str:
    """Meta's documented recipe, written out independently of the plugin."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


async def test_a_callback_signed_as_meta_documents_verifies(provider: WhatsAppCloudProvider) -> None:
    body = json.dumps(status_callback("wamid.A", "delivered")).encode()
    headers = {"x-hub-signature-256": meta_signature(APP_SECRET, body)}  # header names are case-insensitive
    await provider.verify_webhook(InboundRequest("POST", "http://gw/api/v1/webhooks/wa", headers, {}, body))


@pytest.mark.parametrize(
    ("how", "request_for"),
    [
        ("signed with another secret", lambda body: callback_request(body, secret="another-app-secret")),
        ("unsigned", lambda body: replace(callback_request(body), headers={"Content-Type": "application/json"})),
        ("a sha1 signature", lambda body: replace(
            callback_request(body), headers={"X-Hub-Signature": "sha1=" + hmac.new(APP_SECRET.encode(), body, hashlib.sha1).hexdigest()})),
        ("the bare hex without sha256=", lambda body: replace(
            callback_request(body), headers={"X-Hub-Signature-256": meta_signature(APP_SECRET, body).removeprefix("sha256=")})),
        ("re-serialised by a proxy", lambda body: replace(callback_request(body), body=json.dumps(json.loads(body), indent=2).encode())),
        ("unicode unescaped by a proxy", lambda body: replace(
            callback_request(body), body=json.dumps(json.loads(body), ensure_ascii=False).encode())),
        ("tampered with", lambda body: replace(callback_request(body), body=body.replace(b'"read"', b'"failed"'))),
    ],
)
async def test_forged_unsigned_and_reserialised_callbacks_are_refused(provider: WhatsAppCloudProvider, how: str, request_for: Any) -> None:
    payload = message_callback(WA_ID, {"type": "text", "text": {"body": "Olá, obrigado! ✅"}})
    payload["entry"][0]["changes"][0]["value"]["statuses"] = [{"id": "wamid.A", "status": "read", "timestamp": "1"}]
    body = json.dumps(payload).encode()  # escaped unicode, as Meta sends and signs it
    await provider.verify_webhook(callback_request(body))
    with pytest.raises(WebhookVerificationError):
        await provider.verify_webhook(request_for(body))


async def test_without_an_app_secret_every_callback_is_refused(graph: FakeGraph) -> None:
    async with aiohttp.ClientSession() as session:
        bare = make_provider(session, graph)
        del bare.config["app_secret"]
        with pytest.raises(WebhookVerificationError, match="no app_secret"):
            await bare.verify_webhook(callback_request(status_callback("wamid.A", "sent")))


def subscription(**query: str) -> InboundRequest:
    return InboundRequest("GET", "http://gw/api/v1/webhooks/wa", {}, query, b"")


async def test_the_subscription_handshake_echoes_the_challenge_only_for_the_right_token(provider: WhatsAppCloudProvider) -> None:
    good = await provider.handshake(subscription(**{"hub.mode": "subscribe", "hub.challenge": "1158201444", "hub.verify_token": VERIFY_TOKEN}))
    assert good is not None and (good.status, good.body, good.content_type) == (200, b"1158201444", "text/plain")
    for query in (
        {"hub.mode": "subscribe", "hub.challenge": "1158201444", "hub.verify_token": "guess"},
        {"hub.mode": "unsubscribe", "hub.challenge": "1158201444", "hub.verify_token": VERIFY_TOKEN},
        {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN},
        {},
    ):
        refused = await provider.handshake(subscription(**query))
        assert refused is not None and refused.status == 403 and b"1158201444" not in refused.body


# -- parsing -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vendor_status", "status"), [("sent", "sent"), ("delivered", "delivered"), ("read", "read"), ("played", "read"), ("failed", "failed")]
)
async def test_each_meta_status_maps_to_a_tidings_status(provider: WhatsAppCloudProvider, vendor_status: str, status: str) -> None:
    callback = status_callback("wamid.A", vendor_status, timestamp=1_800_000_123, delivery_id="dlv_1")
    [update] = await provider.parse_webhook(callback_request(callback))
    assert isinstance(update, StatusUpdate)
    assert (update.provider_message_id, update.status, update.occurred_at, update.error) == ("wamid.A", status, 1_800_000_123.0, None)
    assert update.detail["vendor_status"] == vendor_status and update.delivery_id == "dlv_1"


async def test_a_failed_status_carries_metas_error(provider: WhatsAppCloudProvider) -> None:
    [update] = await provider.parse_webhook(callback_request(status_callback("wamid.A", "failed", errors=undeliverable())))
    assert isinstance(update, StatusUpdate) and update.status == "failed"
    assert update.error == "Message undeliverable (code 131026): Message Undeliverable." and update.detail["vendor_code"] == 131026


async def test_statuses_tidings_does_not_track_are_skipped(provider: WhatsAppCloudProvider) -> None:
    assert await provider.parse_webhook(callback_request(status_callback("wamid.A", "deleted"))) == []


@pytest.mark.parametrize(
    ("content", "body", "kind"),
    [
        ({"type": "text", "text": {"body": "Thanks!"}}, "Thanks!", "text"),
        ({"type": "button", "button": {"payload": "CONFIRM_1001", "text": "Confirm"}}, "Confirm", "button"),
        ({"type": "interactive", "interactive": {"type": "button_reply", "button_reply": {"id": "yes", "title": "Yes"}}}, "Yes", "interactive"),
        ({"type": "interactive", "interactive": {"type": "list_reply", "list_reply": {"id": "r1", "title": "Tomorrow"}}}, "Tomorrow", "interactive"),
        ({"type": "image", "image": {"id": "1479537139650973", "mime_type": "image/jpeg", "caption": "the parcel"}}, "the parcel", "image"),
    ],
)
async def test_inbound_messages_become_replies_linked_to_the_message_answered(
    provider: WhatsAppCloudProvider, content: dict[str, Any], body: str, kind: str
) -> None:
    [reply] = await provider.parse_webhook(callback_request(message_callback(WA_ID, content, context_id="wamid.SENT")))
    assert isinstance(reply, InboundReply)
    assert (reply.sender, reply.body, reply.channel, reply.in_reply_to, reply.detail["type"]) == (RECIPIENT, body, "whatsapp", "wamid.SENT", kind)
    assert reply.occurred_at == 1_800_000_200.0 and reply.provider_message_id is not None
    assert reply.detail["phone_number_id"] == PHONE_NUMBER_ID


async def test_a_reaction_answers_the_message_it_reacts_to(provider: WhatsAppCloudProvider) -> None:
    content = {"type": "reaction", "reaction": {"message_id": "wamid.SENT", "emoji": "👍"}}
    [reply] = await provider.parse_webhook(callback_request(message_callback(WA_ID, content)))
    assert isinstance(reply, InboundReply) and (reply.body, reply.in_reply_to) == ("👍", "wamid.SENT")


async def test_marketing_preferences_are_opt_outs_only_when_configured(provider: WhatsAppCloudProvider, graph: FakeGraph) -> None:
    assert await provider.parse_webhook(callback_request(preference_callback(WA_ID, "stop"))) == []
    async with aiohttp.ClientSession() as session:
        strict = make_provider(session, graph, marketing_stop_opts_out=True)
        [stop] = await strict.parse_webhook(callback_request(preference_callback(WA_ID, "stop")))
        [resume] = await strict.parse_webhook(callback_request(preference_callback(WA_ID, "resume")))
    assert stop == OptOut("whatsapp", RECIPIENT, reason="marketing messages: stop", occurred_at=stop.occurred_at)
    assert isinstance(resume, OptOut) and resume.opted_out is False


# -- 6. the credentials check ---------------------------------------------------------------------------------


async def test_check_credentials_names_the_number_and_a_refusal_is_raised(provider: WhatsAppCloudProvider, graph: FakeGraph) -> None:
    described = await provider.check_credentials()
    assert described is not None and "+1 555-078-3881" in described and "Acme Shop" in described and TOKEN not in described
    [request] = graph.requests
    assert request.path.startswith(f"/{DEFAULT_API_VERSION}/{PHONE_NUMBER_ID}?fields=") and request.headers["Authorization"] == f"Bearer {TOKEN}"
    async with aiohttp.ClientSession() as session:
        with pytest.raises(CredentialsRejectedError):
            await make_provider(session, graph, access_token="EAAGexpired").check_credentials()


# -- 4 and 5. through the real app: send, receipts, replies, opt-outs ------------------------------------


def write_policy(directory: Path, graph: FakeGraph) -> None:
    secrets = directory / "secrets"
    secrets.mkdir(parents=True)
    for name, value in (("wa-token", TOKEN), ("wa-app-secret", APP_SECRET), ("wa-verify-token", VERIFY_TOKEN)):
        (secrets / name).write_text(value)
    (directory / "policy.yaml").write_text(textwrap.dedent(f"""
        tenants:
          acme:
            api_keys: [{key_entry(LIVE_KEY)}]
        providers:
          wa:
            plugin: whatsapp_cloud
            config:
              base_url: {json.dumps(graph.url)}
              phone_number_id: "{PHONE_NUMBER_ID}"
              access_token: {{$file: secrets/wa-token}}
              app_secret: {{$file: secrets/wa-app-secret}}
              verify_token: {{$file: secrets/wa-verify-token}}
              marketing_stop_opts_out: true
        channels:
          whatsapp: {{providers: [wa]}}
        templates:
          otp:
            channels:
              whatsapp:
                provider_template: {{name: otp_code, language: en_US, parameters: ["{{{{ code }}}}"]}}
        """))


@pytest.fixture
async def api(aiohttp_client: Any, tmp_path: Path, clock: FakeClock, graph: FakeGraph) -> Api:
    policies = tmp_path / "policies"
    write_policy(policies, graph)
    return await serve(aiohttp_client, policies, {"whatsapp_cloud": WhatsAppCloudProvider}, clock)


async def sent_otp(api: Api, code: str = "123456") -> tuple[str, str]:
    notification = {"channels": ["whatsapp"], "template_id": "otp", "data": {"code": code}}
    status, accepted = await api.send({"recipient": {"phone": RECIPIENT}, "notification": notification})
    assert status == 202, accepted
    found = await api.wait_for(accepted["notification_id"], lambda n: n["deliveries"][0]["status"] != "queued" and n["status"] != "sending")
    assert found["deliveries"][0]["status"] == "sent", found
    return accepted["notification_id"], found["deliveries"][0]["provider_message_id"]


async def post_callback(api: Api, payload: dict[str, Any], *, secret: str = APP_SECRET) -> int:
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", "X-Hub-Signature-256": meta_signature(secret, body)}
    response = await api.client.post("/api/v1/webhooks/wa", data=body, headers=headers)
    await api.app[INBOUND].drain()
    await api.app[OUTCOMES].drain()
    return response.status


async def test_an_otp_sent_through_the_api_reaches_meta_rendered(api: Api, graph: FakeGraph) -> None:
    notification_id, wamid = await sent_otp(api, "424242")
    [sent] = graph.accepted
    assert sent["wamid"] == wamid and sent["to"] == WA_ID
    assert sent["template"]["components"][0]["parameters"] == [{"type": "text", "text": "424242"}]
    found = await api.notification(notification_id)
    assert sent["biz_opaque_callback_data"] == found["deliveries"][0]["delivery_id"]


@pytest.mark.parametrize(
    ("statuses", "final"),
    [
        (["sent", "delivered"], "delivered"),
        (["sent", "delivered", "read"], "read"),
        (["read", "delivered"], "read"),  # late receipts never move a delivery back
        (["sent", "failed"], "failed"),
    ],
)
async def test_receipts_posted_by_meta_move_the_delivery(api: Api, statuses: list[str], final: str) -> None:
    notification_id, wamid = await sent_otp(api)
    for status in statuses:
        errors = undeliverable() if status == "failed" else None
        assert await post_callback(api, status_callback(wamid, status, recipient=WA_ID, errors=errors)) == 200
    found = await api.notification(notification_id)
    assert found["deliveries"][0]["status"] == final
    if final == "failed":
        assert "Message undeliverable (code 131026)" in found["deliveries"][0]["last_error"]


async def test_a_forged_receipt_is_refused_and_changes_nothing(api: Api) -> None:
    notification_id, wamid = await sent_otp(api)
    assert await post_callback(api, status_callback(wamid, "delivered"), secret="not-the-app-secret") == 401
    assert (await api.notification(notification_id))["deliveries"][0]["status"] == "sent"


async def test_a_reply_is_linked_to_the_otp_it_answers(api: Api) -> None:
    notification_id, wamid = await sent_otp(api)
    assert await post_callback(api, message_callback(WA_ID, {"type": "text", "text": {"body": "Got it"}}, context_id=wamid)) == 200
    status, replies = await api.get("/api/v1/replies")
    assert status == 200
    [reply] = replies["items"]
    assert (reply["from"], reply["body"], reply["channel"], reply["notification_id"]) == (RECIPIENT, "Got it", "whatsapp", notification_id)


async def test_a_marketing_stop_opts_the_number_out_until_resumed(api: Api) -> None:
    await sent_otp(api)
    assert await post_callback(api, preference_callback(WA_ID, "stop")) == 200
    body = {"recipient": {"phone": RECIPIENT}, "notification": {"channels": ["whatsapp"], "template_id": "otp", "data": {"code": "1"}}}
    status, refused = await api.send(body)
    assert status == 422 and refused["error"]["code"] == "recipient_opted_out"
    assert await post_callback(api, preference_callback(WA_ID, "resume")) == 200
    status, _ = await api.send(body)
    assert status == 202


async def test_meta_subscription_check_through_the_webhook_url(api: Api) -> None:
    query = {"hub.mode": "subscribe", "hub.challenge": "1158201444", "hub.verify_token": VERIFY_TOKEN}
    response = await api.client.get("/api/v1/webhooks/wa", params=query)
    assert response.status == 200 and await response.text() == "1158201444" and response.content_type == "text/plain"
    response = await api.client.get("/api/v1/webhooks/wa", params=query | {"hub.verify_token": "guess"})
    assert response.status == 403
