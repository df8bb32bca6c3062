"""The slack plugin against a fake Slack Web API on loopback, signatures checked with slack_sdk, and end to end."""

from __future__ import annotations

import json
import textwrap
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import LIVE_KEY, Api, FakeClock, Reports, key_entry, serve
from fakes.slack import BOT_TOKEN, SIGNING_SECRET, USER, FakeSlack, SlackError, event_headers, event_request, message_event, url_verification
from slack_sdk.signature import SignatureVerifier

from gateway import (
    CredentialsRejectedError,
    InboundReply,
    OutboundMessage,
    PermanentDeliveryError,
    ProviderContext,
    Sender,
    StatusUpdate,
    TransientDeliveryError,
    WebhookVerificationError,
)
from gateway.conformance import outbound
from gateway.http.appkeys import INBOUND, OUTCOMES
from plugins.slack import ERRORS, SlackProvider

NOW = 1_800_000_000
BLOCKS = [{"type": "section", "text": {"type": "mrkdwn", "text": "*Deploy* finished :tada:"}}]


class Clock:
    """For slack_sdk's verifier and our provider alike: the test's fixed now."""

    def __init__(self, now: float = NOW) -> None:
        self.value = now

    def now(self) -> float:
        return self.value

    async def sleep(self, _seconds: float) -> None:
        raise AssertionError("nothing here sleeps")


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(clock=lambda: NOW).serving() as fake:
        yield fake


def make_provider(session: aiohttp.ClientSession, slack: FakeSlack, reports: Reports | None = None, **config: Any) -> SlackProvider:
    settings = {"bot_token": BOT_TOKEN, "signing_secret": SIGNING_SECRET, "base_url": slack.url, "timeout_seconds": 2} | config
    return SlackProvider("slack", settings, ProviderContext(session=session, clock=Clock(), report=reports if reports is not None else Reports()))


@pytest.fixture
async def provider(slack: FakeSlack, reports: Reports) -> AsyncIterator[SlackProvider]:
    async with aiohttp.ClientSession() as session:
        yield make_provider(session, slack, reports)


def to_user(**fields: Any) -> OutboundMessage:
    return outbound("slack", USER, {"slack_user_id": USER}, body="Deploy finished", **fields)


def to_channel(channel: str = "C0ALERTS01", **fields: Any) -> OutboundMessage:
    return outbound("slack", channel, {"slack_channel": channel}, body="Deploy finished", **fields)


# -- 1. the request Slack expects, and delivered on ok ----------------------------------------------------


async def test_a_user_id_posts_to_the_app_dm_and_is_delivered_at_once(provider: SlackProvider, slack: FakeSlack, reports: Reports) -> None:
    receipt = await provider.send(to_user())
    [call] = slack.posts
    assert call.headers["Authorization"] == f"Bearer {BOT_TOKEN}"
    assert call.headers["Content-Type"] == "application/json; charset=utf-8" and "warning" not in call.answer
    assert call.body == {"channel": USER, "text": "Deploy finished"}
    dm, ts = call.answer["channel"], call.answer["ts"]
    assert dm.startswith("D") and receipt.provider_message_id == f"{dm}:{ts}"
    assert reports == [StatusUpdate(f"{dm}:{ts}", "delivered", occurred_at=float(ts), detail={"vendor_status": "ok"})]


async def test_blocks_come_from_metadata_with_the_text_as_fallback(provider: SlackProvider, slack: FakeSlack) -> None:
    await provider.send(to_channel(metadata={"slack_blocks": json.dumps(BLOCKS)}))
    await provider.send(to_channel(metadata={"slack_blocks": BLOCKS}))
    assert [call.body for call in slack.posts] == [{"channel": "C0ALERTS01", "text": "Deploy finished", "blocks": BLOCKS}] * 2


@pytest.mark.parametrize("blocks", ["{not json", json.dumps({"type": "section"}), json.dumps(["section"])])
async def test_blocks_that_are_not_a_json_array_are_refused_before_sending(provider: SlackProvider, slack: FakeSlack, blocks: str) -> None:
    with pytest.raises(PermanentDeliveryError) as caught:
        await provider.send(to_channel(metadata={"slack_blocks": blocks}))
    assert caught.value.code == "invalid_blocks" and slack.posts == []


async def test_the_tenants_sender_or_the_configured_username_names_the_bot(slack: FakeSlack) -> None:
    async with aiohttp.ClientSession() as session:
        named = make_provider(session, slack, username="Tidings")
        await named.send(to_user())
        await named.send(to_user(sender=Sender("deploy-bot", name="Deploy Bot")))
        await named.send(to_user(sender=Sender("deploy-bot")))
    assert [call.body["username"] for call in slack.posts] == ["Tidings", "Deploy Bot", "deploy-bot"]


# -- 2. the error table: HTTP 200 with ok false, 429 with Retry-After ------------------------------------------


@pytest.mark.parametrize(
    ("error", "raised", "code"),
    [
        ("channel_not_found", PermanentDeliveryError, "invalid_recipient"),
        ("not_in_channel", PermanentDeliveryError, "invalid_recipient"),
        ("is_archived", PermanentDeliveryError, "invalid_recipient"),
        ("user_not_found", PermanentDeliveryError, "invalid_recipient"),
        ("cannot_dm_bot", PermanentDeliveryError, "invalid_recipient"),
        ("msg_too_long", PermanentDeliveryError, "msg_too_long"),
        ("no_text", PermanentDeliveryError, "no_text"),
        ("invalid_blocks", PermanentDeliveryError, "invalid_blocks"),
        ("invalid_auth", CredentialsRejectedError, "invalid_auth"),
        ("not_authed", CredentialsRejectedError, "not_authed"),
        ("account_inactive", CredentialsRejectedError, "account_inactive"),
        ("token_revoked", CredentialsRejectedError, "token_revoked"),
        ("token_expired", CredentialsRejectedError, "token_expired"),
        ("missing_scope", CredentialsRejectedError, "missing_scope"),
        ("ratelimited", TransientDeliveryError, "rate_limited"),
        ("rate_limited", TransientDeliveryError, "rate_limited"),
        ("service_unavailable", TransientDeliveryError, "service_unavailable"),
        ("fatal_error", TransientDeliveryError, "fatal_error"),
        ("internal_error", TransientDeliveryError, "internal_error"),
        ("request_timeout", TransientDeliveryError, "request_timeout"),
        ("some_future_error", PermanentDeliveryError, "some_future_error"),  # unknown on HTTP 200: permanent
    ],
)
async def test_an_ok_false_answer_is_classified_by_its_error(
    provider: SlackProvider, slack: FakeSlack, reports: Reports, error: str, raised: type[Exception], code: str
) -> None:
    slack.refuse_next(SlackError(error))
    with pytest.raises(raised) as caught:
        await provider.send(to_user())
    assert type(caught.value) is raised and caught.value.code == code  # type: ignore[attr-defined]
    assert caught.value.detail == {"vendor_code": error, "http_status": 200}  # type: ignore[attr-defined]
    assert slack.posts[0].status == 200 and reports == []  # nothing delivered


def test_the_table_covers_the_errors_slack_documents() -> None:
    permanent = {"channel_not_found", "not_in_channel", "is_archived", "msg_too_long", "no_text", "user_not_found", "cannot_dm_bot"}
    credentials = {"invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired", "missing_scope"}
    transient = {"ratelimited", "service_unavailable", "fatal_error", "internal_error", "request_timeout"}
    assert all(not ERRORS[e].transient and not ERRORS[e].credentials for e in permanent)
    assert all(ERRORS[e].credentials for e in credentials)
    assert all(ERRORS[e].transient for e in transient)


async def test_a_429_honours_retry_after(provider: SlackProvider, slack: FakeSlack) -> None:
    slack.refuse_next(SlackError("ratelimited", status=429, headers={"Retry-After": "30"}))
    with pytest.raises(TransientDeliveryError) as caught:
        await provider.send(to_user())
    assert caught.value.retry_after == 30.0 and caught.value.code == "rate_limited"


async def test_what_the_fake_refuses_for_real_is_classified(provider: SlackProvider, slack: FakeSlack) -> None:
    with pytest.raises(PermanentDeliveryError) as unknown:
        await provider.send(to_channel("C0NOWHERE1"))
    with pytest.raises(PermanentDeliveryError) as outside:
        await provider.send(to_channel("C0PRIVATE1"))
    with pytest.raises(PermanentDeliveryError) as empty:
        await provider.send(replace(to_user(), body=None))
    with pytest.raises(PermanentDeliveryError) as long:
        await provider.send(replace(to_user(), body="x" * 40001))
    assert [e.value.detail["vendor_code"] for e in (unknown, outside, empty, long)] == [
        "channel_not_found", "not_in_channel", "no_text", "msg_too_long"]


async def test_a_wrong_token_is_a_credentials_failure_that_never_shows_the_token(slack: FakeSlack) -> None:
    async with aiohttp.ClientSession() as session:
        wrong = make_provider(session, slack, bot_token="xoxb-not-the-token")
        with pytest.raises(CredentialsRejectedError) as caught:
            await wrong.send(to_user())
    assert "xoxb" not in str(caught.value) and "xoxb" not in repr(wrong) and SIGNING_SECRET not in repr(wrong)


# -- 3. signatures, cross-checked with slack_sdk -------------------------------------------------------------


def reference(now: float = NOW) -> SignatureVerifier:
    return SignatureVerifier(SIGNING_SECRET, clock=Clock(now))  # type: ignore[arg-type]


async def test_a_request_signed_by_slack_sdk_verifies_with_ours(provider: SlackProvider) -> None:
    body = json.dumps(message_event("thanks")).encode()
    signature = reference().generate_signature(timestamp=str(NOW), body=body)
    assert signature is not None
    headers = {"X-Slack-Request-Timestamp": str(NOW), "X-Slack-Signature": signature}
    await provider.verify_webhook(replace(event_request(body, NOW), headers=headers))


async def test_our_signature_satisfies_slack_sdk_and_both_refuse_the_same_requests(provider: SlackProvider) -> None:
    body = json.dumps(message_event("thanks")).encode()
    cases = {
        "genuine": (body, event_headers(body, NOW)),
        "forged": (body, event_headers(body, NOW, secret="not-the-secret")),
        "stale": (body, event_headers(body, NOW - 301)),
        "from the future": (body, event_headers(body, NOW + 301)),
        "re-serialised by a proxy": (json.dumps(json.loads(body), indent=2).encode(), event_headers(body, NOW)),
        "tampered with": (body.replace(b"thanks", b"STOP"), event_headers(body, NOW)),
    }
    for how, (sent, headers) in cases.items():
        expected = how == "genuine"
        assert reference().is_valid_request(sent, headers) is expected, how
        if expected:
            await provider.verify_webhook(replace(event_request(sent, NOW), headers=headers))
            continue
        with pytest.raises(WebhookVerificationError):
            await provider.verify_webhook(replace(event_request(sent, NOW), headers=headers))


async def test_within_five_minutes_is_fresh_enough(provider: SlackProvider) -> None:
    body = json.dumps(message_event("thanks")).encode()
    for at in (NOW - 300, NOW + 300):
        await provider.verify_webhook(event_request(body, at))


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Slack-Signature": "v0=00"},
        {"X-Slack-Request-Timestamp": str(NOW)},
        {"X-Slack-Request-Timestamp": "soon", "X-Slack-Signature": "v0=00"},
    ],
)
async def test_missing_or_malformed_headers_are_refused(provider: SlackProvider, headers: dict[str, str]) -> None:
    with pytest.raises(WebhookVerificationError):
        await provider.verify_webhook(replace(event_request(message_event("hi"), NOW), headers=headers))


async def test_without_a_signing_secret_every_event_is_refused(slack: FakeSlack) -> None:
    async with aiohttp.ClientSession() as session:
        bare = make_provider(session, slack)
        del bare.config["signing_secret"]
        with pytest.raises(WebhookVerificationError, match="no signing_secret"):
            await bare.verify_webhook(event_request(message_event("hi"), NOW))


# -- events ----------------------------------------------------------------------------------------------------


async def test_url_verification_is_answered_with_the_challenge(provider: SlackProvider) -> None:
    request = event_request(url_verification("3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"), NOW)
    await provider.verify_webhook(request)
    answer = await provider.answer_webhook(request)
    assert answer is not None and (answer.status, answer.body) == (200, b"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P")
    assert await provider.parse_webhook(request) == []
    assert await provider.answer_webhook(event_request(message_event("hi"), NOW)) is None


async def test_a_thread_reply_answers_the_message_that_opened_the_thread(provider: SlackProvider) -> None:
    event = message_event("on it", channel="C0ALERTS01", ts="1800000200.000300", thread_ts="1800000100.000100")
    [reply] = await provider.parse_webhook(event_request(event, NOW))
    assert isinstance(reply, InboundReply)
    assert (reply.sender, reply.body, reply.channel, reply.in_reply_to) == (USER, "on it", "slack", "C0ALERTS01:1800000100.000100")
    assert reply.provider_message_id == "C0ALERTS01:1800000200.000300" and reply.occurred_at == 1800000200.0003
    assert reply.detail["event_id"] == "Ev0PV52K21"


@pytest.mark.parametrize(
    "event",
    [
        message_event("beep", bot_id="B0TIDINGS1"),
        message_event("edited", subtype="message_changed"),
        message_event("", subtype="channel_join"),
        {"type": "event_callback", "event": {"type": "app_mention", "user": USER, "text": "hi", "channel": "C1", "ts": "1.2"}},
    ],
)
async def test_bots_edits_and_other_events_are_not_replies(provider: SlackProvider, event: dict[str, Any]) -> None:
    assert await provider.parse_webhook(event_request(event, NOW)) == []


async def test_a_top_level_message_is_a_reply_to_nothing_in_particular(provider: SlackProvider) -> None:
    [reply] = await provider.parse_webhook(event_request(message_event("hello", ts="1800000100.000100", thread_ts="1800000100.000100"), NOW))
    assert isinstance(reply, InboundReply) and reply.in_reply_to is None  # the thread's parent itself


# -- 6. the credentials check ------------------------------------------------------------------------------------


async def test_check_credentials_names_the_workspace_and_bot_and_a_refusal_is_raised(provider: SlackProvider, slack: FakeSlack) -> None:
    described = await provider.check_credentials()
    assert described == "Slack workspace Acme (T0ACME0001), bot user tidings (U0TIDINGS1)"
    assert slack.calls[0].method == "auth.test" and slack.calls[0].headers["Authorization"] == f"Bearer {BOT_TOKEN}"
    async with aiohttp.ClientSession() as session:
        with pytest.raises(CredentialsRejectedError):
            await make_provider(session, slack, bot_token="xoxb-revoked").check_credentials()


# -- 4 and 5. through the real app ----------------------------------------------------------------------------------


@pytest.fixture
async def api(aiohttp_client: Any, tmp_path: Path, clock: FakeClock, slack: FakeSlack) -> Api:
    policies = tmp_path / "policies"
    (policies / "secrets").mkdir(parents=True)
    (policies / "secrets" / "slack-token").write_text(BOT_TOKEN)
    (policies / "secrets" / "slack-signing-secret").write_text(SIGNING_SECRET)
    (policies / "policy.yaml").write_text(textwrap.dedent(f"""
        tenants:
          acme:
            api_keys: [{key_entry(LIVE_KEY)}]
        providers:
          slack:
            plugin: slack
            config:
              base_url: {json.dumps(slack.url)}
              bot_token: {{$file: secrets/slack-token}}
              signing_secret: {{$file: secrets/slack-signing-secret}}
        channels:
          slack: {{providers: [slack]}}
        """))
    return await serve(aiohttp_client, policies, {"slack": SlackProvider}, clock)


async def post_event(api: Api, payload: dict[str, Any], at: int = NOW) -> int:
    body = json.dumps(payload).encode()
    response = await api.client.post("/api/v1/webhooks/slack", data=body, headers=event_headers(body, at))
    await api.app[INBOUND].drain()
    await api.app[OUTCOMES].drain()
    return response.status


async def test_a_message_sent_through_the_api_is_posted_with_its_blocks_and_delivered(api: Api, slack: FakeSlack) -> None:
    body = {"recipient": {"slack_user_id": USER}, "notification": {"channels": ["slack"], "body": "Deploy finished"},
            "metadata": {"slack_blocks": json.dumps(BLOCKS)}}
    status, accepted = await api.send(body)
    assert status == 202, accepted
    found = await api.wait_for(accepted["notification_id"], lambda n: n["deliveries"][0]["status"] == "delivered")
    [posted] = slack.posted
    assert (posted["channel"], posted["text"], posted["blocks"]) == (USER, "Deploy finished", BLOCKS)
    assert found["deliveries"][0]["provider_message_id"] == f"{posted['posted_to']}:{posted['ts']}"
    assert found["status"] == "delivered"


async def test_a_thread_reply_through_the_events_api_is_linked_to_the_notification(api: Api, slack: FakeSlack) -> None:
    status, accepted = await api.send({"recipient": {"slack_channel": "C0ALERTS01"}, "notification": {"channels": ["slack"], "body": "Disk full"}})
    assert status == 202
    await api.wait_for(accepted["notification_id"], lambda n: n["deliveries"][0]["status"] == "delivered")
    ts = slack.posted[0]["ts"]
    assert await post_event(api, message_event("looking", channel="C0ALERTS01", ts="1800000300.000100", thread_ts=ts)) == 200
    assert await post_event(api, message_event("beep", channel="C0ALERTS01", ts="1800000301.000100", thread_ts=ts, bot_id="B0X")) == 200
    assert await post_event(api, message_event("forged", channel="C0ALERTS01", thread_ts=ts), at=NOW - 301) == 401
    _, replies = await api.get("/api/v1/replies")
    [reply] = replies["items"]
    assert (reply["from"], reply["body"], reply["channel"], reply["notification_id"]) == (USER, "looking", "slack", accepted["notification_id"])


async def test_slack_checking_the_request_url_gets_its_challenge_back_through_the_gateway(api: Api) -> None:
    challenge = "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    body = json.dumps(url_verification(challenge)).encode()
    response = await api.client.post("/api/v1/webhooks/slack", data=body, headers=event_headers(body, NOW))
    assert response.status == 200 and await response.text() == challenge
    forged = await api.client.post("/api/v1/webhooks/slack", data=body, headers=event_headers(body, NOW - 301))
    assert forged.status == 401 and challenge not in await forged.text()
