"""``tidings providers check``: each instance's credentials confirmed with its vendor, never printing a secret."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import run_cli
from fakes.vendor import PLUGIN_NAME, FakeVendor, FakeVendorProvider

from gateway.engine.provider_checks import NO_CHECK, OK, PLUGIN_ERROR, REFUSED, UNREACHABLE, check_instances
from gateway.plugins import PluginCatalog
from gateway.policy.loading import load_policies

TOKEN = "vendor-token-never-printed"
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
async def vendor() -> AsyncIterator[FakeVendor]:
    async with FakeVendor(token=TOKEN) as found:
        yield found


def catalog() -> PluginCatalog:
    from plugins.logsink import LogProvider

    return PluginCatalog.from_classes({PLUGIN_NAME: FakeVendorProvider, "log": LogProvider})


def policy_with(tmp_path: Path, vendor: FakeVendor) -> Path:
    entries = vendor.provider_policy("good", tmp_path) + vendor.provider_policy("stale", tmp_path)
    (tmp_path / "secrets" / "stale-token").write_text("an-old-token")
    (tmp_path / "policy.yaml").write_text(
        "providers:\n" + entries + "  console: {plugin: log}\n"
        "  gone:\n    plugin: fake_vendor\n    config: {url: 'http://127.0.0.1:9', token: x, timeout_seconds: 2}\n"
    )
    return tmp_path


async def test_each_instance_gets_a_verdict_and_no_secret_is_shown(tmp_path: Path, vendor: FakeVendor) -> None:
    policy = load_policies(policy_with(tmp_path, vendor), catalog())
    results = {r.instance: r for r in await check_instances(policy, catalog(), ["good", "stale", "console", "gone"], timeout=5)}
    assert results["good"].verdict == OK and "Fake Vendor test account" in results["good"].message
    assert results["stale"].verdict == REFUSED and "credentials" in results["stale"].message
    assert results["console"].verdict == NO_CHECK and results["console"].ok
    assert results["gone"].verdict == UNREACHABLE and not results["gone"].ok
    assert not any(TOKEN in r.message or "an-old-token" in r.message for r in results.values())
    assert vendor.messages == [], "a check sends nothing"


async def test_a_vendor_that_does_not_answer_in_time_is_unreachable(tmp_path: Path, vendor: FakeVendor) -> None:
    vendor.go_down(status=503)
    policy = load_policies(policy_with(tmp_path, vendor), catalog())
    [result] = await check_instances(policy, catalog(), ["good"], timeout=5)
    assert result.verdict == UNREACHABLE


def test_the_cli_checks_the_shipped_policies_and_refuses_an_unknown_instance(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDINGS_POLICY_DIR", str(ROOT / "policies"))
    code, printed = run_cli("providers", "check")
    assert code == 0, printed
    assert "sandbox" in printed and NO_CHECK in printed
    code, printed = run_cli("providers", "check", "nope")
    assert code == 2 and "no such provider instance: nope" in printed


async def test_a_plugin_bug_in_a_check_is_logged_at_debug_with_the_instances_secrets_masked(
    tmp_path: Path, vendor: FakeVendor, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def leaky(self: FakeVendorProvider) -> str:
        raise KeyError(f"no account for token {self.config['token']}")

    monkeypatch.setattr(FakeVendorProvider, "check_credentials", leaky)
    policy = load_policies(policy_with(tmp_path, vendor), catalog())
    with caplog.at_level("DEBUG", logger="gateway.engine.provider_checks"):
        [result] = await check_instances(policy, catalog(), ["good"], timeout=5)
    assert result.verdict == PLUGIN_ERROR and "KeyError" in result.message
    assert "credentials check of good raised" in caplog.text and "no account for token" in caplog.text
    assert TOKEN not in caplog.text
