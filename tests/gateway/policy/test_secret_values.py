"""Secrets in policy files: {$env}, {$file} and enc:v1 references resolve, fail by path, and never show."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer, unused_port
from conftest import LIVE_KEY, Api, MemoryProvider, key_entry, run_cli
from pydantic import SecretStr
from standardwebhooks import Webhook

from gateway import InboundRequest, OutboundMessage, ProviderReport, SendReceipt, TransientDeliveryError, WebhookVerificationError
from gateway.app import create_app
from gateway.errors import PolicyError
from gateway.http.appkeys import INBOUND, POLICIES, POLICY_WATCHER, STORE
from gateway.plugins import PluginCatalog
from gateway.policy.loading import load_policies
from gateway.policy.secret_values import SecretResolver, encrypt
from gateway.settings import Settings
from plugins.sandbox import SandboxProvider
from plugins.webhook import WebhookProvider

TIDINGS = Path(sys.executable).parent / "tidings"
MASTER_KEY = "a master key for tests only"
TOKEN = "tok-live-7f3a9c1e-do-not-print"
WEBHOOK_SECRET = "whsec_dGhpcyBpcyBhIHRlc3Qgc2VjcmV0IG9ubHk="
MEMORY_WITH = """
providers:
  mem:
    plugin: memory
    config:
      token: {value}
"""
# The memory plugin marks `token` x-secret but knows nothing of `api_key`: references must be
# masked even where a plugin's schema forgot to mark them.
APP_POLICY = f"""
tenants:
  acme:
    api_keys: [{key_entry(LIVE_KEY)}]
providers:
  mem:
    plugin: memory
    config: {{token: {{$env: TEST_TOKEN}}, api_key: {{$env: TEST_API_KEY}}}}
  hook:
    plugin: webhook
    config: {{secret: {{$env: TEST_WEBHOOK_SECRET}}, allow_private: true}}  # its receivers are on loopback
channels:
  sms: {{providers: [mem]}}
  webhook: {{providers: [hook]}}
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def config_of(policy_dir: Path, catalog: PluginCatalog, resolver: SecretResolver, instance: str = "mem") -> Mapping[str, Any]:
    return load_policies(policy_dir, catalog, secrets=resolver).provider_instances[instance].config


def problems(policy_dir: Path, catalog: PluginCatalog, resolver: SecretResolver) -> PolicyError:
    with pytest.raises(PolicyError) as caught:
        load_policies(policy_dir, catalog, secrets=resolver)
    return caught.value


def encrypt_with_cli(value: str, master_key: str) -> str:
    """``tidings secret encrypt`` as an operator runs it: a real process, the value on stdin."""
    done = subprocess.run(
        [str(TIDINGS), "secret", "encrypt"], input=value + "\n", env={"TIDINGS_MASTER_KEY": master_key},
        capture_output=True, text=True, timeout=20, check=True,
    )
    return done.stdout.strip()


# --- each form resolves ------------------------------------------------------------------


def test_env_reference_becomes_the_variables_value(tmp_path: Path, plugin_catalog: PluginCatalog) -> None:
    write(tmp_path, "p.yaml", MEMORY_WITH.format(value="{$env: TEST_TOKEN}"))
    config = config_of(tmp_path, plugin_catalog, SecretResolver(environ={"TEST_TOKEN": TOKEN}))
    assert config["token"] == TOKEN


@pytest.mark.parametrize("relative", [True, False], ids=["relative-to-policy-dir", "absolute"])
def test_file_reference_becomes_the_files_content_minus_one_newline(tmp_path: Path, plugin_catalog: PluginCatalog, relative: bool) -> None:
    policy_dir = tmp_path / "policies"
    secret = write(policy_dir, "secrets/token", TOKEN + "\n\n")
    write(policy_dir, "p.yaml", MEMORY_WITH.format(value=f"{{$file: {'secrets/token' if relative else secret}}}"))
    assert config_of(policy_dir, plugin_catalog, SecretResolver(environ={}))["token"] == TOKEN + "\n"


def test_enc_v1_value_from_tidings_secret_encrypt_decrypts_with_the_master_key(tmp_path: Path, plugin_catalog: PluginCatalog) -> None:
    encrypted = encrypt_with_cli(TOKEN, MASTER_KEY)
    assert encrypted.startswith("enc:v1:") and TOKEN not in encrypted
    assert encrypted != encrypt_with_cli(TOKEN, MASTER_KEY), "a fresh nonce every time"
    write(tmp_path, "p.yaml", MEMORY_WITH.format(value=encrypted))
    assert config_of(tmp_path, plugin_catalog, SecretResolver(SecretStr(MASTER_KEY), environ={}))["token"] == TOKEN


def test_secret_encrypt_without_a_master_key_exits_2_with_a_message_not_a_traceback() -> None:
    done = subprocess.run([str(TIDINGS), "secret", "encrypt"], input=TOKEN, env={}, capture_output=True, text=True, timeout=20)
    assert done.returncode == 2
    assert "TIDINGS_MASTER_KEY is not set" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_generate_key_prints_a_fresh_master_key_each_time() -> None:
    first, second = (run_cli("secret", "generate-key") for _ in range(2))
    assert first[0] == second[0] == 0
    assert len(first[1].strip()) == 43 and first[1] != second[1]


def test_the_shipped_demo_webhook_reads_its_secret_from_a_file_next_to_the_policies() -> None:
    root = Path(__file__).resolve().parents[3] / "policies"
    config = config_of(root, PluginCatalog.discover(), SecretResolver(environ={}), instance="demo-webhook")
    assert config["secret"] == (root / "secrets" / "demo-webhook-secret").read_text().strip()


# --- failures name file, line and path, never the value -----------------------------------

OTHER_KEY_TOKEN = encrypt(TOKEN, SecretStr("some other master key"))
GOOD_TOKEN = encrypt(TOKEN, SecretStr(MASTER_KEY))


@pytest.mark.parametrize(
    ("value", "master_key", "expected"),
    [
        ("{$env: MISSING_TOKEN}", MASTER_KEY, "environment variable MISSING_TOKEN is not set"),
        ("{$file: secrets/missing}", MASTER_KEY, "cannot read secret file"),
        (OTHER_KEY_TOKEN, MASTER_KEY, "cannot decrypt enc:v1: value: TIDINGS_MASTER_KEY is not the key it was encrypted with"),
        (GOOD_TOKEN, None, "an enc:v1: value needs the master key: set TIDINGS_MASTER_KEY"),
        (GOOD_TOKEN[:-6], MASTER_KEY, "cannot decrypt enc:v1: value: TIDINGS_MASTER_KEY is not the key it was encrypted with (or the value was altered)"),
        ("enc:v1:not*base64", MASTER_KEY, "malformed enc:v1: value"),
        ("enc:v1:c2hvcnQ", MASTER_KEY, "malformed enc:v1: value"),
        ("enc:v2:AAAA", MASTER_KEY, "unsupported format enc:v2:"),
        ("{$env: TEST_TOKEN, fallback: x}", MASTER_KEY, "a {$env: …} reference must be the only key in its mapping"),
        ("{$vault: kv/token}", MASTER_KEY, "unknown reference '$vault'"),
    ],
    ids=["missing-env", "missing-file", "wrong-key", "no-master-key", "altered", "not-base64", "too-short", "v2", "mixed", "unknown"],
)
def test_an_unresolvable_reference_is_located_and_never_echoed(
    tmp_path: Path, plugin_catalog: PluginCatalog, value: str, master_key: str | None, expected: str
) -> None:
    write(tmp_path, "p.yaml", MEMORY_WITH.format(value=value))
    resolver = SecretResolver(SecretStr(master_key) if master_key else None, environ={"TEST_TOKEN": TOKEN})
    error = problems(tmp_path, plugin_catalog, resolver)
    assert any(str(issue).startswith(f"p.yaml:6: providers.mem.config.token: {expected}") for issue in error.issues), error
    shown = str(error)
    assert TOKEN not in shown
    if value.startswith("enc:"):
        assert value.split(":", 2)[2] not in shown, "the ciphertext is not echoed either"


def test_every_broken_reference_is_reported_at_once(tmp_path: Path, plugin_catalog: PluginCatalog) -> None:
    write(tmp_path, "a.yaml", MEMORY_WITH.format(value="{$env: MISSING_A}"))
    write(tmp_path, "b.yaml", "providers:\n  log: {plugin: log, config: {level: {$file: nope}}}\n  mem2:\n    plugin: memory\n    config: {token: enc:v1:AAAA}\n")
    error = problems(tmp_path, plugin_catalog, SecretResolver(environ={}))
    located = {f"{issue.file}:{issue.line}: {issue.path}" for issue in error.issues}
    assert {"a.yaml:6: providers.mem.config.token", "b.yaml:2: providers.log.config.level", "b.yaml:5: providers.mem2.config.token"} <= located


def test_a_resolved_value_that_fails_the_plugins_schema_is_reported_without_the_value(
    tmp_path: Path, plugin_catalog: PluginCatalog
) -> None:
    write(tmp_path, "p.yaml", "providers:\n  hook:\n    plugin: webhook\n    config:\n      secret: {$env: HOOK_SECRET}\n")
    error = problems(tmp_path, plugin_catalog, SecretResolver(environ={"HOOK_SECRET": TOKEN}))
    assert any(issue.path == "providers.hook.config.secret" and issue.line == 5 for issue in error.issues)
    assert TOKEN not in str(error)


def test_check_resolves_like_the_server_and_a_master_key_is_needed_only_for_enc_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TIDINGS_MASTER_KEY", raising=False)
    monkeypatch.delenv("TEST_TOKEN", raising=False)
    write(tmp_path, "p.yaml", "providers:\n  hook:\n    plugin: webhook\n    config:\n      secret: {$env: TEST_WEBHOOK_SECRET}\n")
    monkeypatch.setenv("TEST_WEBHOOK_SECRET", WEBHOOK_SECRET)
    code, output = run_cli("check", str(tmp_path))
    assert code == 0, output
    monkeypatch.delenv("TEST_WEBHOOK_SECRET")
    code, output = run_cli("check", str(tmp_path))
    assert code == 1
    assert "p.yaml:5: providers.hook.config.secret: environment variable TEST_WEBHOOK_SECRET is not set" in output


# --- resolved values never show ------------------------------------------------------------


@pytest.fixture
def secrets_in_env(monkeypatch: pytest.MonkeyPatch, policy_dir: Path) -> dict[str, str]:
    values = {"TEST_TOKEN": TOKEN, "TEST_API_KEY": "apikey-9d2b-never-shown", "TEST_WEBHOOK_SECRET": WEBHOOK_SECRET}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    write(policy_dir, "policy.yaml", APP_POLICY)
    return values


async def test_secrets_from_the_environment_never_reach_logs_cli_output_or_api_answers(
    aiohttp_client: Any, settings: Settings, plugin_catalog: PluginCatalog, secrets_in_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = await aiohttp_client(create_app(settings, plugins=plugin_catalog))
    api = Api(client)
    answers = [await api.get(path) for path in ("/api/v1/channels/capabilities", "/readyz", "/healthz")]
    assert answers[0][0] == 200
    code, plugins_output = run_cli("plugins")
    assert code == 0
    # The real plugin catalog has no `memory` plugin, so check fails, printing its problems.
    check_code, check_output = run_cli("check", str(settings.policy_dir))
    assert check_code == 1 and "providers.mem.plugin" in check_output
    assert "'api_key': '********'" in caplog.text, "an unmarked field is masked because it came from a reference"
    for value in secrets_in_env.values():
        for shown in (caplog.text, repr(answers), plugins_output, check_output):
            assert value not in shown


async def test_the_webhook_plugin_signs_with_the_resolved_secret(
    aiohttp_client: Any, settings: Settings, plugin_catalog: PluginCatalog, secrets_in_env: dict[str, str]
) -> None:
    received: list[tuple[dict[str, str], bytes]] = []

    async def receive(request: web.Request) -> web.Response:
        received.append(({k.lower(): v for k, v in request.headers.items()}, await request.read()))
        return web.Response(status=204)

    receiver = web.Application()
    receiver.router.add_post("/hook", receive)
    server = TestServer(receiver, host="127.0.0.1")
    await server.start_server()
    try:
        # Real clock: the receiver checks the signature's timestamp against its own.
        api = Api(await aiohttp_client(create_app(settings, plugins=plugin_catalog)))
        body = {"recipient": {"url": str(server.make_url("/hook"))}, "notification": {"channels": ["webhook"], "body": "hi"}}
        status, accepted = await api.send(body)
        assert status == 202, accepted
        await api.wait_for(accepted["notification_id"], lambda n: n["status"] == "sent")
    finally:
        await server.close()
    headers, payload = received[0]
    signed = {name: headers[name] for name in ("webhook-id", "webhook-timestamp", "webhook-signature")}
    assert Webhook(WEBHOOK_SECRET).verify(payload, signed)["body"] == "hi"


class LeakyProvider(MemoryProvider):
    """A plugin with a bug that puts its own credential in what it raises."""

    async def send(self, message: OutboundMessage) -> SendReceipt:
        if message.to.endswith("99"):
            raise RuntimeError(f"could not sign in with token {self.config['token']}")
        if message.to.endswith("98"):
            raise TransientDeliveryError(f"vendor refused key {self.config['api_key']}", detail={"sent": self.config["api_key"]})
        return await super().send(message)

    async def verify_webhook(self, request: InboundRequest) -> None:
        if request.query.get("forged"):
            raise WebhookVerificationError(f"the signature is not one made with {self.config['token']}")

    async def parse_webhook(self, request: InboundRequest) -> list[ProviderReport]:
        raise ValueError(f"cannot read a callback for key {self.config['api_key']}")


def shown_anywhere(secrets: Mapping[str, str], *texts: str) -> list[str]:
    return [name for name, value in secrets.items() for text in texts if value in text]


async def test_a_failing_send_leaves_no_secret_in_the_logs_or_the_api(
    aiohttp_client: Any, settings: Settings, memory_provider: type[MemoryProvider], secrets_in_env: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Refusals, timeouts and a plugin that raises its own credential: the log and every answer stay clean."""
    caplog.set_level(logging.DEBUG)
    catalog = PluginCatalog.from_classes({"memory": LeakyProvider, "sandbox": SandboxProvider, "webhook": WebhookProvider})
    api = Api(await aiohttp_client(create_app(settings, plugins=catalog)))
    memory_provider.script = {"+14155550101": ["transient"], "+14155550102": ["permanent"], "+14155550103": ["crash"]}
    closed = f"http://127.0.0.1:{unused_port()}/hook"  # nothing listens: the webhook plugin cannot connect
    bodies: list[dict[str, Any]] = [
        {"recipient": {"phone": f"+141555501{n:02d}"}, "notification": {"channels": ["sms"], "body": "hi"}} for n in (1, 2, 3, 98, 99)
    ]
    bodies.append({"recipient": {"url": closed}, "notification": {"channels": ["webhook"], "body": "hi"}})
    answers = []
    for body in bodies:
        status, accepted = await api.send(body)
        assert status == 202, accepted
        answers.append(await api.wait_for(accepted["notification_id"], lambda n: n["deliveries"][0]["attempts"] != []))
    errors = [attempt["error"] for found in answers for attempt in found["deliveries"][0]["attempts"]]
    assert len([error for error in errors if error]) == 6, errors
    assert any("********" in error for error in errors), "the leaked credential is masked where the plugin wrote it"
    assert shown_anywhere(secrets_in_env, caplog.text, repr(answers)) == []


async def test_a_callback_refused_or_unreadable_leaves_no_secret_in_the_answer_the_store_or_the_logs(
    aiohttp_client: Any, settings: Settings, secrets_in_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """What a plugin says when it refuses or cannot parse a callback reaches the caller, the store and the log: masked."""
    caplog.set_level(logging.DEBUG)
    catalog = PluginCatalog.from_classes({"memory": LeakyProvider, "sandbox": SandboxProvider, "webhook": WebhookProvider})
    api = Api(await aiohttp_client(create_app(settings, plugins=catalog)))
    forged = await api.client.post("/api/v1/webhooks/mem?forged=1", data=b"{}")
    refusal = await forged.text()
    assert forged.status == 401 and "********" in refusal
    unreadable = await api.client.post("/api/v1/webhooks/mem", data=b"{}")
    assert unreadable.status == 200
    await api.app[INBOUND].drain()
    stored = await api.app[STORE].get_inbound((await unreadable.json())["received"])
    assert stored is not None and stored.outcome == "rejected" and "********" in (stored.reason or "")
    assert shown_anywhere(secrets_in_env, refusal, repr(stored), caplog.text) == []


async def test_a_rejected_reload_leaves_no_secret_in_the_logs_or_readyz(
    aiohttp_client: Any, settings: Settings, plugin_catalog: PluginCatalog, secrets_in_env: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Resolved values that fail the plugin's schema, and a secret pasted in clear beside broken YAML."""
    caplog.set_level(logging.DEBUG)
    api = Api(await aiohttp_client(create_app(settings, plugins=plugin_catalog)))
    watcher = api.app[POLICY_WATCHER]
    wrong = APP_POLICY.replace("secret: {$env: TEST_WEBHOOK_SECRET}", "secret: {$env: TEST_TOKEN}")  # not a whsec_ value
    for change in (wrong, APP_POLICY.replace("{$env: TEST_API_KEY}", f"{secrets_in_env['TEST_API_KEY']}\n   bad: [") ):
        write(settings.policy_dir, "policy.yaml", change)
        assert await watcher.reload() is False
        assert api.app[POLICIES].last_error is not None
        status, ready = await api.get("/readyz")
        assert status == 200 and ready["policy"]["last_error"]
        assert shown_anywhere(secrets_in_env, caplog.text, repr(ready)) == []
    assert "policy change rejected" in caplog.text
