"""The README is the front door: its settings table and its curl lines must stay true."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.app import create_app
from gateway.plugins import PluginCatalog
from gateway.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_is_in_the_readme_table(name: str) -> None:
    assert f"| `TIDINGS_{name.upper()}` |" in README


def test_readme_table_lists_no_setting_that_does_not_exist() -> None:
    listed = set(re.findall(r"^\| `TIDINGS_([A-Z_]+)` \|", README, flags=re.MULTILINE))
    assert listed == {name.upper() for name in Settings.model_fields}


def _curl_commands() -> list[list[str]]:
    blocks = re.findall(r"```sh\n(.*?)```", README, flags=re.DOTALL)
    commands = []
    for block in blocks:
        if not block.lstrip().startswith("curl "):
            continue
        words = shlex.split(block.replace("\\\n", " "), comments=True)
        starts = [i for i, word in enumerate(words) if word == "curl"] + [len(words)]
        commands += [words[a:b] for a, b in zip(starts, starts[1:], strict=False)]
    return commands


def _request(argv: list[str]) -> tuple[str, str, dict[str, str], bytes | None]:
    url, headers, data = "", {}, None
    args = iter(argv[1:])
    for arg in args:
        if arg == "-H":
            name, _, value = next(args).partition(":")
            headers[name.strip()] = value.strip()
        elif arg == "-d":
            data = next(args).encode()
        elif arg.startswith("http"):
            url = arg
    return ("POST" if data is not None else "GET"), url, headers, data


async def test_readme_curl_lines_send_a_message_and_read_its_status(aiohttp_client: Any, tmp_path: Path) -> None:
    commands = [command for command in _curl_commands() if "/api/v1/notifications" in command[2]][:2]
    assert len(commands) == 2, "the quickstart shows one send and one status read"
    settings = Settings(data_dir=tmp_path, policy_dir=ROOT / "policies", _env_file=None)  # type: ignore[call-arg]
    client = await aiohttp_client(create_app(settings, plugins=PluginCatalog.discover()))

    method, url, headers, data = _request(commands[0])
    assert url.startswith("http://127.0.0.1:8080/")
    response = await client.request(method, url.removeprefix("http://127.0.0.1:8080"), headers=headers, data=data)
    sent = await response.json()
    assert response.status == 202, sent
    assert sent["status"] == "queued"

    method, url, headers, data = _request(commands[1])
    response = await client.request(method, url.removeprefix("http://127.0.0.1:8080"), headers=headers, data=data)
    listed = orjson.loads(await response.read())
    assert response.status == 200
    assert listed["items"][0]["notification_id"] == sent["notification_id"]
    assert [d["channel"] for d in listed["items"][0]["deliveries"]] == ["email", "sms"]


async def test_readme_business_event_curl_lines_are_accepted_and_read_back(aiohttp_client: Any, tmp_path: Path) -> None:
    """Every events example in the README, posted in order to the shipped policies with the demo key, is accepted and readable."""
    commands = [command for command in _curl_commands() if "/api/v1/events" in command[2]]
    assert len(commands) >= 4, "the events sections show a post, a read, a dedupe and a digest example"
    settings = Settings(data_dir=tmp_path, policy_dir=ROOT / "policies", policy_reload=False, _env_file=None)  # type: ignore[call-arg]
    client = await aiohttp_client(create_app(settings, plugins=PluginCatalog.discover()))
    for command in commands:
        method, url, headers, data = _request(command)
        response = await client.request(method, url.removeprefix("http://127.0.0.1:8080"), headers=headers, data=data)
        answer = orjson.loads(await response.read())
        assert response.status == (202 if method == "POST" else 200), (url, answer)


def test_the_shipped_policies_show_a_working_instance_of_every_vendor_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The commented instances in policies/providers.yaml, uncommented, load: plugin names and config keys are right."""
    from gateway.plugins import PluginCatalog
    from gateway.policy.loading import load_policies
    from gateway.policy.secret_values import SecretResolver

    text = (ROOT / "policies" / "providers.yaml").read_text()
    block = text[text.index("  # Real vendors."):text.index("\n# Channels:")]
    uncommented = [line.removeprefix("  #").removeprefix(" ") for line in block.splitlines()]
    first = next(i for i, line in enumerate(uncommented) if re.fullmatch(r"[a-z][a-z_-]*:", line))
    yaml_text = "providers:\n" + "\n".join("  " + line for line in uncommented[first:]) + "\n"
    shaped = {"SLACK_BOT_TOKEN": "xoxb-1-2-abc", "TWILIO_ACCOUNT_SID": "AC" + "0" * 32, "TELEGRAM_BOT_TOKEN": "123456:ABC-DEF1234ghIkl-zyx57W2v1u123ew11"}
    for name in set(re.findall(r"\$env: ([A-Z_]+)", yaml_text)):
        monkeypatch.setenv(name, shaped.get(name, f"value-of-{name.lower()}"))
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "fcm-service-account.json").write_text(service_account_file())
    (tmp_path / "providers.yaml").write_text(yaml_text)
    catalog = PluginCatalog.discover()
    policy = load_policies(tmp_path, catalog, secrets=SecretResolver())
    plugins = {instance.plugin for instance in policy.provider_instances.values()}
    vendors = set(catalog.providers) - {"sandbox", "log", "webhook", "ntfy"}
    assert vendors <= plugins, f"no commented instance for: {sorted(vendors - plugins)}"


def service_account_file() -> str:
    """A service-account key file as Firebase hands it out, with a throwaway RSA key."""
    import json

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return json.dumps({
        "type": "service_account", "project_id": "example-app", "private_key_id": "0" * 40, "private_key": pem,
        "client_email": "tidings@example-app.iam.gserviceaccount.com", "client_id": "1", "token_uri": "https://oauth2.googleapis.com/token",
    })
