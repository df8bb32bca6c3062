"""The commands that call a running gateway (``send``, ``send --csv``, ``status``, ``dead-letters``), and the CLI's own comforts.

Each command runs as ``tidings`` would, through ``cli.main``, in a thread of its own against a
real server on loopback (the test's event loop serves it meanwhile), with the key in
``TIDINGS_API_KEY``. What it printed is read back, and what it did is read back through the API.
"""

from __future__ import annotations

import asyncio
import io
import re
import shlex
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from conftest import LIVE_KEY, OTHER_KEY, TEST_KEY, Api, FakeClock, MemoryProvider, run_cli

from gateway import cli
from gateway.app import create_app
from gateway.client import bulk
from gateway.client.api import ClientSettings, connect
from gateway.client.progress import ProgressBar
from gateway.plugins import PluginCatalog
from gateway.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Ran:
    code: int
    out: str
    err: str


@pytest.fixture
def tidings(api: Api, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """Run ``tidings ARGV… --url <the test server>`` with ``key`` in TIDINGS_API_KEY (None: unset)."""
    monkeypatch.delenv("TIDINGS_URL", raising=False)
    url = str(api.client.make_url("/")).rstrip("/")

    async def run(*argv: str, key: str | None = LIVE_KEY) -> Ran:
        if key is None:
            monkeypatch.delenv("TIDINGS_API_KEY", raising=False)
        else:
            monkeypatch.setenv("TIDINGS_API_KEY", key)
        capsys.readouterr()
        code = await asyncio.to_thread(cli.main, [*argv, "--url", url])
        captured = capsys.readouterr()
        return Ran(code, captured.out, captured.err)

    return run


def notification_id(output: str) -> str:
    found = re.match(r"^(ntf_\w+) (\w+) \((live|test) mode\)", output)
    assert found is not None, output
    return found.group(1)


async def test_send_from_flags_prints_the_id_and_status_and_the_gateway_has_it(api: Api, tidings: Any) -> None:
    ran = await tidings("send", "--to", "phone=+14155550100", "--channel", "sms", "--template", "otp", "--data", "code=4242")
    assert ran.code == 0, ran.err
    assert re.match(r"^ntf_\w+ queued \(live mode\)\n  sms  dlv_\w+  queued\n$", ran.out), ran.out
    stored = await api.notification(notification_id(ran.out))
    assert stored["recipient"] == {"phone": "+14155550100"} and stored["template_id"] == "otp"
    await api.idle()
    assert MemoryProvider.sent[-1].body == "Your code is 4242"


async def test_send_takes_a_raw_body_json_data_several_channels_and_an_idempotency_key(api: Api, tidings: Any) -> None:
    first = await tidings(
        "send", "--to", "email=ada@example.com", "--to", "phone=+14155550100", "--channel", "email,sms",
        "--template", "shipped", "--data-json", '{"order_id": 1001, "name": "Ada"}', "--idempotency-key", "order-1001",
    )
    assert first.code == 0, first.err
    again = await tidings(
        "send", "--to", "email=ada@example.com", "--to", "phone=+14155550100", "--channel", "email,sms",
        "--template", "shipped", "--data-json", '{"order_id": 1001, "name": "Ada"}', "--idempotency-key", "order-1001",
    )
    assert notification_id(again.out) == notification_id(first.out)
    assert "already accepted under this idempotency key" in again.out
    stored = await api.notification(notification_id(first.out))
    assert [d["channel"] for d in stored["deliveries"]] == ["email", "sms"]
    raw = await tidings("send", "--to", "email=ada@example.com", "--channel", "email", "--subject", "Hi", "--body", "Hello there", "--json")
    assert raw.code == 0 and '"notification_id": "ntf_' in raw.out


async def test_send_to_a_contact_by_external_id(api: Api, tidings: Any) -> None:
    response = await api.client.post("/api/v1/contacts", json={"external_id": "u-42", "phone": "+14155550142"}, headers=api.headers())
    assert response.status == 201
    ran = await tidings("send", "--external-id", "u-42", "--channel", "sms", "--template", "otp", "--data", "code=1")
    assert ran.code == 0, ran.err
    assert (await api.notification(notification_id(ran.out)))["recipient"] == {"phone": "+14155550142"}


async def test_an_api_refusal_is_one_line_with_its_status_and_code_and_exit_status_1(api: Api, tidings: Any) -> None:
    ran = await tidings("send", "--to", "phone=+14155550100", "--channel", "sms", "--template", "otp")
    assert ran.code == 1 and ran.out == ""
    assert ran.err == "tidings: 422 missing_variables: template 'otp' needs values for: code\n"
    unknown = await tidings("status", "ntf_01ARZ3NDEKTSV4RRFFQ69G5FAV")
    assert (unknown.code, unknown.err) == (1, "tidings: 404 notification_not_found: No notification 'ntf_01ARZ3NDEKTSV4RRFFQ69G5FAV'.\n")
    status, page = await api.get("/api/v1/notifications")
    assert status == 200 and page["items"] == [], "nothing was sent"


async def test_bad_flags_are_refused_before_anything_is_sent(api: Api, tidings: Any) -> None:
    for argv, says in [
        (("send", "--channel", "sms", "--template", "otp"), "say who to send to"),
        (("send", "--to", "phone", "--channel", "sms"), "--to takes NAME=VALUE (got 'phone')"),
        (("send", "--to", "phone=+14155550100", "--channel", "sms", "--data-json", "[1]"), "--data-json must be a JSON object"),
        (("send", "--to", "phone=+14155550100", "--channel", "sms", "--data-json", "{"), "--data-json is not JSON"),
        (("dead-letters", "replay"), "a delivery id (dlv_…), or --all"),
        (("dead-letters", "replay", "dlv_x", "--all"), "not both"),
    ]:
        ran = await tidings(*argv)
        assert ran.code == 2 and says in ran.err and ran.err.count("\n") == 1, (argv, ran)
    assert (await api.get("/api/v1/notifications"))[1]["items"] == []


async def test_the_key_comes_only_from_the_environment_and_is_never_printed(api: Api, tidings: Any, capsys: pytest.CaptureFixture[str]) -> None:
    unset = await tidings("status", "ntf_01ARZ3NDEKTSV4RRFFQ69G5FAV", key=None)
    assert unset.code == 2
    assert unset.err == "tidings: TIDINGS_API_KEY is not set: export the tenant's key (never pass it as a flag)\n"
    with pytest.raises(SystemExit) as refused:
        cli.main(["send", "--api-key", LIVE_KEY, "--to", "phone=+14155550100", "--channel", "sms"])
    assert refused.value.code == 2 and "unrecognized arguments: --api-key" in capsys.readouterr().err
    for command in ("send", "status", "dead-letters list", "dead-letters replay"):
        with pytest.raises(SystemExit):
            cli.main([*command.split(), "--help"])
        assert "TIDINGS_API_KEY only, never from a flag" in capsys.readouterr().out, command
    wrong = "tdk_acme_live_key_for_tests_9999"
    bad = await tidings("send", "--to", "phone=+14155550100", "--channel", "sms", "--body", "hi", key=wrong)
    assert (bad.code, bad.err) == (1, "tidings: 401 invalid_api_key: Unknown API key.\n")
    for ran in (unset, bad, await tidings("send", "--to", "phone=+14155550100", "--channel", "sms", "--body", "hi")):
        assert wrong not in ran.out + ran.err and LIVE_KEY not in ran.out + ran.err and "tdk_" not in ran.out + ran.err


async def test_a_test_key_sees_its_own_world(api: Api, tidings: Any) -> None:
    mine = await tidings("send", "--to", "phone=+14155550100", "--channel", "sms", "--body", "hi", key=TEST_KEY)
    assert "(test mode)" in mine.out
    other = await tidings("status", notification_id(mine.out), key=OTHER_KEY)
    assert other.code == 1 and "404 notification_not_found" in other.err


async def test_an_unreachable_gateway_is_one_line(tidings: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("TIDINGS_API_KEY", LIVE_KEY)
    capsys.readouterr()
    code = await asyncio.to_thread(cli.main, ["status", "ntf_01ARZ3NDEKTSV4RRFFQ69G5FAV", "--url", f"http://127.0.0.1:{port}"])
    assert code == 1
    assert capsys.readouterr().err == f"tidings: cannot reach the gateway at http://127.0.0.1:{port}: connection refused (is `tidings serve` running there?)\n"
    monkeypatch.setenv("TIDINGS_URL", "127.0.0.1:8080")
    assert cli.main(["status", "ntf_01ARZ3NDEKTSV4RRFFQ69G5FAV"]) == 2
    assert capsys.readouterr().err == "tidings: TIDINGS_URL: Value error, must start with http:// or https://\n"


async def test_status_tells_the_timeline_and_json_gives_the_api_view(api: Api, tidings: Any, memory_provider: type[MemoryProvider]) -> None:
    memory_provider.script["+14155550100"] = ["permanent"]
    sent = await tidings("send", "--to", "phone=+14155550100", "--to", "email=ada@example.com", "--channel", "sms,email",
                         "--template", "otp", "--data", "code=7")
    ntf = notification_id(sent.out)
    await api.wait_for(ntf, lambda n: all(d["attempts"] for d in n["deliveries"]))
    ran = await tidings("status", ntf)
    assert ran.code == 0, ran.err
    lines = ran.out.splitlines()
    assert lines[0] == f"{ntf}  sent  (live)"
    assert "  to phone +14155550100, email ada@example.com" in lines
    sms = next(line for line in lines if line.startswith("  sms "))
    assert "+14155550100  failed, via memory, 1 attempt(s)" in sms
    assert any("dead letter: permanent since" in line for line in lines)
    assert any(re.search(r"attempt 1 at \S+ via memory: permanent: recipient rejected", line) for line in lines), ran.out
    timeline = lines[lines.index("timeline:") + 1:]
    assert "accepted -> queued" in timeline[0]
    assert any(" sms " in line and "-> failed" in line for line in timeline)
    assert any(" email " in line and "-> sent" in line for line in timeline)
    raw = await tidings("status", ntf, "--json")
    assert '"audit": [' in raw.out and f'"notification_id": "{ntf}"' in raw.out


async def test_dead_letters_are_listed_filtered_and_replayed_by_id_and_all(
    api: Api, tidings: Any, memory_provider: type[MemoryProvider]
) -> None:
    ids = []
    for phone in ("+14155550101", "+14155550102", "+14155550103"):
        memory_provider.script[phone] = ["permanent"]
        sent = await tidings("send", "--to", f"phone={phone}", "--channel", "sms", "--body", "hi")
        ids.append(notification_id(sent.out))
    memory_provider.script["bad@example.com"] = ["permanent"]  # before the send: the dispatcher may take it at once
    email = await tidings("send", "--to", "email=bad@example.com", "--channel", "email", "--subject", "s", "--body", "b")
    for ntf in [*ids, notification_id(email.out)]:
        await api.wait_for(ntf, lambda n: n["status"] == "failed")
    listed = await tidings("dead-letters", "list", "--channel", "sms", "--reason", "permanent")
    assert listed.code == 0, listed.err
    rows = listed.out.splitlines()
    assert rows[-1] == "3 dead letter(s)"
    assert [row.split()[1] for row in rows[:-1]] == list(reversed(ids)), "newest first"
    assert all("  sms  " in row and "  permanent after 1 attempt(s) via memory: recipient rejected" in row for row in rows[:-1]), rows
    assert (await tidings("dead-letters", "list", "--limit", "2")).out.splitlines()[-1] == "2 dead letter(s), more: raise --limit"
    as_json = await tidings("dead-letters", "list", "--json")
    assert len(as_json.out.splitlines()) == 4 and as_json.out.startswith('{"delivery_id":"dlv_')

    one = rows[0].split()[0]
    replayed = await tidings("dead-letters", "replay", one)
    assert (replayed.code, replayed.out) == (0, f"replayed {one}\n")
    again = await tidings("dead-letters", "replay", one)
    assert again.code == 1 and "409 not_dead_lettered" in again.err
    everything = await tidings("dead-letters", "replay", "--all", "--channel", "sms")
    assert (everything.code, everything.out) == (0, "replayed 2 dead letter(s)\n")
    await api.idle()
    left = await tidings("dead-letters", "list")
    assert left.out.splitlines() == [left.out.splitlines()[0], "1 dead letter(s)"] and "  email  " in left.out
    for ntf in ids:
        await api.wait_for(ntf, lambda n: n["status"] == "sent")


CSV = """\
phone,email,data.code
+14155550100,ada@example.com,111
12345,bob@example.com,222

+14155550103,,
+14155550104,dan@example.com,"4
4"
"""


async def test_send_csv_sends_every_row_in_chunks_and_reports_each_rejected_row(api: Api, tidings: Any, tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text(CSV)
    ran = await tidings("send", "--csv", str(path), "--channel", "sms", "--template", "otp", "--chunk-size", "2")
    assert ran.code == 1, "a row was not accepted"
    assert ran.out.splitlines() == [
        "2 of 4 rows accepted, 2 rejected",
        "  row 2 (line 3): invalid_recipient: must be an E.164 phone number like +14155550100",
        "  row 3 (line 5): missing_variables: template 'otp' needs values for: code",
    ]
    assert ran.err == "", "no progress bar when stderr is not a terminal"
    await api.idle()
    assert sorted(message.body for message in MemoryProvider.sent) == ["Your code is 111", "Your code is 4\n4"]


async def test_send_csv_shrinks_its_chunks_to_the_servers_bulk_limit(
    aiohttp_client: Any, make_app: Callable[..., web.Application], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    small = Api(await aiohttp_client(make_app(bulk_max_rows=2)))
    path = tmp_path / "rows.csv"
    path.write_text("phone\n" + "".join(f"+1415555010{n}\n" for n in range(5)))
    monkeypatch.setenv("TIDINGS_API_KEY", LIVE_KEY)
    url = str(small.client.make_url("/")).rstrip("/")
    code = await asyncio.to_thread(cli.main, ["send", "--csv", str(path), "--channel", "sms", "--body", "hi", "--url", url, "--json"])
    assert code == 0
    assert capsys.readouterr().out == '{"accepted":5,"rejected":[],"unsent":0}\n'
    assert len((await small.get("/api/v1/notifications"))[1]["items"]) == 5


async def test_send_csv_stops_at_a_refusal_of_the_whole_request_and_says_how_many_were_not_sent(
    api: Api, tidings: Any, tmp_path: Path
) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("phone\n+14155550100\n+14155550101\n")
    ran = await tidings("send", "--csv", str(path), "--channel", "sms", "--template", "nope")
    assert ran.code == 1
    assert ran.out.splitlines()[-1] == "stopped, 2 rows not sent: 422 unknown_template: unknown template 'nope'"
    assert ran.err == "tidings: 422 unknown_template: unknown template 'nope'\n"


async def test_send_csv_with_an_idempotency_key_sends_each_chunk_once_when_run_again(api: Api, tidings: Any, tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("phone\n+14155550100\n+14155550101\n+14155550102\n")
    argv = ("send", "--csv", str(path), "--channel", "sms", "--body", "hi", "--chunk-size", "2", "--idempotency-key", "june-mailing")
    assert (await tidings(*argv)).code == 0
    assert (await tidings(*argv)).out == "3 of 3 rows accepted, 0 rejected\n"
    assert len((await api.get("/api/v1/notifications"))[1]["items"]) == 3


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("", "empty file"),
        ("phone\n", "no rows after the header"),
        ("phone,phone\n+1,+2\n", "rows.csv:1: column 'phone' appears twice"),
        ("phone,data.\n+1,x\n", "rows.csv:1: a column has no name"),
        ("phone,email\n+14155550100\n", "rows.csv:2: 1 cells, but the header names 2 columns"),
    ],
)
async def test_a_bad_csv_file_sends_nothing(api: Api, tidings: Any, tmp_path: Path, content: str, says: str) -> None:
    path = tmp_path / "rows.csv"
    path.write_text(content)
    ran = await tidings("send", "--csv", str(path), "--channel", "sms", "--body", "hi")
    assert ran.code == 2 and says in ran.err, ran
    assert (await api.get("/api/v1/notifications"))[1]["items"] == []


async def test_a_bulk_upload_waits_out_a_rate_limit_and_sends_the_chunk_again(
    aiohttp_client: Any, make_app: Callable[..., web.Application], policy_dir: Path, clock: FakeClock
) -> None:
    (policy_dir / "quotas.yaml").write_text("quotas:\n  acme: {burst_per_minute: 2, sustained_per_minute: 2}\n")
    limited = Api(await aiohttp_client(make_app()))
    rows = [bulk.CsvRow(n + 1, n + 2, {"phone": f"+1415555010{n}"}) for n in range(4)]
    waited: list[float] = []

    async def sleep(seconds: float) -> None:
        waited.append(seconds)
        clock.advance(seconds)

    settings = ClientSettings(url=str(limited.client.make_url("/")).rstrip("/"), api_key=LIVE_KEY)  # type: ignore[arg-type]
    async with connect(settings) as client:
        summary = await bulk.upload(client, {"channels": ["sms"], "body": "hi"}, rows, chunk_size=2, sleep=sleep)
    assert (summary.accepted, summary.rejections, summary.unsent, summary.stopped_by) == (4, (), 0, None)
    assert waited and all(0 < seconds <= 60 for seconds in waited), waited


def test_version_prints_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == f"tidings {version('tidings')}\n"


def test_serve_help_lists_every_setting_with_its_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    shown = capsys.readouterr().out
    listed = re.findall(r"^  TIDINGS_(\w+) \(default: (.*)\)$", shown, flags=re.MULTILINE)
    assert [name.lower() for name, _ in listed] == list(Settings.model_fields)
    defaults = dict(listed)
    assert (defaults["PORT"], defaults["POLICY_RELOAD"], defaults["MASTER_KEY"], defaults["LEASE_SECONDS"]) == ("8080", "true", "unset", "60")
    assert "Sends in flight at once per channel." in shown and "One of: DEBUG, INFO, WARNING, ERROR." in shown


def test_check_without_a_directory_checks_tidings_policy_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "bad.yaml").write_text("channels:\n  sms: {providers: [ghost]}\n")
    monkeypatch.setenv("TIDINGS_POLICY_DIR", str(tmp_path))
    code, output = run_cli("check")
    assert code == 1 and f"bad.yaml:2: channels.sms.providers[0]: unknown provider instance 'ghost'" in output
    assert output.splitlines()[-1] == f"1 problem(s) in {tmp_path}"
    monkeypatch.delenv("TIDINGS_POLICY_DIR")
    monkeypatch.chdir(ROOT)
    code, output = run_cli("check")
    assert code == 0 and output.startswith("policies: OK")


async def test_the_readme_command_lines_run_as_written(
    aiohttp_client: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's command-line block, against the shipped policies with the demo key, with its CSV example as the file."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## The command line"):readme.index("## The API")]
    lines = re.search(r"```sh\n(.*?)```", section, flags=re.DOTALL).group(1).splitlines()  # type: ignore[union-attr]
    (tmp_path / "customers.csv").write_text(re.search(r"  ```\n(.*?)  ```", section, flags=re.DOTALL).group(1).replace("  ", ""))  # type: ignore[union-attr]
    key = next(line.split("=", 1)[1] for line in lines if line.startswith("export TIDINGS_API_KEY="))
    settings = Settings(data_dir=tmp_path / "data", policy_dir=ROOT / "policies", policy_reload=False, _env_file=None)  # type: ignore[call-arg]
    demo = await aiohttp_client(create_app(settings, plugins=PluginCatalog.discover()))
    monkeypatch.setenv("TIDINGS_API_KEY", key)
    monkeypatch.setenv("TIDINGS_URL", str(demo.make_url("/")).rstrip("/"))
    monkeypatch.setenv("TIDINGS_POLICY_DIR", str(ROOT / "policies"))
    monkeypatch.chdir(tmp_path)
    sent = ""
    for line in (line for line in lines if line.startswith("tidings ")):
        argv = shlex.split(line)[1:]
        if argv[0] == "status":
            argv[1] = notification_id(sent)
        capsys.readouterr()
        code = await asyncio.to_thread(cli.main, argv)
        out = capsys.readouterr().out
        assert code == 0, (line, out)
        sent = sent or out
    assert out.startswith(f"{ROOT / 'policies'}: OK ("), "the last line, tidings check, checked TIDINGS_POLICY_DIR"


def test_the_progress_bar_is_drawn_in_place_on_a_terminal_and_not_at_all_into_a_pipe() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    for stream, drawn in ((Terminal(), f"\r[{'#' * 15}{'.' * 15}] 2/4 rows\r[{'#' * 30}] 4/4 rows\n"), (io.StringIO(), "")):
        bar = ProgressBar(4, stream)
        bar.update(2)
        bar.update(4)
        bar.close()
        assert stream.getvalue() == drawn


def test_the_client_commands_know_the_gateway_only_through_its_api() -> None:
    """gateway/client imports no part of the server (store, engine, http, policy): it is a client like any other."""
    import ast

    for module in (ROOT / "gateway" / "client").glob("*.py"):
        tree = ast.parse(module.read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        ours = {name for name in imported if name == "gateway" or name.startswith("gateway.")}
        assert ours <= {"gateway.client", "gateway.client.api", "gateway.client.bulk", "gateway.client.progress",
                        "gateway.client.timeline", "gateway.errors"}, (module.name, ours)
