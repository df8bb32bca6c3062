"""The ntfy provider against the fake ntfy server: request shape, auth, the error table, credentials.

These run on their own (``pytest`` in ``examples/tidings-ntfy``) and as part of Tidings' suite.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from gateway import CredentialsRejectedError, OutboundMessage, PermanentDeliveryError, TransientDeliveryError, conformance
from gateway.channels import ChannelCatalog
from gateway.clock import SystemClock
from gateway.plugin_api import ProviderContext
from gateway.plugins import PluginCatalog
from tidings_ntfy import NtfyProvider
from tidings_ntfy.testing import KIT, PASSWORD, TOKEN, TOPIC, USERNAME, FakeNtfy

DELIVERY = "dlv_01JNTFYTEST000000000000000"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def ntfy() -> AsyncIterator[FakeNtfy]:
    async with FakeNtfy().serving() as fake:
        yield fake


def provider(session: aiohttp.ClientSession, server: str, **config: Any) -> NtfyProvider:
    context = ProviderContext(session=session, clock=SystemClock(), report=lambda _updates: None)
    return NtfyProvider("ntfy-test", {"server": server, "timeout_seconds": 0.5, **config}, context)


def message(to: str = TOPIC, **content: Any) -> OutboundMessage:
    content.setdefault("body", "Disk on db-1 is 91% full")
    return OutboundMessage(
        delivery_id=DELIVERY, notification_id="ntf_01JNTFYTEST000000000000000", tenant="acme", channel="ntfy",
        to=to, recipient={"ntfy_topic": to}, **content,
    )


# --- what ntfy receives --------------------------------------------------------------------------


async def test_publishes_json_to_the_server_root_with_a_bearer_token(session: aiohttp.ClientSession, ntfy: FakeNtfy) -> None:
    sender = provider(session, ntfy.url, token=TOKEN, priority="high", tags=["warning", "floppy_disk"])
    receipt = await sender.send(message(subject="Déploiement ✅ db-1"))
    assert receipt.provider_message_id == ntfy.messages[0]["id"] == "000000000001"
    assert ntfy.messages[0] == {
        "topic": TOPIC, "message": "Disk on db-1 is 91% full", "title": "Déploiement ✅ db-1", "priority": 4,
        "tags": ["warning", "floppy_disk"], "sequence_id": DELIVERY, "id": "000000000001", "user": "tidings-bot",
    }
    method, path, headers = ntfy.requests[0]
    assert (method, path, headers["Authorization"]) == ("POST", "/", f"Bearer {TOKEN}")
    assert headers["Content-Type"].startswith("application/json")


async def test_a_retry_sends_the_same_sequence_id_so_clients_show_it_once(session: aiohttp.ClientSession, ntfy: FakeNtfy) -> None:
    sender = provider(session, ntfy.url, token=TOKEN)
    ntfy.fail_next("5xx")
    with pytest.raises(TransientDeliveryError):
        await sender.send(message())
    await sender.send(message())
    assert [m["sequence_id"] for m in ntfy.messages] == [DELIVERY]
    assert len(ntfy.requests) == 2


async def test_basic_auth_with_a_user_and_password(session: aiohttp.ClientSession, ntfy: FakeNtfy) -> None:
    await provider(session, ntfy.url, username=USERNAME, password=PASSWORD).send(message())
    assert ntfy.messages[0]["user"] == USERNAME
    assert ntfy.requests[0][2]["Authorization"].startswith("Basic ")


async def test_an_open_topic_needs_no_credentials_and_gets_no_authorization_header(session: aiohttp.ClientSession) -> None:
    async with FakeNtfy(token=None, users={}, anonymous=True).serving() as open_server:
        await provider(session, open_server.url).send(message())
    assert open_server.messages[0]["user"] is None
    assert "Authorization" not in open_server.requests[0][2]
    assert "title" not in open_server.messages[0] and "priority" not in open_server.messages[0]


async def test_metadata_overrides_priority_and_tags_for_one_message(session: aiohttp.ClientSession, ntfy: FakeNtfy) -> None:
    sender = provider(session, ntfy.url, token=TOKEN, priority=2, tags=["info"], markdown=True)
    await sender.send(message(metadata={"ntfy_priority": "urgent", "ntfy_tags": "rotating_light, db-1"}))
    await sender.send(message(metadata={"ntfy_priority": 3}))
    first, second = ntfy.messages
    assert (first["priority"], first["tags"], first["markdown"]) == (5, ["rotating_light", "db-1"], True)
    assert (second["priority"], second["tags"]) == (3, ["info"])


@pytest.mark.parametrize(
    ("to", "content", "code"),
    [
        ("alerts/../admin", {}, "invalid_recipient"),
        ("x" * 65, {}, "invalid_recipient"),
        (TOPIC, {"body": None, "html": "<p>hi</p>"}, "missing_content"),
        (TOPIC, {"metadata": {"ntfy_priority": "loud"}}, "invalid_request"),
    ],
)
async def test_what_ntfy_would_refuse_is_refused_before_any_request(
    session: aiohttp.ClientSession, ntfy: FakeNtfy, to: str, content: dict[str, Any], code: str
) -> None:
    with pytest.raises(PermanentDeliveryError) as caught:
        await provider(session, ntfy.url, token=TOKEN).send(message(to, **content))
    assert caught.value.code == code
    assert ntfy.requests == []


# --- the error table -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "retry_after", "error", "code", "expected_retry_after"),
    [
        ("5xx", None, TransientDeliveryError, "50001", None),
        ("502", None, TransientDeliveryError, "http_502", None),
        ("429", None, TransientDeliveryError, "rate_limited", None),
        ("429", 30, TransientDeliveryError, "rate_limited", 30.0),
        ("message_limit", None, TransientDeliveryError, "rate_limited", None),
        ("reject_recipient", None, PermanentDeliveryError, "invalid_recipient", None),
        ("413", None, PermanentDeliveryError, "message_too_large", None),
        ("not_ntfy", None, PermanentDeliveryError, "unexpected_response", None),
        ("timeout", None, TransientDeliveryError, "unreachable", None),
    ],
)
async def test_each_ntfy_failure_is_transient_or_permanent_with_its_code(
    session: aiohttp.ClientSession, ntfy: FakeNtfy, fault: str, retry_after: int | None, error: type[Exception],
    code: str, expected_retry_after: float | None,
) -> None:
    ntfy.fail_next(fault, retry_after=retry_after)
    with pytest.raises(error) as caught:
        await provider(session, ntfy.url, token=TOKEN, timeout_seconds=0.2).send(message())
    assert not isinstance(caught.value, CredentialsRejectedError)
    assert caught.value.code == code  # type: ignore[attr-defined]
    if error is TransientDeliveryError:
        assert caught.value.retry_after == expected_retry_after  # type: ignore[attr-defined]
    assert ntfy.messages == []


@pytest.mark.parametrize(
    ("server", "config", "code"),
    [
        ({}, {"token": "tk_wrongwrongwrongwrongwrong000"}, "40101"),
        ({}, {"username": USERNAME, "password": "not-it"}, "40101"),
        ({}, {}, "40301"),
        ({"denied": frozenset({TOPIC})}, {"token": TOKEN}, "40301"),
    ],
)
async def test_refused_credentials_are_reported_as_such_without_the_secret(
    session: aiohttp.ClientSession, server: dict[str, Any], config: dict[str, Any], code: str
) -> None:
    async with FakeNtfy(**server).serving() as fake:
        with pytest.raises(CredentialsRejectedError) as caught:
            await provider(session, fake.url, **config).send(message())
    assert caught.value.code == code
    for secret in (TOKEN, PASSWORD, config.get("token"), config.get("password")):
        assert secret is None or secret not in str(caught.value)


def test_the_config_schema_refuses_both_kinds_of_auth_and_credentials_in_the_url() -> None:
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(dict(NtfyProvider.config_schema))
    assert validator.is_valid({"server": "https://ntfy.sh"})
    assert validator.is_valid({"server": "https://ntfy.example.com/base", "username": "u", "password": "p", "priority": "urgent"})
    assert not validator.is_valid({})
    assert not validator.is_valid({"server": "https://ntfy.sh", "token": TOKEN, "username": "u", "password": "p"})
    assert not validator.is_valid({"server": "https://ntfy.sh", "username": "u"})
    assert not validator.is_valid({"server": "https://u:p@ntfy.sh"})
    assert not validator.is_valid({"server": "https://ntfy.sh", "token": "not-a-token"})
    assert not validator.is_valid({"server": "https://ntfy.sh", "priority": 6})
    assert not validator.is_valid({"server": "https://ntfy.sh", "topic": "x"})


# --- check_credentials ---------------------------------------------------------------------------


async def test_check_credentials_names_the_account_the_server_sees(session: aiohttp.ClientSession, ntfy: FakeNtfy) -> None:
    host = ntfy.url.removeprefix("http://")
    assert await provider(session, ntfy.url, token=TOKEN).check_credentials() == f"ntfy user 'tidings-bot' (user) at {host}"
    assert await provider(session, ntfy.url, username=USERNAME, password=PASSWORD).check_credentials() == f"ntfy user 'tidings' (user) at {host}"
    assert await provider(session, ntfy.url).check_credentials() == f"ntfy server at {host}, publishing anonymously"
    assert [path for _method, path, _headers in ntfy.requests] == ["/v1/account"] * 3


async def test_check_credentials_refused_and_on_a_server_without_accounts(session: aiohttp.ClientSession, ntfy: FakeNtfy) -> None:
    with pytest.raises(CredentialsRejectedError):
        await provider(session, ntfy.url, token="tk_wrongwrongwrongwrongwrong000").check_credentials()
    async with FakeNtfy(accounts=False).serving() as old:
        described = await provider(session, old.url, token=TOKEN).check_credentials()
    assert described is not None and "credentials not checked" in described


# --- the shared conformance checks, run with this plugin's own kit ------------------------------


async def test_the_conformance_kit_passes_every_check(session: aiohttp.ClientSession) -> None:
    channels = ChannelCatalog.with_builtins(NtfyProvider.new_channels)
    async with KIT.serve() as fake:
        sender = KIT.plugin("conformance-ntfy", KIT.config(fake), conformance.context(session))
        conformance.check_declarations(KIT, channels, KIT.config(fake))
        conformance.check_secrets_masked(KIT, sender)
        await conformance.check_send(KIT, fake, sender)
        for fault in sorted(KIT.faults):
            await conformance.check_fault(KIT, fake, sender, fault)
        await conformance.check_webhooks(KIT, fake, sender)
    assert KIT.faults == conformance.ALL_FAULTS


def test_the_installed_distribution_registers_the_provider_and_its_kit() -> None:
    catalog = PluginCatalog.discover()
    assert catalog.get("ntfy") is NtfyProvider, catalog.failures.get("ntfy")
    assert catalog.origins["ntfy"] == "tidings_ntfy:NtfyProvider"
    assert conformance.installed_kits()["ntfy"] is KIT
    assert catalog.channel_catalog().get("ntfy") is not None


# --- the fake itself: it must catch what real ntfy would refuse ---------------------------------


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        ({"topic": TOPIC, "message": "hi", "titel": "typo"}, 400, None),
        ({"topic": "no spaces", "message": "hi"}, 400, 40009),
        ({"message": "hi"}, 400, 40009),
        ({"topic": TOPIC, "priority": "high"}, 400, 40007),
        ({"topic": TOPIC, "tags": "a,b"}, 400, 40017),
        ([TOPIC], 400, 40017),
    ],
)
async def test_the_fake_refuses_a_malformed_publish_like_ntfy(
    session: aiohttp.ClientSession, ntfy: FakeNtfy, payload: Any, status: int, code: int | None
) -> None:
    async with session.post(f"{ntfy.url}/", json=payload, headers={"Authorization": f"Bearer {TOKEN}"}) as response:
        answer = await response.json()
    assert response.status == status
    assert answer.get("code") == code and answer["http"] == status
    assert ntfy.messages == []
