"""The gateway the fault cases run against: a real server on loopback, a real SQLite file, policies on disk.

Every server has tenant ``acme`` (key :data:`conftest.LIVE_KEY`) and a ``mail`` instance of the
mailgun plugin, whose callbacks are checked with no vendor to talk to; a case adds the
providers, channels and templates it needs.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from conftest import LIVE_KEY, Api, FakeClock, key_entry, serve

from gateway import Provider
from plugins.mailgun import MailgunProvider

SECRETS = ("mailgun-key", "mailgun-signing", "vonage-secret", "vonage-signature")


async def gateway(
    aiohttp_client: Any, tmp_path: Path, clock: FakeClock, plugins: dict[str, type[Provider]] | None = None, *,
    providers: str = "", policy: str = "", **settings: Any,
) -> Api:
    """The gateway serving acme with the ``mail`` instance, plus ``providers`` (YAML lines under ``providers:``) and ``policy``."""
    policy_dir = tmp_path / "policies"
    (policy_dir / "secrets").mkdir(parents=True)
    for name in SECRETS:
        (policy_dir / "secrets" / name).write_text(f"{name}-value-0001")
    (policy_dir / "policy.yaml").write_text(textwrap.dedent(f"""
        tenants:
          acme:
            api_keys: [{key_entry(LIVE_KEY)}]
        providers:
          mail: {{plugin: mailgun, config: {{api_key: {{$file: secrets/mailgun-key}}, domain: mg.example, from: a@mg.example,
                  webhook_signing_key: {{$file: secrets/mailgun-signing}}}}}}
        """) + textwrap.indent(textwrap.dedent(providers), "  ") + textwrap.dedent(policy))
    return await serve(aiohttp_client, policy_dir, {"mailgun": MailgunProvider, **(plugins or {})}, clock, **settings)
