"""The GitOps example: its policies pass `tidings check`, and the README's broken edit fails as shown."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from gateway.signing import signature_headers

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "gitops"
TIDINGS = Path(sys.executable).parent / "tidings"
RECEIVER_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OTHER_SECRET = "whsec_" + "QmFzZTY0IHNlY3JldCBmb3IgdGVzdHM="
SECRETS = {"OPS_WEBHOOK_SECRET": "whsec_ZHVtbXktdmFsdWUtZm9yLWNp", "ACME_EVENTS_SECRET": "whsec_ZHVtbXktdmFsdWUtZm9yLWNp"}


def check(directory: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **SECRETS}
    return subprocess.run([str(TIDINGS), "check", str(directory)], capture_output=True, text=True, env=env, cwd=directory.parent)


def test_the_example_policy_repository_passes_tidings_check() -> None:
    result = check(EXAMPLE / "policies")
    assert result.returncode == 0, result.stdout
    assert "OK" in result.stdout


def test_the_broken_change_in_the_example_readme_fails_with_the_lines_it_shows(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    shutil.copytree(EXAMPLE / "policies", policies)
    acme = policies / "tenants" / "acme.yaml"
    acme.write_text(acme.read_text().replace("[acme-mail, sandbox]", "[acme-mial, sandbox]"))
    templates = policies / "templates.yaml"
    templates.write_text(templates.read_text().replace("Your code is {{ code }}. Do not share it.", "Your {{ product }} code is {{ code }}."))
    result = check(policies)
    assert result.returncode == 1
    readme = (EXAMPLE / "README.md").read_text()
    shown = re.search(r"for example:\n\n   ```\n(.*?)\n   ```", readme, re.S)
    assert shown is not None
    for line in shown.group(1).splitlines():
        assert line.strip() in result.stdout.splitlines(), result.stdout


def load_receiver() -> Any:
    spec = importlib.util.spec_from_file_location("webhook_receiver", ROOT / "examples" / "webhook-receiver" / "receiver.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_the_example_receiver_verifies_tidings_signatures_and_handles_each_event_once(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    receiver = load_receiver()
    handled: list[dict[str, Any]] = []
    client = await aiohttp_client(receiver.make_app(RECEIVER_SECRET, receiver.SeenEvents(tmp_path / "seen.sqlite3"), handled.append))
    body = json.dumps({"type": "message.delivered", "timestamp": "2026-11-23T12:00:00Z", "data": {"seq": 7}}).encode()
    # Signed as Tidings signs during a rotation: the receiver knows only one of the two secrets.
    headers = signature_headers([OTHER_SECRET, RECEIVER_SECRET], "evt_01", int(time.time()), body)

    first = await client.post("/tidings", data=body, headers=headers)
    again = await client.post("/tidings", data=body, headers=headers)
    forged = await client.post("/tidings", data=body.replace(b"7", b"8"), headers=headers)
    assert (first.status, (await first.json())["handled"]) == (200, True)
    assert (again.status, (await again.json())["handled"]) == (200, False)
    assert forged.status == 401
    assert [event["data"]["seq"] for event in handled] == [7]
