"""A channel a plugin adds works everywhere a built-in one does, and an ambiguous one is refused at load.

Two small plugins stand in for a third-party distribution: ``discord`` (two alternative recipient
fields, a subject) and ``kakao`` (provider-approved templates only). Everything goes through the
real HTTP API of an app on loopback over real SQLite, with the policy written to disk.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest
from conftest import LIVE_KEY, OTHER_KEY, TEST_KEY, Api, FakeClock, key_entry, run_cli
from ruamel.yaml import YAML

from gateway import ChannelSpec, OutboundMessage, Provider, SendReceipt
from gateway.app import create_app
from gateway.errors import PolicyError
from gateway.plugins import PluginCatalog
from gateway.policy import schema
from gateway.policy.loading import load_policies
from gateway.settings import Settings
from plugins.sandbox import SandboxProvider

DISCORD = ChannelSpec("discord", ("discord_user_id", "discord_webhook"), subject=True, description="Discord message")
KAKAO = ChannelSpec("kakao", ("kakao_id",), template_required=True, description="KakaoTalk alimtalk")


class DiscordProvider(Provider):
    """Records what it is handed, with the instance that sent it."""

    channels = frozenset({"discord"})
    new_channels = (DISCORD,)
    config_schema: ClassVar[Mapping[str, Any]] = {"type": "object", "additionalProperties": False}
    sent: ClassVar[list[tuple[str, OutboundMessage]]] = []

    async def send(self, message: OutboundMessage) -> SendReceipt:
        type(self).sent.append((self.name, message))
        return SendReceipt(provider_message_id=f"dsc-{len(type(self).sent)}")


class KakaoProvider(Provider):
    channels = frozenset({"kakao"})
    new_channels = (KAKAO,)
    config_schema: ClassVar[Mapping[str, Any]] = {"type": "object", "additionalProperties": False}
    sent: ClassVar[list[OutboundMessage]] = []

    async def send(self, message: OutboundMessage) -> SendReceipt:
        type(self).sent.append(message)
        return SendReceipt(provider_message_id=f"kko-{len(type(self).sent)}")


POLICY = f"""
tenants:
  acme:
    api_keys:
      - {key_entry(LIVE_KEY)}
      - {key_entry(TEST_KEY, "test")}
    senders:
      discord: {{from: ACME Bot}}
    channels:
      discord: {{providers: [acme-discord, shared-discord]}}
  other:
    api_keys: [{key_entry(OTHER_KEY)}]
providers:
  sandbox: {{plugin: sandbox}}
  shared-discord: {{plugin: discord}}
  acme-discord: {{plugin: discord, tenant: acme}}
  kakao: {{plugin: kakao}}
channels:
  discord: {{providers: [shared-discord]}}
  kakao: {{providers: [kakao]}}
templates:
  deploy:
    channels:
      discord: {{subject: "Deploy {{{{ app }}}}", body: "{{{{ app }}}} is live"}}
  otp:
    channels:
      kakao:
        provider_template: {{name: otp_code, language: ko, parameters: ["{{{{ code }}}}"]}}
routes:
  app-deployed:
    match: {{event: app.deployed}}
    notify: {{template: deploy, channels: [discord]}}
"""


def write_policy(directory: Path, text: str = POLICY) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "policy.yaml").write_text(textwrap.dedent(text))
    return directory


def catalog(**extra: type[Provider]) -> PluginCatalog:
    return PluginCatalog.from_classes({"sandbox": SandboxProvider, "discord": DiscordProvider, "kakao": KakaoProvider, **extra})


@pytest.fixture
async def api(aiohttp_client: Any, tmp_path: Path, clock: FakeClock) -> Api:
    DiscordProvider.sent = []
    KakaoProvider.sent = []
    settings = Settings(  # type: ignore[call-arg]
        data_dir=tmp_path / "data", policy_dir=write_policy(tmp_path / "policies"), policy_reload=False, _env_file=None
    )
    return Api(await aiohttp_client(create_app(settings, plugins=catalog(), clock=clock)))


def discord_send(recipient: Mapping[str, str], **notification: Any) -> dict[str, Any]:
    content = {"channels": ["discord"], "subject": "Heads up", "body": "The build is green"} | notification
    return {"recipient": dict(recipient), "notification": content}


# --- sending -------------------------------------------------------------------------------------


async def test_a_recipient_with_the_plugin_field_is_accepted_and_reaches_the_plugin(api: Api) -> None:
    status, body = await api.send(discord_send({"discord_user_id": "80351110224678912"}, html="<b>ignored</b>"))
    assert status == 202, body
    done = await api.wait_for(body["notification_id"], lambda n: n["status"] == "sent")
    delivery = done["deliveries"][0]
    assert (delivery["channel"], delivery["address"], delivery["provider"]) == ("discord", "80351110224678912", "acme-discord")
    assert delivery["provider_message_id"] == "dsc-1"
    instance, message = DiscordProvider.sent[0]
    assert instance == "acme-discord", "the tenant's own route for the plugin channel wins"
    assert (message.channel, message.to, message.subject, message.body) == ("discord", "80351110224678912", "Heads up", "The build is green")
    assert message.html is None, "html is an email thing"
    assert message.recipient == {"discord_user_id": "80351110224678912"}
    assert message.sender is not None and message.sender.address == "ACME Bot"


async def test_either_recipient_field_of_the_plugin_channel_addresses_it(api: Api) -> None:
    hook = "https://discord.com/api/webhooks/1/abc"
    status, body = await api.send(discord_send({"discord_webhook": hook}), key=OTHER_KEY)
    assert status == 202, body
    done = await api.wait_for(body["notification_id"], lambda n: n["status"] == "sent", key=OTHER_KEY)
    assert done["deliveries"][0]["address"] == hook
    assert done["deliveries"][0]["provider"] == "shared-discord", "other has no route of its own: the shared one"


async def test_the_plugin_channel_is_validated_like_a_built_in_one(api: Api) -> None:
    status, body = await api.send(discord_send({"phone": "+14155550100"}))
    assert status == 422
    [problem] = body["error"]["details"]
    assert problem["code"] == "missing_recipient_field"
    assert problem["message"] == "channel 'discord' needs recipient discord_user_id or discord_webhook"

    status, body = await api.send(discord_send({"discord_id": "1"}))
    assert status == 422
    unknown = body["error"]["details"][0]
    assert unknown["code"] == "unknown_recipient_field"
    assert "discord_user_id" in unknown["message"] and "kakao_id" in unknown["message"]

    status, body = await api.send(discord_send({"discord_user_id": "1"}, channels=["discrod"]))
    assert status == 422
    assert body["error"]["details"][0]["code"] == "unknown_channel"
    assert "discord" in body["error"]["details"][0]["message"] and "kakao" in body["error"]["details"][0]["message"]
    assert DiscordProvider.sent == []


async def test_a_template_carries_content_for_the_plugin_channel(api: Api) -> None:
    request = {"recipient": {"discord_user_id": "42"}, "notification": {"channels": ["discord"], "template_id": "deploy", "data": {"app": "shop"}}}
    status, body = await api.send(request)
    assert status == 202, body
    await api.wait_for(body["notification_id"], lambda n: n["status"] == "sent")
    _instance, message = DiscordProvider.sent[0]
    assert (message.subject, message.body, message.template_id) == ("Deploy shop", "shop is live", "deploy")

    status, body = await api.send(request | {"notification": {"channels": ["discord"], "template_id": "otp", "data": {"code": "1"}}})
    assert status == 422
    assert body["error"]["details"][0]["code"] == "template_channel_missing"


async def test_a_template_only_plugin_channel_refuses_a_raw_body_and_takes_its_provider_template(api: Api) -> None:
    status, body = await api.send({"recipient": {"kakao_id": "k-77"}, "notification": {"channels": ["kakao"], "body": "hi"}})
    assert status == 422
    assert body["error"]["details"][0]["code"] == "template_required"

    request = {"recipient": {"kakao_id": "k-77"}, "notification": {"channels": ["kakao"], "template_id": "otp", "data": {"code": "9042"}}}
    status, body = await api.send(request)
    assert status == 202, body
    await api.wait_for(body["notification_id"], lambda n: n["status"] == "sent")
    template = KakaoProvider.sent[0].provider_template
    assert template is not None and (template.name, template.parameters) == ("otp_code", ("9042",))


async def test_bulk_sends_on_the_plugin_channel_check_each_row(api: Api) -> None:
    status, body = await api.send_bulk(
        {
            "channels": ["discord"],
            "template_id": "deploy",
            "data": {"app": "shop"},
            "recipients": [{"discord_user_id": "1"}, {"phone": "+14155550100"}, {"discord_webhook": "https://x.example/h", "data": {"app": "blog"}}],
        }
    )
    assert status == 202, body
    assert (body["accepted"], body["rejected"]) == (2, 1)
    assert body["errors"][0]["index"] == 1
    assert body["errors"][0]["details"][0]["code"] == "missing_recipient_field"
    for accepted in body["notifications"]:
        await api.wait_for(accepted["notification_id"], lambda n: n["status"] == "sent")
    assert sorted(str(message.body) for _, message in DiscordProvider.sent) == ["blog is live", "shop is live"]


async def test_notifications_can_be_listed_by_the_plugin_channel(api: Api) -> None:
    status, body = await api.send(discord_send({"discord_user_id": "1"}))
    assert status == 202
    status, listed = await api.get("/api/v1/notifications?channel=discord")
    assert status == 200
    assert [item["notification_id"] for item in listed["items"]] == [body["notification_id"]]
    status, refused = await api.get("/api/v1/notifications?channel=ntfy")
    assert status == 400, "a channel no installed plugin adds is unknown"


async def test_a_test_key_sends_on_the_plugin_channel_through_the_sandbox(api: Api) -> None:
    status, body = await api.send(discord_send({"discord_user_id": "1"}), key=TEST_KEY)
    assert status == 202, body
    done = await api.wait_for(body["notification_id"], lambda n: n["status"] == "delivered", key=TEST_KEY)
    assert done["deliveries"][0]["provider"] == "sandbox"
    assert DiscordProvider.sent == []


# --- capabilities --------------------------------------------------------------------------------


async def test_capabilities_list_the_plugin_channels_with_their_recipient_fields(api: Api) -> None:
    status, body = await api.get("/api/v1/channels/capabilities")
    assert status == 200
    channels = {entry["channel"]: entry for entry in body["channels"]}
    assert {"email", "sms", "discord", "kakao"} <= channels.keys()
    assert channels["discord"] == {
        "channel": "discord", "description": "Discord message", "recipient_fields": ["discord_user_id", "discord_webhook"],
        "template_required": False, "raw_allowed": True, "subject": True, "providers": ["acme-discord", "shared-discord"], "available": True,
        "max_body_chars": None,
    }
    assert channels["kakao"]["template_required"] is True and channels["kakao"]["raw_allowed"] is False
    assert channels["email"]["available"] is False, "acme routes no email"

    status, body = await api.get("/api/v1/channels/capabilities", key=TEST_KEY)
    assert {entry["channel"]: entry["providers"] for entry in body["channels"]}["discord"] == ["sandbox"]


# --- policies ------------------------------------------------------------------------------------


def test_policies_route_reference_and_template_the_plugin_channel(tmp_path: Path) -> None:
    policy = load_policies(write_policy(tmp_path / "p"), catalog())
    assert policy.providers_for("acme", "discord") == ("acme-discord", "shared-discord")
    assert policy.providers_for("other", "discord") == ("shared-discord",)
    assert policy.sender("acme", "discord") is not None
    assert policy.template("acme", "deploy") is not None and "discord" in policy.template("acme", "deploy").channels  # type: ignore[union-attr]
    assert [spec.name for spec in policy.channels][-2:] == ["discord", "kakao"]


def issues_of(directory: Path, plugins: PluginCatalog) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        load_policies(directory, plugins)
    return [str(issue) for issue in caught.value.issues]


def test_without_the_plugin_every_reference_to_its_channel_is_refused_where_it_is(tmp_path: Path) -> None:
    without = PluginCatalog.from_classes({"sandbox": SandboxProvider, "kakao": KakaoProvider})
    issues = issues_of(write_policy(tmp_path / "p"), without)
    for where in (
        "tenants.acme.senders.discord", "tenants.acme.channels.discord", "channels.discord",
        "templates.deploy.channels.discord", "routes.app-deployed.notify.channels[0]",
    ):
        assert any(f": {where}: unknown channel 'discord'" in issue for issue in issues), (where, issues)
    assert any("providers.shared-discord.plugin: plugin 'discord' no such plugin installed" in issue for issue in issues)


def test_plugin_channel_rules_hold_in_policies(tmp_path: Path) -> None:
    policy = POLICY.replace("kakao: {providers: [kakao]}", "kakao: {providers: [shared-discord]}")
    policy = policy.replace('discord: {subject: "Deploy {{ app }}", body: "{{ app }} is live"}', 'discord: {body: "{{ app }} is live"}\n      kakao: {body: "raw"}')
    issues = issues_of(write_policy(tmp_path / "p", policy), catalog())
    assert any("channels.kakao.providers[0]: provider instance 'shared-discord' (plugin discord) does not serve channel 'kakao'" in i for i in issues), issues
    assert any("templates.deploy.channels.kakao: this channel sends only provider-approved templates" in i for i in issues), issues


def test_the_schema_leaves_channel_names_to_the_loader(tmp_path: Path) -> None:
    """Decision: channel names are not enumerated in the schema, so a plugin channel passes it like a built-in one."""
    document = YAML(typ="safe").load(textwrap.dedent(POLICY))
    assert list(schema.validator().iter_errors(document)) == []
    assert list(schema.validator().iter_errors(document | {"channels": {"not-a-channel": {"providers": ["x"]}}})) == []
    code, printed = run_cli("schema")
    assert code == 0 and printed == schema.render(schema.generate()), "tidings schema prints what the models define, plugins or not"


# --- loading plugins -----------------------------------------------------------------------------


def plugin(name: str, spec: ChannelSpec, channels: frozenset[str] | None = None) -> type[Provider]:
    async def send(self: Provider, message: OutboundMessage) -> SendReceipt:
        return SendReceipt(provider_message_id="x")

    attributes = {"channels": channels if channels is not None else frozenset({spec.name}), "new_channels": (spec,), "send": send}
    return type(name, (Provider,), attributes)


def test_a_plugin_channel_named_like_a_built_in_is_refused_and_named_in_the_policy_error(tmp_path: Path) -> None:
    loaded = catalog(mysms=plugin("MySms", ChannelSpec("sms", ("phone",))))
    assert "mysms" not in loaded.providers
    assert loaded.failures["mysms"] == "mysms: channel 'sms' is built in; list it in channels, not in new_channels"
    assert [spec.recipient_fields for spec in loaded.channel_catalog() if spec.name == "sms"] == [("phone",)]
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "policy.yaml").write_text("providers:\n  texts: {plugin: mysms}\n")
    [issue] = issues_of(tmp_path / "p", loaded)
    assert "providers.texts.plugin: plugin 'mysms' failed to load: mysms: channel 'sms' is built in" in issue


def test_two_plugins_adding_one_channel_differently_are_both_refused_naming_each_other() -> None:
    other = plugin("OtherDiscord", ChannelSpec("discord", ("discord_handle",)))
    loaded = catalog(other_discord=other)
    assert "discord" not in loaded.providers and "other_discord" not in loaded.providers
    assert "kakao" in loaded.providers, "plugins not involved keep working"
    assert "channel 'discord' is also added by plugin 'other_discord' (" in loaded.failures["discord"]
    assert "OtherDiscord" in loaded.failures["discord"] and "uninstall one of them" in loaded.failures["discord"]
    assert "channel 'discord' is also added by plugin 'discord' (" in loaded.failures["other_discord"]
    assert "discord" not in loaded.channel_catalog()
    # The same outcome whichever order the entry points come in.
    reversed_order = PluginCatalog.from_classes({"other_discord": other, "kakao": KakaoProvider, "discord": DiscordProvider})
    assert set(reversed_order.failures) == {"discord", "other_discord"}


def test_two_plugins_declaring_one_channel_alike_share_it_and_can_fail_over() -> None:
    twin = plugin("TwinDiscord", ChannelSpec("discord", ("discord_user_id", "discord_webhook"), subject=True, description="another"))
    loaded = catalog(twin_discord=twin)
    assert not loaded.failures
    assert {"discord", "twin_discord"} <= loaded.providers.keys()
    assert [spec.description for spec in loaded.channel_catalog() if spec.name == "discord"] == ["Discord message"]


@pytest.mark.parametrize(
    ("spec", "channels", "why"),
    [
        (ChannelSpec("Discord!", ("discord_user_id",)), None, "channel name 'Discord!' must be 1-32 lowercase letters"),
        (ChannelSpec("matrix", ()), None, "channel 'matrix' needs recipient_fields"),
        (ChannelSpec("matrix", ("data",)), None, "recipient field 'data' is reserved"),
        (ChannelSpec("matrix", ("Matrix-ID",)), None, "recipient field 'Matrix-ID' must be 1-64 lowercase letters"),
        (ChannelSpec("matrix", ("matrix_id",)), frozenset({"sms"}), "adds channel 'matrix' but does not serve it"),
    ],
)
def test_a_malformed_plugin_channel_is_refused_saying_why(spec: ChannelSpec, channels: frozenset[str] | None, why: str) -> None:
    loaded = catalog(bad=plugin("Bad", spec, channels))
    assert "bad" not in loaded.providers
    assert why in loaded.failures["bad"]


def test_tidings_plugins_lists_the_plugin_channels_and_the_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    refused = plugin("MySms", ChannelSpec("sms", ("phone",)))
    monkeypatch.setattr(PluginCatalog, "discover", classmethod(lambda cls: catalog(mysms=refused)))
    code, output = run_cli("plugins")
    assert code == 0
    assert "adds channel 'discord' (recipient: discord_user_id or discord_webhook)" in output
    lines = output.splitlines()
    assert any(line.split()[:4] == ["discord", "recipient:", "discord_user_id", "or"] and "(added by discord, has a subject)" in line for line in lines), output
    assert any(line.split()[:3] == ["kakao", "recipient:", "kakao_id"] and "(added by kakao, templates only)" in line for line in lines), output
    assert any(line.split()[:3] == ["sms", "recipient:", "phone"] and "(built in)" in line for line in lines), output
    assert "mysms" in output.split("Failed to load:")[1] and "is built in" in output
