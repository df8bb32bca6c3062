"""What a caller can learn before sending: channel capabilities, liveness and readiness."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import LIVE_KEY, OTHER_KEY, SUSPENDED_KEY, TEST_KEY, Api

from gateway.http.appkeys import POLICIES

CAPABILITIES = "/api/v1/channels/capabilities"


async def capabilities(api: Api, key: str = LIVE_KEY) -> dict[str, Any]:
    status, body = await api.get(CAPABILITIES, key=key)
    assert status == 200, body
    return body


def by_channel(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["channel"]: entry for entry in body["channels"]}


async def test_capabilities_list_every_channel_once_with_how_to_address_it(api: Api) -> None:
    body = await capabilities(api)
    assert body["mode"] == "live"
    names = [entry["channel"] for entry in body["channels"]]
    assert len(names) == len(set(names))
    assert {"email", "sms", "voice", "whatsapp", "slack", "telegram", "push", "webhook"} <= set(names)
    channels = by_channel(body)
    assert channels["sms"]["recipient_fields"] == ["phone"]
    assert channels["email"]["recipient_fields"] == ["email"]
    assert channels["slack"]["recipient_fields"] == ["slack_user_id", "slack_channel"]
    assert channels["push"]["recipient_fields"] == ["device_token"]
    assert channels["email"]["subject"] is True
    assert channels["sms"]["subject"] is False
    assert all(isinstance(entry["description"], str) and entry["description"] for entry in body["channels"])


async def test_whatsapp_requires_a_template_and_the_others_allow_raw_content(api: Api) -> None:
    channels = by_channel(await capabilities(api))
    assert (channels["whatsapp"]["template_required"], channels["whatsapp"]["raw_allowed"]) == (True, False)
    for name in ("sms", "email", "voice", "slack", "telegram", "push", "webhook"):
        assert (channels[name]["template_required"], channels[name]["raw_allowed"]) == (False, True), name


async def test_a_live_key_sees_the_providers_routed_for_its_tenant(api: Api) -> None:
    channels = by_channel(await capabilities(api))
    for name in ("sms", "email", "whatsapp", "slack", "telegram", "voice"):
        assert channels[name]["providers"] == ["memory"], name
        assert channels[name]["available"] is True
    for name in ("push", "webhook"):
        assert channels[name]["providers"] == [], name
        assert channels[name]["available"] is False


async def test_a_test_key_sees_the_sandbox_on_every_channel(api: Api) -> None:
    body = await capabilities(api, TEST_KEY)
    assert body["mode"] == "test"
    for entry in body["channels"]:
        assert entry["providers"] == ["sandbox"], entry["channel"]
        assert entry["available"] is True


async def test_another_tenant_gets_its_own_view(api: Api) -> None:
    body = await capabilities(api, OTHER_KEY)
    assert body["mode"] == "live"
    assert by_channel(body)["sms"]["providers"] == ["memory"]


async def test_what_capabilities_call_unavailable_is_refused_on_send_and_what_they_call_available_is_accepted(api: Api) -> None:
    channels = by_channel(await capabilities(api))
    status, answer = await api.send({"recipient": {"device_token": "tok"}, "notification": {"channels": ["push"], "subject": "s", "body": "b"}})
    assert channels["push"]["available"] is False
    assert status == 422
    assert answer["error"]["code"] == "channel_unavailable"
    status, _ = await api.send({"recipient": {"telegram_chat_id": "42"}, "notification": {"channels": ["telegram"], "body": "b"}})
    assert channels["telegram"]["available"] is True
    assert status == 202


@pytest.mark.parametrize(("key", "status", "code"), [(None, 401, "unauthorized"), (SUSPENDED_KEY, 403, "tenant_suspended")])
async def test_capabilities_need_an_active_api_key(api: Api, key: str | None, status: int, code: str) -> None:
    response = await api.client.get(CAPABILITIES, headers={"X-API-Key": key} if key else {})
    assert response.status == status
    assert (await response.json())["error"]["code"] == code


async def test_healthz_answers_200_without_an_api_key(api: Api) -> None:
    response = await api.client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}


async def test_readyz_is_200_with_every_check_passing_and_the_policy_version(api: Api) -> None:
    response = await api.client.get("/readyz")
    assert response.status == 200
    body = await response.json()
    assert body["ready"] is True
    assert body["checks"] == {"store": True, "policies": True, "dispatcher": True}
    policy = body["policy"]
    assert policy["version"] == api.app[POLICIES].current.version
    assert isinstance(policy["version"], str) and policy["version"]
    assert policy["last_error"] is None
    assert [file.rsplit("/", 1)[-1] for file in policy["files"]] == ["policy.yaml"]
