"""The fcm plugin against a fake FCM and Google token endpoint on loopback, and end to end through a real app."""

from __future__ import annotations

import asyncio
import json
import logging
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import LIVE_KEY, Api, FakeClock, key_entry
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fakes.fcm import CLIENT_EMAIL, DEVICE_TOKEN, PROJECT, FakeFcm, service_account

from gateway import CredentialsRejectedError, DeliveryError, OutboundMessage, PermanentDeliveryError, ProviderContext, TransientDeliveryError
from gateway.app import create_app
from gateway.conformance import outbound
from gateway.plugins import PluginCatalog
from gateway.settings import Settings
from plugins.fcm import SCOPE, FcmProvider


@pytest.fixture
async def fcm(clock: FakeClock) -> AsyncIterator[FakeFcm]:
    """The fake keeps the test's time, so assertions signed on the context clock are in their timeframe."""
    async with FakeFcm(clock=clock.now).serving() as fake:
        yield fake


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    """Generated once for these tests by cryptography (2048-bit RSA, as Google's keys are)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def account(fcm: FakeFcm, rsa_key: rsa.RSAPrivateKey) -> dict[str, str]:
    """A service-account key file around the test's RSA key, trusted by the fake."""
    key = service_account(fcm.token_url, key=rsa_key)
    fcm.trust(key)
    return key


def provider(session: aiohttp.ClientSession, fcm: FakeFcm, account: Any, clock: FakeClock, **config: Any) -> FcmProvider:
    settings = {"service_account": json.dumps(account) if isinstance(account, dict) else account, "base_url": fcm.url, "timeout_seconds": 2}
    return FcmProvider("push", settings | config, ProviderContext(session=session, clock=clock, report=lambda _u: None))


def message(**content: Any) -> OutboundMessage:
    content.setdefault("subject", "Order 1001 shipped")
    content.setdefault("body", "It arrives tomorrow.")
    return outbound("push", DEVICE_TOKEN, {"device_token": DEVICE_TOKEN}, **content)


# -- 1. request shape and auth -------------------------------------------------------------------


async def test_trades_a_signed_assertion_for_a_token_and_sends_the_v1_message(
    session: aiohttp.ClientSession, fcm: FakeFcm, account: dict[str, str], clock: FakeClock
) -> None:
    receipt = await provider(session, fcm, account, clock).send(message(metadata={"order_id": "1001", "items": 3, "gift": True}))
    [token_request] = fcm.token_requests
    assert token_request.status == 200  # the fake verified the RS256 signature with the account's public key
    assert token_request.header == {"alg": "RS256", "typ": "JWT", "kid": account["private_key_id"]}
    assert token_request.claims == {
        "iss": CLIENT_EMAIL, "scope": SCOPE, "aud": fcm.token_url, "iat": int(clock.now()), "exp": int(clock.now()) + 3600,
    }
    [send] = fcm.sends
    assert (send.project, send.status) == (PROJECT, 200)
    assert send.bearer is not None and send.bearer.startswith("ya29.")
    assert send.body == {
        "message": {
            "token": DEVICE_TOKEN,
            "notification": {"title": "Order 1001 shipped", "body": "It arrives tomorrow."},
            "data": {
                "order_id": "1001", "items": "3", "gift": "true",
                "tidings_delivery_id": "dlv_01JCONFORMANCE0000000000000", "tidings_notification_id": "ntf_01JCONFORMANCE0000000000000",
            },
        }
    }
    assert receipt.provider_message_id.startswith(f"projects/{PROJECT}/messages/")


async def test_reserved_data_keys_are_left_out_and_ours_cannot_be_overridden(
    session: aiohttp.ClientSession, fcm: FakeFcm, account: dict[str, str], clock: FakeClock
) -> None:
    metadata = {"from": "x", "google.c.a.e": "1", "gcm.n.e": "1", "message_type": "x", "tidings_delivery_id": "forged", "nested": {"a": [1]}, "none": None}
    await provider(session, fcm, account, clock).send(message(metadata=metadata, subject=None))
    [send] = fcm.sends
    assert send.body["message"]["data"] == {
        "nested": '{"a":[1]}', "tidings_delivery_id": "dlv_01JCONFORMANCE0000000000000", "tidings_notification_id": "ntf_01JCONFORMANCE0000000000000",
    }
    assert send.body["message"]["notification"] == {"body": "It arrives tomorrow."}  # no subject: no title


async def test_a_push_with_neither_title_nor_body_never_reaches_fcm(
    session: aiohttp.ClientSession, fcm: FakeFcm, account: dict[str, str], clock: FakeClock
) -> None:
    with pytest.raises(PermanentDeliveryError) as refused:
        await provider(session, fcm, account, clock).send(message(subject=None, body=""))
    assert refused.value.code == "empty_body" and fcm.sends == [] and fcm.token_requests == []


async def test_the_key_can_be_an_object_and_the_project_and_token_uri_overridden(
    session: aiohttp.ClientSession, fcm: FakeFcm, clock: FakeClock, rsa_key: rsa.RSAPrivateKey
) -> None:
    key = service_account("https://oauth2.googleapis.com/token", project_id="acme-other-project", key=rsa_key)
    fcm.trust(key | {"project_id": PROJECT})  # the account may send for the test project
    plugin = provider(session, fcm, key, clock, project_id=PROJECT, token_uri=fcm.token_url)
    await plugin.send(message())
    assert fcm.token_requests[0].claims["aud"] == fcm.token_url
    assert [s.project for s in fcm.sends] == [PROJECT]


async def test_sending_for_a_project_the_account_cannot_use_is_a_credentials_failure(
    session: aiohttp.ClientSession, fcm: FakeFcm, account: dict[str, str], clock: FakeClock
) -> None:
    with pytest.raises(CredentialsRejectedError) as refused:
        await provider(session, fcm, account, clock, project_id="somebody-elses-app").send(message())
    assert refused.value.detail["status"] == "PERMISSION_DENIED"


# -- the access token: cached, refreshed before expiry, refreshed once on a 401 -------------------


async def test_the_access_token_is_reused_until_shortly_before_it_expires(
    session: aiohttp.ClientSession, fcm: FakeFcm, account: dict[str, str], clock: FakeClock
) -> None:
    plugin = provider(session, fcm, account, clock)
    await asyncio.gather(*(plugin.send(message()) for _ in range(5)))
    assert len(fcm.token_requests) == 1 and len({s.bearer for s in fcm.sends}) == 1  # concurrent sends share one fetch
    clock.advance(fcm.token_lifetime - 301)
    await plugin.send(message())
    assert len(fcm.token_requests) == 1
    clock.advance(2)  # now within five minutes of expiry
    await plugin.send(message())
    assert len(fcm.token_requests) == 2
    assert fcm.token_requests[1].claims["iat"] == int(clock.now())
    assert fcm.sends[-1].bearer != fcm.sends[0].bearer and all(s.status == 200 for s in fcm.sends)


async def test_a_refused_access_token_is_replaced_once_and_the_send_retried(
    session: aiohttp.ClientSession, fcm: FakeFcm, account: dict[str, str], clock: FakeClock
) -> None:
    plugin = provider(session, fcm, account, clock)
    await plugin.send(message())
    fcm.revoke_access_tokens()
    await plugin.send(message())
    assert [s.status for s in fcm.sends] == [200, 401, 200]
    assert len(fcm.token_requests) == 2


async def test_a_token_refused_twice_is_a_credentials_failure(
    session: aiohttp.ClientSession, fcm: FakeFcm, account: dict[str, str], clock: FakeClock
) -> None:
    fcm.accept_tokens = False
    with pytest.raises(CredentialsRejectedError) as refused:
        await provider(session, fcm, account, clock).send(message())
    assert [s.status for s in fcm.sends] == [401, 401] and len(fcm.token_requests) == 2
    assert refused.value.detail["status"] == "UNAUTHENTICATED"


async def test_a_third_party_auth_error_is_not_retried_with_a_new_token(
    session: aiohttp.ClientSession, fcm: FakeFcm, account: dict[str, str], clock: FakeClock
) -> None:
    fcm.fail_next("third_party_auth")
    with pytest.raises(CredentialsRejectedError):
        await provider(session, fcm, account, clock).send(message())
    assert [s.status for s in fcm.sends] == [401] and len(fcm.token_requests) == 1


@pytest.mark.parametrize(
    ("fault", "error", "code"),
    [("invalid_grant", CredentialsRejectedError, "invalid_grant"), ("invalid_request", CredentialsRejectedError, "invalid_request"),
     ("5xx", TransientDeliveryError, "http_503")],
)
async def test_the_token_endpoints_refusals(
    session: aiohttp.ClientSession, fcm: FakeFcm, account: dict[str, str], clock: FakeClock,
    fault: str, error: type[DeliveryError], code: str,
) -> None:
    fcm.fail_next_token(fault)
    with pytest.raises(DeliveryError) as raised:
        await provider(session, fcm, account, clock).send(message())
    assert type(raised.value) is error and raised.value.code == code and fcm.sends == []


async def test_a_disabled_key_or_a_clock_far_off_is_refused_as_credentials(
    session: aiohttp.ClientSession, fcm: FakeFcm, account: dict[str, str], clock: FakeClock, rsa_key: rsa.RSAPrivateKey
) -> None:
    fcm.disable(CLIENT_EMAIL)
    with pytest.raises(CredentialsRejectedError):
        await provider(session, fcm, account, clock).send(message())
    async with FakeFcm().serving() as real_time:  # Google's clock; ours is in 2027
        key = service_account(real_time.token_url, key=rsa_key)
        real_time.trust(key)
        with pytest.raises(CredentialsRejectedError) as skewed:
            await provider(session, real_time, key, clock).send(message())
    assert real_time.token_requests[0].error == "invalid_grant" and skewed.value.code == "invalid_grant"


def _ec_pem() -> str:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param(lambda key: json.dumps(key)[:-20], id="truncated JSON"),
        pytest.param(lambda key: {k: v for k, v in key.items() if k != "private_key"}, id="no private_key"),
        pytest.param(lambda key: key | {"private_key": key["private_key"].replace("A", "B", 40)}, id="corrupt PEM"),
        pytest.param(lambda key: key | {"private_key": _ec_pem()}, id="not RSA"),
        pytest.param(lambda key: {k: v for k, v in key.items() if k != "project_id"}, id="no project"),
    ],
)
async def test_an_unusable_key_is_a_credentials_failure_that_quotes_none_of_it(
    session: aiohttp.ClientSession, fcm: FakeFcm, account: dict[str, str], clock: FakeClock, broken: Any
) -> None:
    plugin = provider(session, fcm, broken(account), clock)
    for attempt in (plugin.send(message()), plugin.check_credentials()):
        with pytest.raises(CredentialsRejectedError) as refused:
            await attempt
        shown = str(refused.value) + repr(refused.value.detail)
        assert "PRIVATE KEY" not in shown and account["private_key"].splitlines()[2] not in shown
        assert refused.value.__cause__ is None
    assert fcm.token_requests == [] and fcm.sends == []


# -- 2. the error table ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "error", "code", "retry_after", "vendor_code"),
    [
        ("reject_recipient", PermanentDeliveryError, "invalid_recipient", None, "UNREGISTERED"),
        ("invalid_token", PermanentDeliveryError, "invalid_recipient", None, "INVALID_ARGUMENT"),
        ("too_big", PermanentDeliveryError, "invalid_message", None, "INVALID_ARGUMENT"),
        ("sender_id_mismatch", PermanentDeliveryError, "sender_id_mismatch", None, "SENDER_ID_MISMATCH"),
        ("third_party_auth", CredentialsRejectedError, "THIRD_PARTY_AUTH_ERROR", None, "THIRD_PARTY_AUTH_ERROR"),
        ("quota", TransientDeliveryError, "rate_limited", 60.0, "QUOTA_EXCEEDED"),
        ("5xx", TransientDeliveryError, "unavailable", 30.0, "UNAVAILABLE"),
        ("internal", TransientDeliveryError, "internal", None, "INTERNAL"),
        ("permission_denied", CredentialsRejectedError, "PERMISSION_DENIED", None, "PERMISSION_DENIED"),
    ],
)
async def test_each_fcm_error_is_classified(
    session: aiohttp.ClientSession, fcm: FakeFcm, account: dict[str, str], clock: FakeClock,
    fault: str, error: type[DeliveryError], code: str, retry_after: float | None, vendor_code: str,
) -> None:
    fcm.fail_next(fault)
    with pytest.raises(DeliveryError) as raised:
        await provider(session, fcm, account, clock).send(message())
    assert type(raised.value) is error
    assert (raised.value.code, raised.value.detail["vendor_code"]) == (code, vendor_code)
    if isinstance(raised.value, TransientDeliveryError):
        assert raised.value.retry_after == retry_after


async def test_a_timeout_is_transient(session: aiohttp.ClientSession, fcm: FakeFcm, account: dict[str, str], clock: FakeClock) -> None:
    fcm.fail_next("timeout")
    with pytest.raises(TransientDeliveryError) as raised:
        await provider(session, fcm, account, clock, timeout_seconds=0.2).send(message())
    assert raised.value.code == "unreachable"


async def test_nothing_shows_the_key_or_the_access_token(
    session: aiohttp.ClientSession, fcm: FakeFcm, account: dict[str, str], clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    plugin = provider(session, fcm, account, clock)
    await plugin.send(message())
    fcm.accept_tokens = False
    with pytest.raises(CredentialsRejectedError) as refused:
        await plugin.send(message())
    secrets = [account["private_key"].splitlines()[3], *{s.bearer for s in fcm.sends if s.bearer}]
    shown = " ".join([repr(plugin), str(refused.value), repr(refused.value.detail), caplog.text, repr(plugin._account())])
    assert not [secret for secret in secrets if secret in shown]


# -- 6. check_credentials ---------------------------------------------------------------------------


async def test_check_credentials_names_the_account_and_project(
    session: aiohttp.ClientSession, fcm: FakeFcm, account: dict[str, str], clock: FakeClock
) -> None:
    described = await provider(session, fcm, account, clock).check_credentials()
    assert described == f"service account {CLIENT_EMAIL} for project {PROJECT}"
    assert len(fcm.token_requests) == 1 and fcm.sends == []


async def test_check_credentials_with_a_deleted_key_raises(
    session: aiohttp.ClientSession, fcm: FakeFcm, account: dict[str, str], clock: FakeClock
) -> None:
    fcm.disable(CLIENT_EMAIL)
    with pytest.raises(CredentialsRejectedError):
        await provider(session, fcm, account, clock).check_credentials()


# -- 5. end to end through the HTTP API ----------------------------------------------------------------


@pytest.fixture
async def api(aiohttp_client: Any, tmp_path: Path, clock: FakeClock, fcm: FakeFcm, account: dict[str, str]) -> Api:
    policy_dir = tmp_path / "policies"
    (policy_dir / "secrets").mkdir(parents=True)
    (policy_dir / "secrets" / "fcm-key.json").write_text(json.dumps(account, indent=2) + "\n")
    (policy_dir / "policy.yaml").write_text(textwrap.dedent(f"""
        tenants:
          acme:
            api_keys: [{key_entry(LIVE_KEY)}]
        providers:
          push:
            plugin: fcm
            config:
              service_account: {{$file: secrets/fcm-key.json}}
              base_url: {json.dumps(fcm.url)}
              timeout_seconds: 2
        channels:
          push: {{providers: [push]}}
        """))
    settings = Settings(
        data_dir=tmp_path / "data", policy_dir=policy_dir, policy_reload=False, max_attempts=3, _env_file=None
    )
    app = create_app(settings, plugins=PluginCatalog.from_classes({"fcm": FcmProvider}), clock=clock)
    return Api(await aiohttp_client(app))


def push_body(token: str = DEVICE_TOKEN) -> dict[str, Any]:
    return {
        "recipient": {"device_token": token},
        "notification": {"channels": ["push"], "subject": "Order 1001 shipped", "body": "It arrives tomorrow."},
        "metadata": {"order_id": "1001"},
    }


async def test_a_push_through_the_api_reaches_fcm_with_its_delivery_id(api: Api, fcm: FakeFcm) -> None:
    status, accepted = await api.send(push_body())
    assert status == 202, accepted
    found = await api.wait_for(accepted["notification_id"], lambda n: n["status"] == "sent")
    [delivery] = found["deliveries"]
    [send] = fcm.sends
    assert delivery["provider_message_id"].startswith(f"projects/{PROJECT}/messages/")
    assert send.body["message"]["token"] == DEVICE_TOKEN
    assert send.body["message"]["notification"] == {"title": "Order 1001 shipped", "body": "It arrives tomorrow."}
    assert send.body["message"]["data"]["tidings_delivery_id"] == delivery["delivery_id"]
    assert send.body["message"]["data"]["tidings_notification_id"] == accepted["notification_id"]
    assert send.body["message"]["data"]["order_id"] == "1001"  # the request's metadata, for the app


async def test_a_dead_device_token_fails_the_delivery_for_good(api: Api, fcm: FakeFcm) -> None:
    fcm.dead_tokens.add(DEVICE_TOKEN)
    _, accepted = await api.send(push_body())
    found = await api.wait_for(accepted["notification_id"], lambda n: n["deliveries"][0]["status"] not in ("queued", "sending"))
    [delivery] = found["deliveries"]
    assert delivery["status"] == "failed" and delivery["attempt_count"] == 1
    assert delivery["attempts"][0]["detail"]["code"] == "invalid_recipient"
    assert delivery["attempts"][0]["detail"]["vendor_code"] == "UNREGISTERED"
