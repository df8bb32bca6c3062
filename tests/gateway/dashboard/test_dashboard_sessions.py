"""Session cookies and operator keys: signed, expiring, bound to their key; operators in policy checked as API keys are."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from conftest import LIVE_KEY, key_entry, run_cli
from dashboard_support import OPERATOR_KEY, VIEWER_KEY, operators_policy
from pydantic import SecretStr

from gateway.dashboard.access import visitor_of
from gateway.dashboard.sessions import SECRET_FILE, SESSION_SECONDS, SessionSigner
from gateway.errors import PolicyError
from gateway.plugins import PluginCatalog
from gateway.policy.keys import hash_key
from gateway.policy.loading import load_policies
from gateway.settings import Settings

NOW = 1_800_000_000.0


def settings(tmp_path: Path, master_key: str | None = None) -> Settings:
    return Settings(data_dir=tmp_path / "data", policy_dir=tmp_path, master_key=SecretStr(master_key) if master_key else None, _env_file=None)  # type: ignore[call-arg]


def test_a_sealed_session_opens_until_it_expires_and_not_once_altered(tmp_path: Path) -> None:
    signer = SessionSigner.from_settings(settings(tmp_path))
    session = signer.open_session("operator", VIEWER_KEY[:12], hash_key(VIEWER_KEY), NOW)
    sealed = signer.seal(session)
    assert VIEWER_KEY not in sealed and hash_key(VIEWER_KEY) not in sealed, "the key and its whole hash stay out of the cookie"
    assert signer.unseal(sealed, NOW + SESSION_SECONDS - 1) == session
    assert signer.unseal(sealed, NOW + SESSION_SECONDS) is None
    payload, _, mac = sealed.partition(".")
    last = mac[-1]
    for forged in (
        payload + "x." + mac, payload + "." + mac[:-1] + ("A" if last != "A" else "B"), "", ".", "x" * 5000, "no-dot", "é.é",
        *(payload + "." + mac[:-1] + other for other in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_" if other != last),
    ):
        assert signer.unseal(forged, NOW) is None, forged  # every other last character too: base64's unused bits are no way in
    assert SessionSigner(b"\x01" * 32).unseal(sealed, NOW) is None, "another secret's cookie"


def test_the_secret_is_kept_in_the_data_directory_or_derived_from_the_master_key(tmp_path: Path) -> None:
    first = SessionSigner.from_settings(settings(tmp_path))
    sealed = first.seal(first.open_session("tenant", LIVE_KEY[:12], hash_key(LIVE_KEY), NOW))
    path = tmp_path / "data" / SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert SessionSigner.from_settings(settings(tmp_path)).unseal(sealed, NOW) is not None, "a restart signs no one out"
    keyed = SessionSigner.from_settings(settings(tmp_path, "a-master-key-of-some-length-0123456789"))
    assert keyed.unseal(sealed, NOW) is None
    again = SessionSigner.from_settings(settings(tmp_path / "elsewhere", "a-master-key-of-some-length-0123456789"))
    assert again.unseal(keyed.seal(keyed.open_session("tenant", "p", "0" * 64, NOW)), NOW) is not None, "every process with the key agrees"
    path.write_text("not hex\n")
    with pytest.raises(ValueError, match="delete it"):
        SessionSigner.from_settings(settings(tmp_path))


def test_csrf_tokens_are_bound_to_their_nonce_and_purpose(tmp_path: Path) -> None:
    signer = SessionSigner(b"\x02" * 32)
    token = signer.token("csrf", "nonce-a")
    assert signer.check_token("csrf", "nonce-a", token)
    assert not signer.check_token("csrf", "nonce-b", token)
    assert not signer.check_token("sign-in", "nonce-a", token)
    assert not signer.check_token("csrf", "nonce-a", None)
    assert not signer.check_token("csrf", "nonce-a", "é")


def test_operators_in_policy_are_found_by_key_and_a_session_follows_their_role(tmp_path: Path, plugin_catalog: PluginCatalog) -> None:
    (tmp_path / "operators.yaml").write_text(operators_policy())
    policy = load_policies(tmp_path, plugin_catalog)
    signer = SessionSigner(b"\x03" * 32)
    session = signer.open_session("operator", OPERATOR_KEY[:12], hash_key(OPERATOR_KEY), NOW)
    visitor = visitor_of(session, policy)
    assert visitor is not None and (visitor.name, visitor.role, visitor.actor) == ("otto", "operator", "operator:otto")
    assert visitor.may_replay and not visitor.may_reload and visitor.fixed_tenant is None
    (tmp_path / "operators.yaml").write_text(operators_policy().replace("role: operator", "role: viewer"))
    demoted = visitor_of(session, load_policies(tmp_path, plugin_catalog))
    assert demoted is not None and demoted.role == "viewer" and not demoted.may_replay, "a role changed in policy applies at once"
    as_tenant = signer.open_session("tenant", OPERATOR_KEY[:12], hash_key(OPERATOR_KEY), NOW)
    assert visitor_of(as_tenant, policy) is None, "an operator key is no tenant's API key"


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("operators:\n  ana: {prefix: tdo_abcdefgh, sha256: %s, role: root}\n" % ("a" * 64), "operators.yaml:2", "role"),
        ("operators:\n  ana: {prefix: tdo_abcdefgh, role: viewer}\n", "operators.yaml:2", "sha256"),
        ("operators:\n  ana: {prefix: short, sha256: %s, role: viewer}\n" % ("a" * 64), "operators.yaml:2", "prefix"),
        ("operators:\n  ana: {prefix: tdo_abcdefgh, sha256: %s, role: viewer, tenant: acme}\n" % ("a" * 64), "operators.yaml:2", "unknown field"),
        ("operators:\n  'bad name!': {prefix: tdo_abcdefgh, sha256: %s, role: viewer}\n" % ("a" * 64), "operators.yaml:2", ""),
    ],
)
def test_tidings_check_refuses_a_bad_operator_entry_at_its_file_and_line(
    tmp_path: Path, plugin_catalog: PluginCatalog, text: str, where: str, message: str
) -> None:
    (tmp_path / "operators.yaml").write_text(text)
    with pytest.raises(PolicyError) as raised:
        load_policies(tmp_path, plugin_catalog)
    assert any(f"{issue.file}:{issue.line}" == where and message in str(issue) for issue in raised.value.issues), raised.value.issues


def test_one_key_serves_one_holder_a_tenants_key_cannot_also_be_an_operators(tmp_path: Path, plugin_catalog: PluginCatalog) -> None:
    entry = key_entry(LIVE_KEY).replace(", mode: live", ", role: admin")
    (tmp_path / "policy.yaml").write_text(f"tenants:\n  acme:\n    api_keys: [{key_entry(LIVE_KEY)}]\noperators:\n  eve: {entry}\n")
    with pytest.raises(PolicyError) as raised:
        load_policies(tmp_path, plugin_catalog)
    [issue] = raised.value.issues
    assert (issue.path, issue.line) == ("operators.eve.sha256", 5) and "tenant 'acme'" in issue.message


def test_key_create_operator_prints_a_working_entry_and_refuses_half_an_answer(tmp_path: Path, plugin_catalog: PluginCatalog) -> None:
    code, out = run_cli("key", "create", "--operator", "--role", "viewer", "--name", "ana")
    assert code == 0
    key = next(line.strip() for line in out.splitlines() if line.strip().startswith("tdo_"))
    entry = out[out.index("operators:"):]
    (tmp_path / "operators.yaml").write_text(entry)
    policy = load_policies(tmp_path, plugin_catalog)
    [[found]] = policy.operators_by_prefix.values()
    assert (found.name, found.key.role, found.key.sha256) == ("ana", "viewer", hash_key(key))
    for argv in (("--operator", "--name", "ana"), ("--operator", "--role", "viewer"), ("--role", "admin", "--name", "ana"),
                 ("--operator", "--role", "viewer", "--name", "ana", "--tenant", "acme"), ("--operator", "--role", "viewer", "--name", "a b")):
        assert run_cli("key", "create", *argv)[0] == 2, argv
