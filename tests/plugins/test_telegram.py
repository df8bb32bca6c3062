"""The telegram plugin against a fake Bot API on loopback, and end to end through a real app."""

from __future__ import annotations

import json
import logging
import textwrap
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from conftest import LIVE_KEY, Api, FakeClock, Reports, key_entry
from fakes.telegram import (
    BOT_ID,
    BOT_USERNAME,
    CHAT,
    NEW_SUPERGROUP,
    OTHER_TOKEN,
    TOKEN,
    WEBHOOK_SECRET,
    FakeTelegram,
    member_update,
    text_update,
    webhook_request,
)

from gateway import (
    CredentialsRejectedError,
    DeliveryError,
    InboundReply,
    OptOut,
    OutboundMessage,
    PermanentDeliveryError,
    ProviderContext,
    StatusUpdate,
    TransientDeliveryError,
    WebhookVerificationError,
)
from gateway.app import create_app
from gateway.conformance import outbound
from gateway.http.appkeys import INBOUND, OUTCOMES, STORE
from gateway.plugins import PluginCatalog
from gateway.settings import Settings
from plugins.telegram import TelegramProvider


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram().serving() as fake:
        yield fake


def provider(session: aiohttp.ClientSession, telegram: FakeTelegram, clock: FakeClock, reports: Reports, **config: Any) -> TelegramProvider:
    settings = {"bot_token": TOKEN, "webhook_secret": WEBHOOK_SECRET, "base_url": telegram.url, "timeout_seconds": 2} | config
    return TelegramProvider("tg", settings, ProviderContext(session=session, clock=clock, report=reports))


def message(to: str = CHAT, body: str = "Your parcel is out for delivery") -> OutboundMessage:
    return outbound("telegram", to, {"telegram_chat_id": to}, body=body)


# -- 1. request shape and auth -------------------------------------------------------------------


async def test_sends_json_to_the_bots_send_message_and_reports_delivered_at_once(
    session: aiohttp.ClientSession, telegram: FakeTelegram, clock: FakeClock, reports: Reports
) -> None:
    receipt = await provider(session, telegram, clock, reports).send(message())
    [call] = telegram.calls
    assert (call.method, call.token_ok, call.content_type) == ("sendMessage", True, "application/json")
    assert call.params == {"chat_id": int(CHAT), "text": "Your parcel is out for delivery"}  # no parse_mode by default
    assert receipt.provider_message_id == f"{CHAT}:1"
    assert receipt.detail == {"chat_id": int(CHAT), "message_id": 1}
    [delivered] = reports
    assert isinstance(delivered, StatusUpdate)
    assert (delivered.provider_message_id, delivered.status) == (f"{CHAT}:1", "delivered")
    assert delivered.occurred_at == telegram.sent[0]["date"]
    second = await provider(session, telegram, clock, reports).send(message())
    assert second.provider_message_id == f"{CHAT}:2"  # message ids count per chat


@pytest.mark.parametrize("mode", ["HTML", "MarkdownV2"])
async def test_the_configured_parse_mode_is_sent(
    session: aiohttp.ClientSession, telegram: FakeTelegram, clock: FakeClock, reports: Reports, mode: str
) -> None:
    await provider(session, telegram, clock, reports, parse_mode=mode).send(message(body="<b>Order 1001</b> shipped"))
    assert telegram.calls[0].params["parse_mode"] == mode
    assert telegram.sent[0]["text"] == "<b>Order 1001</b> shipped"


async def test_a_channel_username_is_passed_as_it_is(
    session: aiohttp.ClientSession, telegram: FakeTelegram, clock: FakeClock, reports: Reports
) -> None:
    with pytest.raises(PermanentDeliveryError) as refused:
        await provider(session, telegram, clock, reports).send(message(to="@acme_status"))
    assert telegram.calls[0].params["chat_id"] == "@acme_status"
    assert refused.value.code == "invalid_recipient"  # the fake knows no public channels


async def test_a_message_without_text_never_reaches_telegram(
    session: aiohttp.ClientSession, telegram: FakeTelegram, clock: FakeClock, reports: Reports
) -> None:
    with pytest.raises(PermanentDeliveryError) as refused:
        await provider(session, telegram, clock, reports).send(message(body="   "))
    assert refused.value.code == "empty_body" and telegram.calls == []


async def test_a_revoked_token_is_a_credentials_failure(
    session: aiohttp.ClientSession, telegram: FakeTelegram, clock: FakeClock, reports: Reports
) -> None:
    with pytest.raises(CredentialsRejectedError):
        await provider(session, telegram, clock, reports, bot_token=OTHER_TOKEN).send(message())
    assert [call.token_ok for call in telegram.calls] == [False] and reports == []


def test_the_config_schema_refuses_a_token_that_would_change_the_path() -> None:
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(dict(TelegramProvider.config_schema))
    assert validator.is_valid({"bot_token": TOKEN})
    assert not validator.is_valid({"bot_token": "123:abc/../../other"})
    assert not validator.is_valid({"bot_token": TOKEN, "webhook_secret": "has spaces"})
    assert not validator.is_valid({"bot_token": TOKEN, "parse_mode": "Markdown2"})


# -- 2. the error table ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "error", "code", "retry_after", "detail"),
    [
        ("blocked", PermanentDeliveryError, "opted_out", None, {"vendor_code": "bot_blocked", "http_status": 403}),
        ("kicked", PermanentDeliveryError, "opted_out", None, {"vendor_code": "bot_kicked"}),
        ("deactivated", PermanentDeliveryError, "invalid_recipient", None, {"vendor_code": "user_deactivated"}),
        ("not_started", PermanentDeliveryError, "invalid_recipient", None, {"vendor_code": "not_started"}),
        ("to_bot", PermanentDeliveryError, "invalid_recipient", None, {"vendor_code": "bot_recipient"}),
        ("reject_recipient", PermanentDeliveryError, "invalid_recipient", None, {"vendor_code": "chat_not_found", "http_status": 400}),
        ("migrated", PermanentDeliveryError, "chat_migrated", None, {"migrate_to_chat_id": NEW_SUPERGROUP}),
        ("bad_markup", PermanentDeliveryError, "invalid_content", None, {"vendor_code": "bad_markup"}),
        ("flood", TransientDeliveryError, "rate_limited", 35.0, {"vendor_code": "flood", "http_status": 429}),
        ("5xx", TransientDeliveryError, "http_500", None, {"http_status": 500}),
        ("bad_gateway", TransientDeliveryError, "http_502", None, {"http_status": 502}),
        ("unauthorized", CredentialsRejectedError, "unauthorized", None, {"vendor_code": "unauthorized"}),
    ],
)
async def test_each_telegram_refusal_is_classified(
    session: aiohttp.ClientSession, telegram: FakeTelegram, clock: FakeClock, reports: Reports,
    fault: str, error: type[DeliveryError], code: str, retry_after: float | None, detail: dict[str, Any],
) -> None:
    telegram.fail_next(fault)
    with pytest.raises(DeliveryError) as raised:
        await provider(session, telegram, clock, reports).send(message())
    assert type(raised.value) is error
    assert raised.value.code == code
    assert raised.value.detail.items() >= detail.items()
    if isinstance(raised.value, TransientDeliveryError):
        assert raised.value.retry_after == retry_after
    if fault in {"deactivated", "reject_recipient", "5xx"}:
        assert "opt_out" not in raised.value.detail
    assert reports == []  # nothing delivered


async def test_a_migrated_group_names_its_new_id_in_the_error(
    session: aiohttp.ClientSession, telegram: FakeTelegram, clock: FakeClock, reports: Reports
) -> None:
    telegram.fail_next("migrated")
    with pytest.raises(PermanentDeliveryError) as raised:
        await provider(session, telegram, clock, reports).send(message(to="-4012345678"))
    assert str(NEW_SUPERGROUP) in raised.value.message


async def test_telegrams_own_validation_is_permanent(
    session: aiohttp.ClientSession, telegram: FakeTelegram, clock: FakeClock, reports: Reports
) -> None:
    with pytest.raises(PermanentDeliveryError) as raised:
        await provider(session, telegram, clock, reports).send(message(body="x" * 4097))
    assert raised.value.code == "body_too_long"


# -- the token never shows --------------------------------------------------------------------------


async def _failures(session: aiohttp.ClientSession, telegram: FakeTelegram, clock: FakeClock, reports: Reports) -> list[DeliveryError]:
    """One error of every kind a send or a credentials check can end in."""
    errors: list[DeliveryError] = []

    async def attempt(plugin: TelegramProvider, *, check: bool = False) -> None:
        try:
            await (plugin.check_credentials() if check else plugin.send(message()))
        except DeliveryError as err:
            errors.append(err)
        else:
            raise AssertionError("expected a failure")

    for fault in ("timeout", "5xx", "bad_gateway", "blocked", "flood", "unauthorized"):
        telegram.fail_next(fault)
        # Only the timeout case gets a short timeout: on a loaded machine 0.2 s can pass before a 5xx is answered.
        await attempt(provider(session, telegram, clock, reports, timeout_seconds=0.2 if fault == "timeout" else 10))
    await attempt(provider(session, telegram, clock, reports, bot_token=OTHER_TOKEN), check=True)
    async with FakeTelegram().serving() as closed:
        dead_url = closed.url
    await attempt(provider(session, telegram, clock, reports, base_url=dead_url))  # connection refused
    await attempt(provider(session, telegram, clock, reports, base_url="http://127.0.0.1:99999"))  # not a valid URL
    return errors


async def test_no_error_or_log_line_ever_shows_the_token(
    session: aiohttp.ClientSession, telegram: FakeTelegram, clock: FakeClock, reports: Reports, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    errors = await _failures(session, telegram, clock, reports)
    assert len(errors) == 9
    secret_part = TOKEN.split(":", 1)[1]
    for err in errors:
        shown = " ".join([str(err), repr(err), err.message, json.dumps(err.detail, default=str)])
        assert secret_part not in shown and "/bot" not in shown, shown
        assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__), "the aiohttp error (which may quote the URL) is dropped"
    codes = [err.code for err in errors]
    assert codes.count("unreachable") == 3  # timeout, refused, malformed URL
    assert secret_part not in caplog.text


# -- 3. webhooks: the secret token ----------------------------------------------------------------


async def test_an_update_with_the_secret_token_verifies_whatever_the_header_case(
    session: aiohttp.ClientSession, telegram: FakeTelegram, clock: FakeClock, reports: Reports
) -> None:
    plugin = provider(session, telegram, clock, reports)
    await plugin.verify_webhook(webhook_request(text_update(CHAT, "hi")))
    bare = webhook_request(text_update(CHAT, "hi"), None)
    await plugin.verify_webhook(replace(bare, headers={**bare.headers, "x-telegram-bot-api-secret-token": WEBHOOK_SECRET}))


@pytest.mark.parametrize(
    ("how", "secret"),
    [("missing", None), ("wrong", "not-the-webhook-secret"), ("a prefix of the right one", WEBHOOK_SECRET[:-1]), ("empty", "")],
)
async def test_an_update_without_the_right_secret_token_is_refused(
    session: aiohttp.ClientSession, telegram: FakeTelegram, clock: FakeClock, reports: Reports, how: str, secret: str | None
) -> None:
    with pytest.raises(WebhookVerificationError):
        await provider(session, telegram, clock, reports).verify_webhook(webhook_request(text_update(CHAT, "hi"), secret))


async def test_an_instance_without_a_webhook_secret_takes_no_updates(
    session: aiohttp.ClientSession, telegram: FakeTelegram, clock: FakeClock, reports: Reports
) -> None:
    plugin = TelegramProvider("tg", {"bot_token": TOKEN, "base_url": telegram.url}, ProviderContext(session, clock, reports))
    with pytest.raises(WebhookVerificationError):
        await plugin.verify_webhook(webhook_request(text_update(CHAT, "hi"), WEBHOOK_SECRET))


# -- reading updates -------------------------------------------------------------------------------


async def parse(plugin: TelegramProvider, update: dict[str, Any]) -> list[StatusUpdate | InboundReply]:
    return await plugin.parse_webhook(webhook_request(update))


async def test_a_message_answering_ours_is_a_reply_linked_to_it(
    session: aiohttp.ClientSession, telegram: FakeTelegram, clock: FakeClock, reports: Reports
) -> None:
    [reply] = await parse(provider(session, telegram, clock, reports), text_update(CHAT, "Leave it at the door", message_id=90, reply_to=5, date=1_800_000_123))
    assert isinstance(reply, InboundReply)
    assert (reply.sender, reply.body, reply.channel) == (CHAT, "Leave it at the door", "telegram")
    assert (reply.in_reply_to, reply.provider_message_id, reply.occurred_at) == (f"{CHAT}:5", f"{CHAT}:90", 1_800_000_123.0)
    assert reply.detail["chat_type"] == "private" and reply.detail["from_id"] == int(CHAT)
    assert "opt_out" not in reply.detail


@pytest.mark.parametrize(
    ("text", "opt_out"),
    [("/stop", True), ("/stop@acme_alerts_bot", True), ("/STOP please", True), ("/start", False), ("/start promo-42", False),
     ("stop", None), ("/stopwatch", None), ("please /stop", None)],
)
async def test_stop_and_start_commands_in_a_private_chat_opt_out_and_in(
    session: aiohttp.ClientSession, telegram: FakeTelegram, clock: FakeClock, reports: Reports, text: str, opt_out: bool | None
) -> None:
    [reply] = await parse(provider(session, telegram, clock, reports), text_update(CHAT, text))
    assert isinstance(reply, InboundReply)
    assert reply.detail.get("opt_out") is opt_out


async def test_commands_in_a_group_opt_nobody_out(session: aiohttp.ClientSession, telegram: FakeTelegram, clock: FakeClock, reports: Reports) -> None:
    [reply] = await parse(provider(session, telegram, clock, reports), text_update(-4012345678, "/stop", chat_type="group", from_id=555))
    assert isinstance(reply, InboundReply)
    assert reply.sender == "-4012345678" and reply.detail["from_id"] == 555 and "opt_out" not in reply.detail


@pytest.mark.parametrize(
    ("new", "old", "chat_type", "opt_out"),
    [("kicked", "member", "private", True), ("member", "kicked", "private", False), ("left", "member", "group", True),
     ("member", "left", "group", False), ("administrator", "member", "supergroup", None)],
)
async def test_the_bots_membership_changes_opt_the_chat_out_and_back_in(
    session: aiohttp.ClientSession, telegram: FakeTelegram, clock: FakeClock, reports: Reports,
    new: str, old: str, chat_type: str, opt_out: bool | None,
) -> None:
    chat = CHAT if chat_type == "private" else "-1001987654321"
    updates = await parse(provider(session, telegram, clock, reports), member_update(chat, new, old, chat_type=chat_type))
    if opt_out is None:
        assert updates == []
        return
    [signal] = updates
    assert isinstance(signal, OptOut)
    assert (signal.channel, signal.address, signal.opted_out) == ("telegram", chat, opt_out) and signal.reason.endswith(f"to {new}")


async def test_a_redelivered_update_is_read_once(session: aiohttp.ClientSession, telegram: FakeTelegram, clock: FakeClock, reports: Reports) -> None:
    plugin = provider(session, telegram, clock, reports)
    update = text_update(CHAT, "Thanks!")
    assert len(await parse(plugin, update)) == 1
    assert await parse(plugin, update) == []
    assert len(await parse(plugin, text_update(CHAT, "Thanks!"))) == 1  # a new update_id, the same words


async def test_updates_tidings_does_not_keep_are_ignored(session: aiohttp.ClientSession, telegram: FakeTelegram, clock: FakeClock, reports: Reports) -> None:
    plugin = provider(session, telegram, clock, reports)
    edited = text_update(CHAT, "typo fixed")
    edited["edited_message"] = edited.pop("message")
    joined = text_update(-4012345678, "x", chat_type="group")
    del joined["message"]["text"]
    joined["message"]["new_chat_members"] = [{"id": 1, "is_bot": False, "first_name": "Bob"}]
    assert await parse(plugin, edited) == [] and await parse(plugin, joined) == []
    with pytest.raises(ValueError):
        await plugin.parse_webhook(webhook_request({}, body=b"not json"))


# -- check_credentials -----------------------------------------------------------------------------------


async def test_check_credentials_names_the_bot(session: aiohttp.ClientSession, telegram: FakeTelegram, clock: FakeClock, reports: Reports) -> None:
    described = await provider(session, telegram, clock, reports).check_credentials()
    assert described == f"bot @{BOT_USERNAME} (id {BOT_ID})"
    assert TOKEN.split(":", 1)[1] not in (described or "")
    assert [call.method for call in telegram.calls] == ["getMe"]


async def test_check_credentials_with_a_refused_token_raises(session: aiohttp.ClientSession, telegram: FakeTelegram, clock: FakeClock, reports: Reports) -> None:
    with pytest.raises(CredentialsRejectedError):
        await provider(session, telegram, clock, reports, bot_token=OTHER_TOKEN).check_credentials()
    telegram_404 = provider(session, telegram, clock, reports, base_url=telegram.url + "/nothing-here")
    with pytest.raises(CredentialsRejectedError):  # what Telegram answers a malformed token: 404 Not Found
        await telegram_404.check_credentials()


# -- 4./5. end to end through the HTTP API ----------------------------------------------------------


@pytest.fixture
async def api(aiohttp_client: Any, tmp_path: Path, clock: FakeClock, telegram: FakeTelegram) -> Api:
    policy_dir = tmp_path / "policies"
    (policy_dir / "secrets").mkdir(parents=True)
    (policy_dir / "secrets" / "tg-token").write_text(TOKEN + "\n")
    (policy_dir / "secrets" / "tg-hook").write_text(WEBHOOK_SECRET + "\n")
    (policy_dir / "policy.yaml").write_text(textwrap.dedent(f"""
        tenants:
          acme:
            api_keys: [{key_entry(LIVE_KEY)}]
        providers:
          tg:
            plugin: telegram
            config:
              bot_token: {{$file: secrets/tg-token}}
              webhook_secret: {{$file: secrets/tg-hook}}
              base_url: {json.dumps(telegram.url)}
              timeout_seconds: 2
        channels:
          telegram: {{providers: [tg]}}
        """))
    settings = Settings(
        data_dir=tmp_path / "data", policy_dir=policy_dir, policy_reload=False, max_attempts=3, _env_file=None
    )
    app = create_app(settings, plugins=PluginCatalog.from_classes({"telegram": TelegramProvider}), clock=clock)
    return Api(await aiohttp_client(app))


def telegram_body(chat: str = CHAT, body: str = "Your parcel is out for delivery") -> dict[str, Any]:
    return {"recipient": {"telegram_chat_id": chat}, "notification": {"channels": ["telegram"], "body": body}}


async def settle(app: web.Application) -> None:
    await app[INBOUND].drain()
    await app[OUTCOMES].drain()


async def set_webhook(api: Api, telegram: FakeTelegram) -> None:
    """What the operator does once: point the bot's webhook at the instance, with the secret token."""
    url = str(api.client.make_url("/api/v1/webhooks/tg"))
    async with aiohttp.ClientSession() as client, client.post(
        f"{telegram.url}/bot{TOKEN}/setWebhook", json={"url": url, "secret_token": WEBHOOK_SECRET}
    ) as response:
        assert (await response.json())["ok"] is True


async def test_a_send_through_the_api_is_delivered_with_the_chat_and_message_id(api: Api, telegram: FakeTelegram) -> None:
    status, accepted = await api.send(telegram_body())
    assert status == 202, accepted
    found = await api.wait_for(accepted["notification_id"], lambda n: n["status"] == "delivered")
    [delivery] = found["deliveries"]
    assert (delivery["status"], delivery["provider"], delivery["provider_message_id"]) == ("delivered", "tg", f"{CHAT}:1")
    assert [(m["chat"]["id"], m["text"]) for m in telegram.sent] == [(int(CHAT), "Your parcel is out for delivery")]


async def test_a_reply_and_the_stop_start_commands_arrive_through_the_webhook(api: Api, telegram: FakeTelegram) -> None:
    await set_webhook(api, telegram)
    _, accepted = await api.send(telegram_body())
    await api.wait_for(accepted["notification_id"], lambda n: n["status"] == "delivered")

    answered = await telegram.deliver(text_update(CHAT, "Leave it at the door", reply_to=1))
    await settle(api.app)
    assert answered.status == 200
    status, replies = await api.get("/api/v1/replies")
    assert status == 200
    [reply] = replies["items"]
    assert (reply["from"], reply["body"], reply["in_reply_to"], reply["notification_id"]) == (
        CHAT, "Leave it at the door", f"{CHAT}:1", accepted["notification_id"]
    )

    await telegram.deliver(text_update(CHAT, "/stop"))
    await settle(api.app)
    status, refused = await api.send(telegram_body())
    assert status == 422 and refused["error"]["code"] == "recipient_opted_out"
    await telegram.deliver(text_update(CHAT, "/start"))
    await settle(api.app)
    status, _ = await api.send(telegram_body())
    assert status == 202


async def test_the_secret_token_header_is_nowhere_in_the_data_directory(api: Api, telegram: FakeTelegram, tmp_path: Path) -> None:
    await set_webhook(api, telegram)
    answered = await telegram.deliver(text_update(CHAT, "Leave it at the door"))
    await settle(api.app)
    assert answered.status == 200
    stored = await api.app[STORE].get_inbound(answered.answer["received"])
    assert stored is not None and stored.outcome == "processed"
    assert stored.request.headers["X-Telegram-Bot-Api-Secret-Token"] == "[redacted]"
    assert not any(WEBHOOK_SECRET.encode() in path.read_bytes() for path in (tmp_path / "data").iterdir() if path.is_file())


async def test_blocking_the_bot_opts_the_chat_out(api: Api, telegram: FakeTelegram) -> None:
    await set_webhook(api, telegram)
    await telegram.deliver(member_update(CHAT, "kicked", "member"))
    await settle(api.app)
    status, refused = await api.send(telegram_body())
    assert status == 422 and refused["error"]["code"] == "recipient_opted_out"
    _, opt_outs = await api.get("/api/v1/opt-outs")
    assert [(o["channel"], o["address"]) for o in opt_outs["items"]] == [("telegram", CHAT)]
    await telegram.deliver(member_update(CHAT, "member", "kicked"))
    await settle(api.app)
    status, _ = await api.send(telegram_body())
    assert status == 202


async def test_an_update_with_a_wrong_secret_token_is_refused_and_changes_nothing(api: Api, telegram: FakeTelegram) -> None:
    await set_webhook(api, telegram)
    telegram.webhook_secret = "someone-guessing"
    refused = await telegram.deliver(text_update(CHAT, "/stop"))
    await settle(api.app)
    assert refused.status == 401 and refused.answer["error"]["code"] == "webhook_verification_failed"
    status, _ = await api.send(telegram_body())
    assert status == 202
    _, replies = await api.get("/api/v1/replies")
    assert replies["items"] == []


async def test_a_blocked_bot_fails_the_delivery_for_good_as_an_opt_out_without_showing_the_token(api: Api, telegram: FakeTelegram) -> None:
    telegram.block(CHAT)
    _, accepted = await api.send(telegram_body())
    found = await api.wait_for(accepted["notification_id"], lambda n: n["deliveries"][0]["status"] not in ("queued", "sending"))
    [delivery] = found["deliveries"]
    assert delivery["status"] == "failed" and delivery["attempt_count"] == 1
    [attempt] = delivery["attempts"]
    assert attempt["outcome"] == "permanent" and attempt["detail"]["code"] == "opted_out"
    assert "bot was blocked by the user" in attempt["error"]
    assert TOKEN.split(":", 1)[1] not in json.dumps(found)
    _, opt_outs = await api.get("/api/v1/opt-outs")
    assert [(o["channel"], o["address"]) for o in opt_outs["items"]] == [("telegram", CHAT)]
    status, refused = await api.send(telegram_body())
    assert status == 422 and refused["error"]["code"] == "recipient_opted_out"
