"""The repository's own files: the licence pyproject.toml names, the changelog, and a quickstart that leaves nothing failing."""

from __future__ import annotations

import re
import shutil
import tomllib
from pathlib import Path

from gateway.plugins import PluginCatalog
from gateway.policy.loading import load_policies
from gateway.policy.secret_values import SecretResolver

ROOT = Path(__file__).resolve().parents[1]


def test_the_license_file_is_the_full_apache_2_0_text_that_pyproject_names() -> None:
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"] == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text()
    assert text.split()[:5] == ["Apache", "License", "Version", "2.0,", "January"]
    sections = re.findall(r"^\s+(\d)\. (\w[\w ]+)\.", text, flags=re.MULTILINE)
    assert [number for number, _ in sections] == [str(n) for n in range(1, 10)], "all nine terms"
    assert "END OF TERMS AND CONDITIONS" in text and "APPENDIX: How to apply the Apache License to your work." in text


def test_the_changelog_keeps_an_unreleased_section_in_keep_a_changelog_form() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    assert text.startswith("# Changelog\n") and "https://keepachangelog.com/" in text
    versions = re.findall(r"^## \[([^\]]+)\]", text, flags=re.MULTILINE)
    assert versions[0] == "Unreleased"
    kinds = set(re.findall(r"^### (\w+)$", text, flags=re.MULTILINE))
    assert kinds <= {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}, kinds


def test_the_demo_policy_has_no_event_endpoint_and_the_commented_one_for_the_example_receiver_loads(tmp_path: Path) -> None:
    policy = load_policies(ROOT / "policies", PluginCatalog.discover(), secrets=SecretResolver(environ={}))
    assert not any(policy.document.webhooks.values()), "make run leaves no event endpoint failing behind"
    shutil.copytree(ROOT / "policies", tmp_path / "policies")
    tenants = tmp_path / "policies" / "tenants.yaml"
    text = tenants.read_text()
    block = text[text.index("# webhooks:"):]
    tenants.write_text(text.replace(block, "\n".join(line.removeprefix("# ") for line in block.splitlines()) + "\n"))
    uncommented = load_policies(tmp_path / "policies", PluginCatalog.discover(), secrets=SecretResolver(environ={}))
    endpoint = uncommented.document.webhooks["demo"]["events-endpoint"]
    assert endpoint.url == "http://127.0.0.1:9000/tidings" and endpoint.allow_private
    assert "examples/webhook-receiver/receiver.py --port 9000" in text
