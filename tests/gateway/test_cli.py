"""The ``tidings`` command, including a real server process stopped with SIGTERM."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

import orjson
import pytest
from conftest import run_cli
from stevedore import ExtensionManager

from gateway.plugins import NAMESPACE, PluginCatalog

ROOT = Path(__file__).resolve().parents[2]


def test_key_create_prints_a_key_once_and_the_policy_line_with_its_hash() -> None:
    code, output = run_cli("key", "create", "--tenant", "acme", "--mode", "test")
    assert code == 0
    key = re.search(r"^\s+(tdk_\S+)$", output, flags=re.MULTILINE).group(1)  # type: ignore[union-attr]
    line = re.search(r"- \{prefix: (\S+), sha256: (\w+), mode: test\}", output)
    assert line is not None
    assert line.group(1) == key[:12]
    assert line.group(2) == hashlib.sha256(key.encode()).hexdigest()


def test_plugins_lists_builtins_and_masks_nothing_secret() -> None:
    code, output = run_cli("plugins")
    assert code == 0
    for name in ("sandbox", "log", "webhook"):
        assert re.search(rf"^\s+{name}\s+channels:", output, flags=re.MULTILINE)
    assert "secret config fields (masked everywhere): secret" in output


def test_a_broken_plugin_is_listed_with_its_reason_not_fatal(monkeypatch: pytest.MonkeyPatch) -> None:
    real = ExtensionManager.__init__

    def with_broken(self: ExtensionManager, namespace: str, **kwargs: object) -> None:
        real(self, namespace, **kwargs)  # type: ignore[arg-type]
        callback = kwargs["on_load_failure_callback"]

        class EntryPoint:
            name = "broken"

        callback(self, EntryPoint(), ImportError("No module named 'tidings_broken'"))  # type: ignore[operator]

    monkeypatch.setattr(ExtensionManager, "__init__", with_broken)
    catalog = PluginCatalog.discover()
    assert "sandbox" in catalog.providers
    assert "tidings_broken" in catalog.failures["broken"]
    code, output = run_cli("plugins")
    assert code == 0
    assert "Failed to load:" in output and "broken" in output
    assert NAMESPACE == "tidings.providers"


def test_check_validates_a_directory_and_exits_1_with_located_errors(tmp_path: Path) -> None:
    assert run_cli("check", str(ROOT / "policies"))[0] == 0
    (tmp_path / "bad.yaml").write_text("channels:\n  sms: {providers: [ghost]}\n")
    code, output = run_cli("check", str(tmp_path))
    assert code == 1
    assert "bad.yaml:2: channels.sms.providers[0]: unknown provider instance 'ghost'" in output


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _request(url: str, body: dict[str, object] | None = None) -> tuple[int, dict[str, object]]:
    data = orjson.dumps(body) if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"X-API-Key": "tdk_demo_sandbox_key_for_local_use", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status, orjson.loads(response.read())


def test_serve_answers_then_stops_cleanly_on_sigterm_keeping_what_it_accepted(tmp_path: Path) -> None:
    port = _free_port()
    env = os.environ | {
        "TIDINGS_PORT": str(port), "TIDINGS_DATA_DIR": str(tmp_path), "TIDINGS_POLICY_DIR": str(ROOT / "policies"),
        "TIDINGS_LOG_LEVEL": "INFO",
    }
    with subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            assert f"serving on http://127.0.0.1:{port}" in started(process)
            status, ready = _request(f"http://127.0.0.1:{port}/readyz")
            assert status == 200 and ready["ready"] is True
            body = {"recipient": {"phone": "+14155550100"}, "notification": {"channels": ["sms"], "body": "hello"}}
            status, sent = _request(f"http://127.0.0.1:{port}/api/v1/notifications/send", body)
            assert status == 202
            process.send_signal(signal.SIGTERM)
            _out, errors = process.communicate(timeout=15)
            assert process.returncode == 0, errors
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
    with sqlite3.connect(tmp_path / "tidings.sqlite3") as db:
        (found,) = db.execute("SELECT status FROM notifications WHERE id = ?", (sent["notification_id"],)).fetchone()
    assert found in ("sent", "delivered")


def started(process: subprocess.Popen[str]) -> str:
    """The start line a server logs once it listens (its log is on stderr), read up to; the lines before it skipped."""
    assert process.stderr is not None
    for line in process.stderr:
        if "serving on" in line:
            return line
    raise AssertionError(f"the server stopped without its start line (exit {process.wait()})")


def _serve(data_dir: Path, port: int, level: str = "WARNING") -> subprocess.Popen[str]:
    env = os.environ | {
        "TIDINGS_PORT": str(port), "TIDINGS_DATA_DIR": str(data_dir), "TIDINGS_POLICY_DIR": str(ROOT / "policies"),
        "TIDINGS_LOG_LEVEL": level, "TIDINGS_POLICY_RELOAD": "false",
    }
    return subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _refused(process: subprocess.Popen[str]) -> tuple[int, str]:
    """Exit status and stderr of a serve that should give up at once."""
    try:
        _out, errors = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return process.returncode, errors


def test_serve_on_a_busy_port_says_so_in_one_line_before_it_touches_the_store(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, errors = _refused(_serve(tmp_path / "data", port))
    assert code == 1
    assert errors.strip().splitlines() == [f"cannot listen on 127.0.0.1:{port}: the address is in use"]
    assert not (tmp_path / "data" / "tidings.sqlite3").exists(), "nothing started: no dispatcher ran beside the other process"


def test_a_second_server_on_the_same_store_refuses_to_start_and_the_store_is_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first_port = _free_port()
    with _serve(data, first_port, "INFO") as first:
        try:
            assert "serving on" in started(first)
            code, errors = _refused(_serve(data, _free_port()))
            assert code == 1
            assert errors.strip().splitlines() == [f"{data / 'tidings.sqlite3'} is in use by another Tidings process; stop it first"]
            status, _ = _request(f"http://127.0.0.1:{first_port}/readyz")
            assert status == 200, "the first server goes on"
            modes = {path.name: path.stat().st_mode & 0o777 for path in data.iterdir()}
            assert modes["tidings.sqlite3"] == modes["tidings.sqlite3-wal"] == 0o600, modes
            assert data.stat().st_mode & 0o077 == 0, "the data directory is the server's alone"
        finally:
            first.send_signal(signal.SIGTERM)
            first.communicate(timeout=15)


def test_serve_refuses_a_lease_shorter_than_a_send_with_a_message_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TIDINGS_LEASE_SECONDS", "5")
    monkeypatch.setenv("TIDINGS_SEND_TIMEOUT_SECONDS", "10")
    code, _ = run_cli("serve")
    assert code == 2
    assert capsys.readouterr().err.startswith("settings: Value error, lease_seconds must be longer than send_timeout_seconds")
