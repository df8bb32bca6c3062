"""The GitOps example: its policies pass `tidings check`, and the README's broken edit fails as shown."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "gitops"
TIDINGS = Path(sys.executable).parent / "tidings"
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
