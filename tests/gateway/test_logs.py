"""The log as an operator reads it: a line per request, every failure, dead letter and circuit change with its ids,
start and stop lines, every line in the chosen format, never a key."""

from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import LIVE_KEY, POLICY, FakeClock, MemoryProvider, serve, sms_body

from gateway.logconfig import configure_logging
from gateway.settings import Settings
from plugins.sandbox import SandboxProvider

ROOT = Path(__file__).resolve().parents[2]
DEMO_KEY = "tdk_demo_sandbox_key_for_local_use"


@pytest.fixture
def json_log(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """The process log configured as ``tidings serve`` does, in JSON, written here; the test's own logging back after."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    written = io.StringIO()
    monkeypatch.setattr(sys, "stderr", written)
    configure_logging("debug", "json")
    yield written
    root.handlers[:], level = saved
    root.setLevel(level)
    logging.captureWarnings(False)


def lines(written: io.StringIO) -> list[dict[str, Any]]:
    """Every line written, each parsed as JSON (a line that is not fails the test)."""
    return [orjson.loads(line) for line in written.getvalue().splitlines()]


async def test_every_line_is_json_with_the_ids_of_each_failure_dead_letter_and_circuit_change_and_no_key(
    json_log: io.StringIO, aiohttp_client: Any, tmp_path: Path, clock: FakeClock, memory_provider: type[MemoryProvider]
) -> None:
    directory = tmp_path / "policies"
    directory.mkdir()
    memory = "{plugin: memory, circuit_breaker: {failures: 1, window: 60s, cooldown: 30s}}"
    (directory / "policy.yaml").write_text(textwrap.dedent(POLICY).replace("  memory: {plugin: memory}", f"  memory: {memory}"))
    api = await serve(aiohttp_client, directory, {"memory": memory_provider, "sandbox": SandboxProvider}, clock, max_attempts=3)
    memory_provider.script = {"+14155550101": ["permanent"], "+14155550102": ["transient"]}
    _, dead = await api.send(sms_body("+14155550101"))
    await api.idle()
    _, retried = await api.send(sms_body("+14155550102"))
    await api.idle()
    assert (await api.client.get("/metrics")).status == 200  # a scrape logs the dead letters committed so far
    assert (await api.client.get("/api/v1/notifications", headers={"Authorization": f"Bearer {LIVE_KEY}"})).status == 200
    await api.client.close()  # the app stops: its last line
    found = lines(json_log)
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in found)
    assert LIVE_KEY not in json_log.getvalue() and "tdk_acme" not in json_log.getvalue()

    requests = [line for line in found if line["logger"] == "gateway.access"]
    send = next(line for line in requests if line["route"] == "/api/v1/notifications/send")
    assert (send["method"], send["status"], send["tenant"], send["level"]) == ("POST", 202, "acme", "INFO")
    assert isinstance(send["duration_ms"], float) and send["message"].startswith("POST /api/v1/notifications/send 202 ")
    assert any(line["route"] == "/metrics" and line["tenant"] is None for line in requests)
    assert any(line["route"] == "/api/v1/notifications" and line["tenant"] == "acme" for line in requests), "a bearer key names its tenant too"

    failures = [line for line in found if line.get("event") == "delivery_failed"]
    assert {(line["notification_id"], line["outcome"]) for line in failures} == {
        (dead["notification_id"], "permanent"), (retried["notification_id"], "transient"),
    }
    assert all(line["delivery_id"].startswith("dlv_") and line["provider"] == "memory" and line["tenant"] == "acme" for line in failures)
    [dead_letter] = [line for line in found if line.get("event") == "dead_letter"]
    assert (dead_letter["notification_id"], dead_letter["reason"], dead_letter["channel"]) == (dead["notification_id"], "permanent", "sms")
    assert dead_letter["delivery_id"].startswith("dlv_") and dead_letter["level"] == "WARNING"
    [circuit] = [line for line in found if line.get("event") == "circuit"]
    assert (circuit["provider"], circuit["to_state"], circuit["notification_id"]) == ("memory", "open", retried["notification_id"])
    assert found[-1]["event"] == "stop" and found[-1]["message"] == "Tidings stopped"


async def test_access_log_false_quiets_the_request_lines_and_keeps_the_others(
    json_log: io.StringIO, aiohttp_client: Any, tmp_path: Path, policy_dir: Path, clock: FakeClock, memory_provider: type[MemoryProvider]
) -> None:
    api = await serve(aiohttp_client, policy_dir, {"memory": memory_provider, "sandbox": SandboxProvider}, clock, access_log=False)
    assert (await api.send(sms_body()))[0] == 202
    await api.client.close()
    found = lines(json_log)
    assert not [line for line in found if line["logger"] == "gateway.access"]
    assert found[-1]["message"] == "Tidings stopped"


@pytest.mark.parametrize("given", ["debug", "Debug", "DEBUG"])
def test_the_log_level_is_taken_in_any_case(monkeypatch: pytest.MonkeyPatch, given: str) -> None:
    monkeypatch.setenv("TIDINGS_LOG_LEVEL", given)
    monkeypatch.setenv("TIDINGS_LOG_FORMAT", "JSON")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert (settings.log_level, settings.log_format) == ("DEBUG", "json")


def test_an_unknown_log_level_is_still_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    monkeypatch.setenv("TIDINGS_LOG_LEVEL", "loud")
    with pytest.raises(ValidationError):
        Settings(_env_file=None)  # type: ignore[call-arg]


def _request(url: str, body: dict[str, object] | None = None) -> int:
    data = orjson.dumps(body) if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"X-API-Key": DEMO_KEY, "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return int(response.status)


def test_serve_in_json_mode_writes_every_line_as_json_from_its_start_line_to_its_stop_line(tmp_path: Path) -> None:
    from tests.gateway.test_cli import _free_port, started

    port = _free_port()
    env = os.environ | {
        "TIDINGS_PORT": str(port), "TIDINGS_DATA_DIR": str(tmp_path), "TIDINGS_POLICY_DIR": str(ROOT / "policies"),
        "TIDINGS_LOG_LEVEL": "info", "TIDINGS_LOG_FORMAT": "json", "TIDINGS_POLICY_RELOAD": "false",
    }
    with subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            first = orjson.loads(started(process))
            assert _request(f"http://127.0.0.1:{port}/readyz") == 200
            body = {"recipient": {"phone": "+14155550100"}, "notification": {"channels": ["sms"], "body": "hello"}}
            assert _request(f"http://127.0.0.1:{port}/api/v1/notifications/send", body) == 202
            process.send_signal(signal.SIGTERM)
            out, errors = process.communicate(timeout=15)
            assert process.returncode == 0, errors
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert out == "", "nothing on stdout: the start line is a line of the log"
    rest = [orjson.loads(line) for line in errors.splitlines()]  # every line JSON, or this fails
    assert first["event"] == "start" and first["address"] == f"http://127.0.0.1:{port}"
    assert first["store"] == str(tmp_path / "tidings.sqlite3") and first["policy_version"] and first["version"]
    assert any(line.get("route") == "/api/v1/notifications/send" and line.get("status") == 202 for line in rest)
    assert rest[-1]["message"] == "Tidings stopped"
    assert DEMO_KEY not in errors


def test_serve_refusing_to_start_in_json_mode_says_why_in_json(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = os.environ | {
            "TIDINGS_PORT": str(port), "TIDINGS_DATA_DIR": str(tmp_path), "TIDINGS_POLICY_DIR": str(ROOT / "policies"),
            "TIDINGS_LOG_FORMAT": "json",
        }
        done = subprocess.run([sys.executable, "-m", "gateway.cli", "serve"], env=env, capture_output=True, text=True, timeout=20)
    assert done.returncode == 1
    [line] = [orjson.loads(text) for text in done.stderr.splitlines()]
    assert (line["level"], line["message"]) == ("ERROR", f"cannot listen on 127.0.0.1:{port}: the address is in use")
