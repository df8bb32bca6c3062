"""The sendgrid plugin against a fake v3 API on loopback, its Event Webhook checked with SendGrid's own helper."""

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
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from fakes.sendgrid import API_KEY, FakeSendGrid
from sendgrid.helpers.eventwebhook import EventWebhook
from sendgrid.helpers.eventwebhook.eventwebhook_header import EventWebhookHeader

from gateway import (
    CredentialsRejectedError,
    InboundRequest,
    OptOut,
    PermanentDeliveryError,
    ProviderContext,
    Sender,
    StatusUpdate,
    TransientDeliveryError,
    WebhookVerificationError,
)
from gateway.conformance import outbound
from gateway.http.appkeys import INBOUND, OUTCOMES
from plugins.sendgrid import DELIVERY_ID_ARG, SIGNATURE_HEADER, TIMESTAMP_HEADER, SendGridProvider

TO = "ada@example.com"
DER, SPKI = Encoding.DER, PublicFormat.SubjectPublicKeyInfo
DELIVERY = "dlv_01JCONFORMANCE0000000000000"


@pytest.fixture
async def sendgrid() -> AsyncIterator[FakeSendGrid]:
    async with FakeSendGrid().serving() as fake:
        yield fake


def provider(session: aiohttp.ClientSession, sendgrid: FakeSendGrid, clock: FakeClock | None = None, **config: Any) -> SendGridProvider:
    settings = {"api_key": API_KEY, "from": "no-reply@tidings.example", "base_url": sendgrid.url, "webhook_public_key": sendgrid.public_key,
                "timeout_seconds": 2} | config
    return SendGridProvider("sg", settings, ProviderContext(session=session, clock=clock or FakeClock(), report=lambda _u: None))


def message(**content: Any) -> Any:
    content.setdefault("subject", "Your code")
    content.setdefault("body", "Your code is 123456")
    return outbound("email", content.pop("to", TO), {"email": TO}, **content)


# -- the request --------------------------------------------------------------------------------


async def test_posts_the_v3_body_with_a_bearer_key_and_takes_x_message_id(session: aiohttp.ClientSession, sendgrid: FakeSendGrid) -> None:
    sender = Sender("orders@acme.example", "ACME Orders", "help@acme.example")
    receipt = await provider(session, sendgrid).send(message(html="<p>Your code is <b>123456</b></p>", sender=sender))
    [request] = sendgrid.requests
    assert request.headers["Authorization"] == f"Bearer {API_KEY}" and request.headers["Content-Type"] == "application/json"
    assert request.payload == {
        "personalizations": [{"to": [{"email": TO}]}],
        "from": {"email": "orders@acme.example", "name": "ACME Orders"},
        "reply_to": {"email": "help@acme.example"},
        "subject": "Your code",
        "content": [{"type": "text/plain", "value": "Your code is 123456"}, {"type": "text/html", "value": "<p>Your code is <b>123456</b></p>"}],
        "custom_args": {DELIVERY_ID_ARG: DELIVERY},
    }
    assert request.status == 202 and receipt.provider_message_id == request.message_id and len(receipt.provider_message_id) == 22


async def test_the_configured_sender_and_an_html_only_message(session: aiohttp.ClientSession, sendgrid: FakeSendGrid) -> None:
    sg = provider(session, sendgrid, from_name="Tidings", reply_to="ops@tidings.example")
    await sg.send(message(body=None, html="<h1>Hi</h1>", subject="Ünïcödé ✓"))
    payload = sendgrid.requests[0].payload
    assert payload["from"] == {"email": "no-reply@tidings.example", "name": "Tidings"} and payload["reply_to"] == {"email": "ops@tidings.example"}
    assert payload["content"] == [{"type": "text/html", "value": "<h1>Hi</h1>"}] and payload["subject"] == "Ünïcödé ✓"


# -- what SendGrid's answers mean ---------------------------------------------------------------


def sg_error(message: str, field: str | None = None) -> dict[str, Any]:
    return {"message": message, "field": field, "help": None}


@pytest.mark.parametrize(
    ("status", "errors", "headers", "error", "code", "retry_after"),
    [
        (400, [sg_error("Invalid type. Expected: string, given: integer.", "personalizations.0.headers")], {}, PermanentDeliveryError, "bad_request", None),
        (400, [sg_error("Does not contain a valid address.", "personalizations.0.to.0.email")], {}, PermanentDeliveryError, "invalid_recipient", None),
        (413, [], {}, PermanentDeliveryError, "message_too_large", None),  # its proxy's HTML page
        (413, [{"message": "content too large", "field": "null"}], {}, PermanentDeliveryError, "message_too_large", None),
        (429, [sg_error("too many requests")], {"Retry-After": "7"}, TransientDeliveryError, "rate_limited", 7.0),
        (429, [sg_error("too many requests")], {"X-RateLimit-Reset": str(1_800_000_030)}, TransientDeliveryError, "rate_limited", 30.0),
        (500, [sg_error("internal error")], {}, TransientDeliveryError, "http_500", None),
        (503, [], {"Retry-After": "120"}, TransientDeliveryError, "http_503", 120.0),
        (403, [sg_error("access forbidden")], {}, CredentialsRejectedError, "credentials_rejected", None),
    ],
)
async def test_answers_are_classified(
    session: aiohttp.ClientSession, sendgrid: FakeSendGrid, status: int, errors: list[dict[str, Any]], headers: dict[str, str],
    error: type[Exception], code: str, retry_after: float | None,
) -> None:
    sg = provider(session, sendgrid)
    sendgrid.script(status, errors, headers, raw=b"<html><h1>413 Request Entity Too Large</h1></html>" if status == 413 and not errors else None)
    with pytest.raises(error) as caught:
        await sg.send(message())
    assert caught.value.code == code  # type: ignore[attr-defined]
    assert caught.value.detail["http_status"] == status  # type: ignore[attr-defined]
    assert getattr(caught.value, "retry_after", None) == retry_after
    if errors and not isinstance(caught.value, CredentialsRejectedError):
        assert errors[0]["message"] in str(caught.value)
    assert API_KEY not in str(caught.value)
    await sg.send(message())  # the fault was for one request


async def test_sendgrids_own_validation_errors(session: aiohttp.ClientSession, sendgrid: FakeSendGrid) -> None:
    sg = provider(session, sendgrid)
    with pytest.raises(PermanentDeliveryError) as bad_to:
        await sg.send(message(to="ada@@example"))
    assert bad_to.value.code == "invalid_recipient" and bad_to.value.detail["field"] == "personalizations.0.to.0.email"
    with pytest.raises(PermanentDeliveryError) as no_subject:
        await sg.send(message(subject=None))
    assert no_subject.value.code == "missing_content" and "subject is required" in str(no_subject.value)
    with pytest.raises(CredentialsRejectedError) as unverified:
        await sg.send(message(sender=Sender("someone@unverified.example")))
    assert unverified.value.code == "sender_not_verified" and unverified.value.detail["field"] == "from" and "verified Sender Identity" in str(unverified.value)
    assert [r.status for r in sendgrid.requests] == [400, 400, 403] and sendgrid.accepted == {}


async def test_a_wrong_key_is_a_credentials_rejection(session: aiohttp.ClientSession, sendgrid: FakeSendGrid) -> None:
    with pytest.raises(CredentialsRejectedError) as caught:
        await provider(session, sendgrid, api_key="SG.wrong.key").send(message())
    assert caught.value.detail["http_status"] == 401 and "SG.wrong.key" not in str(caught.value)


async def test_a_held_request_times_out_as_transient(session: aiohttp.ClientSession, sendgrid: FakeSendGrid) -> None:
    sendgrid.fail_next("timeout")
    with pytest.raises(TransientDeliveryError) as caught:
        await provider(session, sendgrid, timeout_seconds=0.2).send(message())
    assert caught.value.code == "unreachable" and "timed out" in str(caught.value)


# -- Event Webhook signatures -------------------------------------------------------------------


def request(body: bytes, headers: dict[str, str]) -> InboundRequest:
    return InboundRequest(method="POST", url="/api/v1/webhooks/sg", headers=headers, query={}, body=body)


def reference_accepts(sendgrid: FakeSendGrid, body: bytes, headers: dict[str, str]) -> bool:
    """SendGrid's own verifier (which checks no timestamp age)."""
    verifier = EventWebhook(sendgrid.public_key)
    return bool(verifier.verify_signature(body.decode(), headers[EventWebhookHeader.SIGNATURE], headers[EventWebhookHeader.TIMESTAMP]))


async def test_a_genuine_callback_verifies_with_ours_and_sendgrids_helper(session: aiohttp.ClientSession, sendgrid: FakeSendGrid) -> None:
    clock = FakeClock()
    body = json.dumps([sendgrid.event("W4UbzYbhTUyQ9Nc5WLkAvA", "delivered")], separators=(",", ":")).encode() + b"\r\n"
    headers = sendgrid.signed(body, int(clock.now()))
    assert reference_accepts(sendgrid, body, headers)
    await provider(session, sendgrid, clock).verify_webhook(request(body, headers))
    lowered = {name.lower(): value for name, value in headers.items()}  # header names arrive in any case
    await provider(session, sendgrid, clock).verify_webhook(request(body, lowered))
    pem = f"-----BEGIN PUBLIC KEY-----\n{sendgrid.public_key}\n-----END PUBLIC KEY-----\n"
    await provider(session, sendgrid, clock, webhook_public_key=pem).verify_webhook(request(body, headers))


def _forged(sendgrid: FakeSendGrid, body: bytes, at: int) -> tuple[bytes, dict[str, str]]:
    return body, sendgrid.signed(body, at, key=ec.generate_private_key(ec.SECP256R1()))


def _reserialized(sendgrid: FakeSendGrid, body: bytes, at: int) -> tuple[bytes, dict[str, str]]:
    return json.dumps(json.loads(body), indent=2).encode(), sendgrid.signed(body, at)


def _other_timestamp(sendgrid: FakeSendGrid, body: bytes, at: int) -> tuple[bytes, dict[str, str]]:
    return body, sendgrid.signed(body, at - 1) | {TIMESTAMP_HEADER: str(at)}


def _not_base64(sendgrid: FakeSendGrid, body: bytes, at: int) -> tuple[bytes, dict[str, str]]:
    return body, sendgrid.signed(body, at) | {SIGNATURE_HEADER: "not base64!"}


@pytest.mark.parametrize("tamper", [_forged, _reserialized, _other_timestamp], ids=["forged key", "re-serialised by a proxy", "timestamp swapped"])
async def test_a_bad_signature_is_refused_by_ours_and_by_sendgrids_helper(session: aiohttp.ClientSession, sendgrid: FakeSendGrid, tamper: Any) -> None:
    clock = FakeClock()
    body, headers = tamper(sendgrid, json.dumps([sendgrid.event("W4UbzYbhTUyQ9Nc5WLkAvA", "delivered")]).encode(), int(clock.now()))
    assert not reference_accepts(sendgrid, body, headers)
    with pytest.raises(WebhookVerificationError):
        await provider(session, sendgrid, clock).verify_webhook(request(body, headers))


@pytest.mark.parametrize(
    ("why", "build", "config"),
    [
        ("stale", lambda sg, body, at: (body, sg.signed(body, at - 301)), {}),
        ("from the future", lambda sg, body, at: (body, sg.signed(body, at + 301)), {}),
        ("no signature", lambda sg, body, at: (body, {TIMESTAMP_HEADER: str(at)}), {}),
        ("no timestamp", lambda sg, body, at: (body, {SIGNATURE_HEADER: sg.signed(body, at)[SIGNATURE_HEADER]}), {}),
        ("signature not base64", _not_base64, {}),
        ("no key configured", lambda sg, body, at: (body, sg.signed(body, at)), {"webhook_public_key": None}),
        ("a key that is not P-256", lambda sg, body, at: (body, sg.signed(body, at)),
         {"webhook_public_key": base64.b64encode(ec.generate_private_key(ec.SECP384R1()).public_key().public_bytes(DER, SPKI)).decode()}),
    ],
)
async def test_other_callbacks_that_fail_verification(
    session: aiohttp.ClientSession, sendgrid: FakeSendGrid, why: str, build: Any, config: dict[str, Any]
) -> None:
    clock = FakeClock()
    body, headers = build(sendgrid, json.dumps([sendgrid.event("W4UbzYbhTUyQ9Nc5WLkAvA", "delivered")]).encode(), int(clock.now()))
    sg = provider(session, sendgrid, clock, **config)
    if config.get("webhook_public_key", "") is None:
        del sg.config["webhook_public_key"]
    with pytest.raises(WebhookVerificationError):
        await sg.verify_webhook(request(body, headers))


async def test_parsing_matches_the_message_id_prefix_and_keeps_the_vendor_detail(session: aiohttp.ClientSession, sendgrid: FakeSendGrid) -> None:
    sg = provider(session, sendgrid)
    await sg.send(message())
    [message_id] = sendgrid.accepted
    events = [sendgrid.event(message_id, name) for name in ("processed", "delivered", "open", "bounce", "spamreport", "unsubscribe", "group_unsubscribe")]
    events.append({"event": "dropped", "email": TO, "timestamp": 1_800_000_000, "reason": "Invalid"})  # names no message
    *updates, spam, unsubscribe = await sg.parse_webhook(request(json.dumps(events).encode(), {}))
    assert all(isinstance(u, StatusUpdate) and u.provider_message_id == message_id and u.delivery_id == DELIVERY for u in updates)
    assert [(u.status, u.detail["vendor_status"]) for u in updates if isinstance(u, StatusUpdate)] == [
        ("sent", "processed"), ("delivered", "delivered"), ("opened", "open"), ("bounced", "bounce")
    ]
    bounce = updates[-1]
    assert isinstance(bounce, StatusUpdate) and bounce.occurred_at == 1_800_000_000.0
    assert bounce.error is not None and bounce.error.startswith("550 5.1.1")
    assert bounce.detail["bounce_classification"] == "Invalid Address"
    assert bounce.detail["sg_message_id"].startswith(f"{message_id}.filterdrecv")
    assert (spam, unsubscribe) == (
        OptOut("email", TO, reason="spamreport", about=message_id, occurred_at=1_800_000_000.0),
        OptOut("email", TO, reason="unsubscribe", about=message_id, occurred_at=1_800_000_000.0),
    )


# -- receipts through the real app --------------------------------------------------------------


@pytest.fixture
async def api(aiohttp_client: Any, tmp_path: Path, clock: FakeClock, sendgrid: FakeSendGrid) -> Api:
    policy_dir = tmp_path / "sendgrid-policies"
    (policy_dir / "secrets").mkdir(parents=True)
    (policy_dir / "secrets" / "sendgrid-key").write_text(API_KEY + "\n")
    (policy_dir / "policy.yaml").write_text(textwrap.dedent(f"""
        tenants:
          acme:
            api_keys: [{key_entry(LIVE_KEY)}]
            senders:
              email: {{from: orders@acme.example, name: ACME, reply_to: help@acme.example}}
            channels:
              email: {{providers: [sg]}}
        providers:
          sg:
            plugin: sendgrid
            tenant: acme
            config:
              api_key: {{$file: secrets/sendgrid-key}}
              from: no-reply@tidings.example
              base_url: {sendgrid.url}
              webhook_public_key: {sendgrid.public_key}
              timeout_seconds: 0.5
        """))
    return await serve(aiohttp_client, policy_dir, {"sendgrid": SendGridProvider}, clock)


SHIPPED = {
    "recipient": {"email": TO},
    "notification": {"channels": ["email"], "subject": "Order 1001 shipped", "body": "On its way", "html": "<p>On its way</p>"},
}


async def sent_email(api: Api, sendgrid: FakeSendGrid) -> tuple[str, str]:
    """Send one email through the HTTP API into the fake; (notification id, X-Message-Id)."""
    status, accepted = await api.send(SHIPPED)
    assert status == 202, accepted
    found = await api.wait_for(accepted["notification_id"], lambda n: n["status"] == "sent")
    [delivery] = found["deliveries"]
    [(message_id, payload)] = sendgrid.accepted.items()
    assert delivery["provider_message_id"] == message_id
    assert payload["custom_args"] == {DELIVERY_ID_ARG: delivery["delivery_id"]}
    assert payload["from"] == {"email": "orders@acme.example", "name": "ACME"} and payload["reply_to"] == {"email": "help@acme.example"}
    return accepted["notification_id"], message_id


async def post_events(api: Api, sendgrid: FakeSendGrid, clock: FakeClock, events: list[dict[str, Any]]) -> int:
    """POST a signed Event Webhook batch and wait until it is processed and reconciled."""
    body = json.dumps(events).encode()
    response = await api.client.post("/api/v1/webhooks/sg", data=body, headers=sendgrid.signed(body, int(clock.now())))
    await api.app[INBOUND].drain()
    await api.app[OUTCOMES].drain()
    return response.status


@pytest.mark.parametrize(
    ("events", "expected", "error"),
    [
        (["processed"], "sent", None),
        (["processed", "deferred"], "sent", None),
        (["processed", "delivered"], "delivered", None),
        (["delivered", "open"], "opened", None),
        (["delivered", "click"], "clicked", None),
        (["delivered", "click", "open"], "clicked", None),  # a late open never moves a click back
        (["processed", "bounce"], "bounced", "550 5.1.1 The email account that you tried to reach does not exist."),
        (["dropped"], "failed", "Bounced Address"),
        (["delivered", "spamreport", "unsubscribe", "group_unsubscribe"], "delivered", None),  # opt-outs, not statuses
    ],
)
async def test_event_webhook_receipts_move_the_delivery(
    api: Api, sendgrid: FakeSendGrid, clock: FakeClock, events: list[str], expected: str, error: str | None
) -> None:
    notification_id, message_id = await sent_email(api, sendgrid)
    assert await post_events(api, sendgrid, clock, [sendgrid.event(message_id, name) for name in events]) == 200
    [delivery] = (await api.notification(notification_id))["deliveries"]
    assert (delivery["status"], delivery["last_error"]) == (expected, error)


async def test_an_open_by_a_mail_privacy_proxy_is_not_the_recipient_opening_it(api: Api, sendgrid: FakeSendGrid, clock: FakeClock) -> None:
    notification_id, message_id = await sent_email(api, sendgrid)
    machine = sendgrid.event(message_id, "open", sg_machine_open=True)
    assert await post_events(api, sendgrid, clock, [sendgrid.event(message_id, "delivered"), machine]) == 200
    assert (await api.notification(notification_id))["deliveries"][0]["status"] == "delivered"
    assert await post_events(api, sendgrid, clock, [sendgrid.event(message_id, "open", sg_machine_open=False)]) == 200
    assert (await api.notification(notification_id))["deliveries"][0]["status"] == "opened"


async def test_a_spam_report_or_unsubscribe_opts_the_recipient_out(api: Api, sendgrid: FakeSendGrid, clock: FakeClock) -> None:
    _, message_id = await sent_email(api, sendgrid)
    assert await post_events(api, sendgrid, clock, [sendgrid.event(message_id, "delivered"), sendgrid.event(message_id, "spamreport")]) == 200
    _, opt_outs = await api.get("/api/v1/opt-outs")
    assert [(o["channel"], o["address"], o["source"]) for o in opt_outs["items"]] == [("email", TO, "sg: spamreport")]
    status, refused = await api.send(SHIPPED)
    assert status == 422 and refused["error"]["code"] == "recipient_opted_out"


async def test_events_naming_the_delivery_settle_a_send_whose_answer_was_lost(api: Api, sendgrid: FakeSendGrid, clock: FakeClock) -> None:
    """SendGrid took the message, but its 202 never came back: the send timed out and is due again.

    SendGrid has no idempotency key, so a retry would mail the customer twice. Its events carry
    our delivery id (custom_args), which settles the delivery before the retry comes round.
    """
    sendgrid.lose_next_answer()
    status, accepted = await api.send(SHIPPED)
    assert status == 202
    timed_out = await api.wait_for(accepted["notification_id"], lambda n: n["deliveries"][0]["last_error"] is not None)
    [delivery] = timed_out["deliveries"]
    assert delivery["status"] == "sending" and "timed out" in delivery["last_error"] and delivery["provider_message_id"] is None
    [message_id] = sendgrid.accepted
    assert await post_events(api, sendgrid, clock, [sendgrid.event(message_id, "processed"), sendgrid.event(message_id, "delivered")]) == 200
    [delivery] = (await api.notification(accepted["notification_id"]))["deliveries"]
    assert (delivery["status"], delivery["provider_message_id"]) == ("delivered", message_id)

    clock.advance(3600)  # long past the retry; a later email going out shows the dispatcher has run since
    _, later = await api.send(SHIPPED)
    await api.wait_for(later["notification_id"], lambda n: n["status"] == "sent")
    assert len(sendgrid.requests) == 2


async def test_events_that_come_before_the_lost_answer_times_out_wait_for_it(api: Api, sendgrid: FakeSendGrid, clock: FakeClock) -> None:
    sendgrid.lose_next_answer()
    _, accepted = await api.send(SHIPPED)
    await sendgrid.wait_for(lambda fake: len(fake.accepted) == 1)
    [message_id] = sendgrid.accepted
    assert await post_events(api, sendgrid, clock, [sendgrid.event(message_id, "delivered")]) == 200  # the send is still waiting
    settled = await api.wait_for(accepted["notification_id"], lambda n: n["status"] == "delivered")
    [delivery] = settled["deliveries"]
    assert delivery["provider_message_id"] == message_id and "timed out" in delivery["last_error"]


async def test_a_receipt_naming_another_instances_delivery_is_not_applied(api: Api, sendgrid: FakeSendGrid, clock: FakeClock) -> None:
    notification_id, message_id = await sent_email(api, sendgrid)
    [delivery] = (await api.notification(notification_id))["deliveries"]
    stray = sendgrid.event("someoneElsesMessage0000", "bounce", **{DELIVERY_ID_ARG: delivery["delivery_id"]})
    assert await post_events(api, sendgrid, clock, [stray]) == 200
    [after] = (await api.notification(notification_id))["deliveries"]
    assert (after["status"], after["provider_message_id"]) == ("sent", message_id)  # it has its own message id: held, not applied


async def test_a_forged_callback_is_refused_and_changes_nothing(api: Api, sendgrid: FakeSendGrid, clock: FakeClock) -> None:
    notification_id, message_id = await sent_email(api, sendgrid)
    body = json.dumps([sendgrid.event(message_id, "delivered")]).encode()
    forged = sendgrid.signed(body, int(clock.now()), key=ec.generate_private_key(ec.SECP256R1()))
    response = await api.client.post("/api/v1/webhooks/sg", data=body, headers=forged)
    assert response.status == 401
    assert (await api.notification(notification_id))["deliveries"][0]["status"] == "sent"


# -- check_credentials --------------------------------------------------------------------------


async def test_check_credentials(session: aiohttp.ClientSession, sendgrid: FakeSendGrid) -> None:
    described = await provider(session, sendgrid).check_credentials()
    assert described == "SendGrid API key with 4 scopes, mail.send included" and API_KEY not in described
    with pytest.raises(CredentialsRejectedError):
        await provider(session, sendgrid, api_key="SG.wrong.key").check_credentials()
    assert sendgrid.scope_checks == 2 and sendgrid.requests == []


async def test_check_credentials_refuses_a_key_that_cannot_send(session: aiohttp.ClientSession) -> None:
    async with FakeSendGrid(scopes=("stats.read",)).serving() as sendgrid:
        with pytest.raises(CredentialsRejectedError) as caught:
            await provider(session, sendgrid).check_credentials()
        assert caught.value.code == "missing_scope"
