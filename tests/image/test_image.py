"""The real Dockerfile, built and run as CONTAINERS.md describes (see tests/image/podman.py).

One build of the image and one of the derived ntfy image per run; each test then starts what it
needs from the image's mounted filesystem, as the image's user, with the image's environment,
entry point and health check. A real process on loopback cannot run on the FakeClock, so the
waits here are bounded polls of the API, never a fixed sleep.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.image import podman
from tests.test_docs import _curl_commands, _request

ROOT = Path(__file__).resolve().parents[2]
TAG = "localhost/tidings:test"
DERIVED_TAG = "localhost/tidings-ntfy:test"
POLICY_MOUNT = "/etc/tidings/policies"
DATA_VOLUME = "/var/lib/tidings"
DEADLINE_SECONDS = 30.0
T = TypeVar("T")

pytestmark = pytest.mark.timeout(900)


@dataclass(frozen=True)
class Server:
    """``tidings serve`` from the image, started by its entry point and command."""

    process: subprocess.Popen[bytes]
    base_url: str
    log: Path


@pytest.fixture(scope="module")
def image() -> podman.Image:
    podman.ensure_tools()
    base = podman.ensure_base()
    return podman.build(ROOT, TAG, build_args={"BASE": base})


@pytest.fixture(scope="module")
def root(image: podman.Image) -> Iterator[Path]:
    """The image's filesystem, with the repository's policies/ where a user mounts theirs."""
    with podman.mounted(image) as mounted:
        shutil.copytree(ROOT / "policies", mounted / POLICY_MOUNT.lstrip("/"), dirs_exist_ok=True)
        yield mounted


@pytest.fixture(scope="module")
def server(image: podman.Image, root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(image, root, tmp_path_factory.mktemp("serve") / "tidings.log") as running:
        yield running


@pytest.fixture
def readme_send() -> tuple[str, dict[str, str], bytes]:
    """The quickstart's send: its path, headers and body, as the README writes them."""
    send = next(command for command in _curl_commands() if command[2].endswith("/api/v1/notifications/send"))
    _method, url, headers, data = _request(send)
    assert data is not None
    return url.removeprefix("http://127.0.0.1:8080"), headers, data


def test_the_image_runs_as_a_numeric_non_root_user_with_policies_mounted_and_data_on_a_volume(image: podman.Image, root: Path) -> None:
    uid, gid = image.uid_gid(root)
    assert image.user == f"{uid}:{gid}", "numeric, so Kubernetes can check runAsNonRoot"
    assert uid != 0 and gid != 0
    assert image.env["TIDINGS_HOST"] == "0.0.0.0"
    assert image.env["TIDINGS_POLICY_DIR"] == POLICY_MOUNT
    assert image.env["TIDINGS_DATA_DIR"] == DATA_VOLUME
    assert image.volumes == {DATA_VOLUME}
    assert (root / DATA_VOLUME.lstrip("/")).stat().st_uid == uid
    assert image.entrypoint == ("/opt/tidings/bin/tidings",), "exec form: tidings is PID 1 and gets SIGTERM itself"
    assert image.cmd == ("serve",)
    assert any("/healthz" in part for part in image.healthcheck)
    assert not (root / "usr/bin/curl").exists()


def test_readyz_answers(server: Server) -> None:
    status, body = http(server, "GET", "/readyz")
    assert status == 200, body


def test_the_readme_send_is_delivered(server: Server, readme_send: tuple[str, dict[str, str], bytes]) -> None:
    path, headers, data = readme_send
    status, sent = http(server, "POST", path, headers=headers, data=data)
    assert status == 202, sent
    read_headers = {"X-API-Key": headers["X-API-Key"]}

    def delivered() -> dict[str, Any] | None:
        _status, notification = http(server, "GET", f"/api/v1/notifications/{sent['notification_id']}", headers=read_headers)
        statuses = {delivery["status"] for delivery in notification["deliveries"]}
        return notification if statuses == {"delivered"} else None

    notification = poll(delivered, server)
    assert [delivery["channel"] for delivery in notification["deliveries"]] == ["email", "sms"]


def test_the_healthcheck_passes_against_the_running_server(image: podman.Image, root: Path, server: Server) -> None:
    checked = podman.run(image, root, image.healthcheck, env={"TIDINGS_PORT": port_of(server)})
    assert checked.returncode == 0, checked.stderr


def test_the_healthcheck_fails_when_nothing_answers(image: podman.Image, root: Path) -> None:
    checked = podman.run(image, root, image.healthcheck, env={"TIDINGS_PORT": str(free_port())})
    assert checked.returncode != 0


def test_tidings_plugins_lists_every_built_in(image: podman.Image, root: Path) -> None:
    listed = podman.run(image, root, [*image.entrypoint, "plugins"])
    assert listed.returncode == 0, listed.stderr
    built_ins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["tidings.providers"]
    names = {line.split()[0] for line in listed.stdout.split("\n\n")[0].splitlines()[1:] if line.strip() and "channels:" in line}
    assert names == set(built_ins)
    assert "Failed to load" not in listed.stdout


def test_files_in_the_data_volume_belong_to_the_image_user(image: podman.Image, root: Path, server: Server) -> None:
    uid, gid = image.uid_gid(root)
    volume = root / DATA_VOLUME.lstrip("/")
    files = [volume, *volume.rglob("*")]
    assert any(path.name == "tidings.sqlite3" for path in files), "the store lives on the volume"
    assert {(path.stat().st_uid, path.stat().st_gid) for path in files} == {(uid, gid)}


def test_sigterm_stops_it_gracefully_with_exit_status_0(image: podman.Image, root: Path, tmp_path: Path) -> None:
    # Its own process on its own store folder, so the order of the tests does not matter.
    with serving(image, root, tmp_path / "tidings.log", env={"TIDINGS_DATA_DIR": f"{DATA_VOLUME}/sigterm"}) as running:
        assert http(running, "GET", "/readyz")[0] == 200
        running.process.send_signal(signal.SIGTERM)
        assert running.process.wait(timeout=DEADLINE_SECONDS) == 0, running.log.read_text()


def test_the_derived_image_adds_the_ntfy_plugin(image: podman.Image) -> None:
    derived = podman.build(ROOT / "examples/tidings-ntfy", DERIVED_TAG, build_args={"TIDINGS": image.ref})
    assert derived.user == image.user and derived.entrypoint == image.entrypoint
    with podman.mounted(derived) as derived_root:
        listed = podman.run(derived, derived_root, [*derived.entrypoint, "plugins"])
        assert (derived_root / "src").exists() is False
    assert listed.returncode == 0, listed.stderr
    assert "adds channel 'ntfy' (recipient: ntfy_topic)" in listed.stdout
    assert "Failed to load" not in listed.stdout


class serving:  # noqa: N801 - a context manager used as `with serving(...)`
    """Start ``tidings serve`` from the image on a free port; stop it (SIGKILL if it lingers) on exit."""

    def __init__(self, image: podman.Image, root: Path, log: Path, *, env: dict[str, str] | None = None) -> None:
        self._image, self._root, self._log, self._env = image, root, log, env or {}
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        port = free_port()
        with self._log.open("wb") as log:
            self._process = podman.command(
                self._image, self._root, [*self._image.entrypoint, *self._image.cmd],
                env={"TIDINGS_PORT": str(port), **self._env}, stdout=log, stderr=subprocess.STDOUT,
            )
        server = Server(self._process, f"http://127.0.0.1:{port}", self._log)
        poll(lambda: http(server, "GET", "/readyz")[0] == 200 or None, server)
        return server

    def __exit__(self, *_exc: object) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=DEADLINE_SECONDS)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()


def http(server: Server, method: str, path: str, *, headers: dict[str, str] | None = None, data: bytes | None = None) -> tuple[int, Any]:
    """One request to the server; (status, parsed JSON body). A refused connection is status 0."""
    request = urllib.request.Request(server.base_url + path, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")
    except (ConnectionError, urllib.error.URLError):
        return 0, None


def poll(ready: Callable[[], T | None], server: Server) -> T:
    """Ask until ``ready()`` gives a value; fail with the server's log if it never does, or if the server exits."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"tidings exited with {server.process.returncode}:\n{server.log.read_text()}")
        value = ready()
        if value is not None:
            return value
        time.sleep(0.1)
    pytest.fail(f"not ready within {DEADLINE_SECONDS}s:\n{server.log.read_text()}")


def port_of(server: Server) -> str:
    return server.base_url.rsplit(":", 1)[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
