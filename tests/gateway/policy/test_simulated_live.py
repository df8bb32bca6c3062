"""Live traffic routed to the sandbox is simulated: nothing reaches anyone, yet it reports delivered. Operators hear of it."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path
from typing import Any

import pytest
from conftest import LIVE_KEY, TEST_KEY, FakeClock, key_entry, run_cli, serve

from plugins.logsink import LogProvider
from plugins.sandbox import SandboxProvider

ROOT = Path(__file__).resolve().parents[3]


def policy_dir(tmp_path: Path, *, acme_key: str, sms: str, email: str = "[sink]") -> Path:
    directory = tmp_path / "policies"
    directory.mkdir()
    (directory / "policy.yaml").write_text(textwrap.dedent(f"""\
        tenants:
          acme:
            api_keys: [{acme_key}]
          quiet:
            api_keys: [{key_entry(TEST_KEY.replace("acme", "quie"), mode="test")}]
        providers:
          sink: {{plugin: log}}
          play: {{plugin: sandbox}}
        channels:
          sms: {{providers: {sms}}}
          email: {{providers: {email}}}
    """))
    return directory


def check(directory: Path) -> tuple[int, list[str]]:
    code, output = run_cli("check", str(directory))
    return code, [line for line in output.splitlines() if line.startswith("warning:")]


def test_check_names_each_tenant_and_channel_whose_live_sends_the_sandbox_would_simulate(tmp_path: Path) -> None:
    code, warnings = check(policy_dir(tmp_path, acme_key=key_entry(LIVE_KEY), sms="[play]"))
    assert code == 0  # a warning, not an error: a staging setup may want exactly this
    assert warnings == [
        "warning: tenant 'acme', channel 'sms': live traffic goes through the sandbox (every send, via play); "
        "nothing reaches the recipient, yet it reports delivered"
    ]


def test_a_sandbox_behind_a_real_instance_is_named_as_failover(tmp_path: Path) -> None:
    _code, warnings = check(policy_dir(tmp_path, acme_key=key_entry(LIVE_KEY), sms="[sink, play]"))
    assert len(warnings) == 1
    assert "channel 'sms'" in warnings[0] and "sends that fail over to play, via sink -> play" in warnings[0]


def test_test_keys_and_real_routes_warn_of_nothing(tmp_path: Path) -> None:
    assert check(policy_dir(tmp_path, acme_key=key_entry(TEST_KEY, mode="test"), sms="[play]")) == (0, [])
    assert check(ROOT / "policies") == (0, [])  # the shipped demo tenant has a test key only


async def test_start_up_warns_in_the_log_too(
    aiohttp_client: Any, tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    directory = policy_dir(tmp_path, acme_key=key_entry(LIVE_KEY), sms="[play]", email="[play]")
    with caplog.at_level(logging.WARNING, logger="gateway.app"):
        await serve(aiohttp_client, directory, {"log": LogProvider, "sandbox": SandboxProvider}, clock)
    warned = [record.getMessage() for record in caplog.records if "live traffic goes through the sandbox" in record.getMessage()]
    assert [message.split(":")[0] for message in warned] == ["tenant 'acme', channel 'email'", "tenant 'acme', channel 'sms'"]
