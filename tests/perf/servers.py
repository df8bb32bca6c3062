"""Start, watch and stop the processes under test: ``tidings serve``, the bare baseline, the receiver.

Every server binds 127.0.0.1 on a free port, gets its own temporary directory, and is
stopped (SIGTERM, then SIGKILL) and cleaned up when its context manager exits. A tidings
server's SQLite file is read with :func:`query_rows` (read-only, beside the running server).
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import uvloop
from aiohttp import web
from ruamel.yaml import YAML

from gateway.policy.keys import create_key
from tests.perf.load import HEADERS

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
READY_TIMEOUT = 30.0
SEND_PATH = "/api/v1/notifications/send"
BULK_PATH = "/api/v1/notifications/bulk"
BULK_ROWS = 10_000  # the server's default TIDINGS_BULK_MAX_ROWS


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    started_at: float  # time.perf_counter() just before the process was spawned
    ready_after: float | None = None  # seconds from spawn to the first /readyz 200
    data_dir: Path | None = None
    log_path: Path | None = None
    policy_dir: Path | None = None  # tidings only: the policy copy it serves, free to edit
    live_key: str | None = None  # tidings only, if asked for: a live API key of the demo tenant
    rowcount_file: Path | None = None  # tidings only, if asked for: rows changed per table (tests.perf.rowcount)

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def database(self) -> Path:
        assert self.data_dir is not None
        return self.data_dir / "tidings.sqlite3"

    def rss_mb(self) -> float:
        return _vm_rss_kb(self.proc.pid) / 1024.0

    def cpu_seconds(self) -> float:
        """User + system CPU time the process has used so far (all threads)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_tail(self, lines: int = 20) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def query_rows(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` from a server's SQLite file, opened read-only so the server stays the only writer."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def count_rows(path: Path, sql: str) -> int:
    return int(query_rows(path, sql)[0][0])


def post_json(url: str, body: object, timeout: float = 60.0, headers: Mapping[str, str] = HEADERS) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=orjson.dumps(body), headers=dict(headers), method="POST")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.status, orjson.loads(resp.read())


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _vm_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _wait_ready(server: Server, timeout: float = READY_TIMEOUT) -> float:
    deadline = time.perf_counter() + timeout
    url = server.base_url + "/readyz"
    while time.perf_counter() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.proc.returncode}:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(url, timeout=1.0) as resp:
                if resp.status == 200:
                    return time.perf_counter() - server.started_at
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.005)
    raise RuntimeError(f"{server.name} not ready after {timeout:.0f}s:\n{server.log_tail()}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


@contextmanager
def _editing(path: Path) -> Iterator[Any]:
    """The YAML document at ``path``, written back when the block ends (comments and layout kept)."""
    yaml = YAML()  # round-trip
    doc = yaml.load(path.read_text())
    yield doc
    with path.open("w") as out:
        yaml.dump(doc, out)


def make_policy_dir(target: Path) -> Path:
    """A copy of ``policies/`` that measures the engine, not the demo's limits.

    The sandbox's delivery delay is set to 0 and channel ``throughput`` caps are dropped (the
    shipped policy holds sms to 50/s, which would make the sandbox step time out), and the demo
    tenant's event webhook endpoint goes (its host does not resolve here, and retrying it would
    take CPU from what is measured; step 10 points it at a receiver instead).
    """
    shutil.copytree(ROOT / "policies", target)
    with _editing(target / "providers.yaml") as doc:
        doc["providers"]["sandbox"].setdefault("config", {})["delivery_delay_seconds"] = 0
        for channel in doc.get("channels", {}).values():
            channel.pop("throughput", None)
    with _editing(target / "tenants.yaml") as doc:
        doc.pop("webhooks", None)
    return target


def add_live_key(policy_dir: Path, tenant: str = "demo") -> str:
    """Give ``tenant`` a new live API key in a policy copy; returns the key in clear.

    The demo key is a test key, and test keys always send to the sandbox: a benchmark of real
    provider calls needs a live one.
    """
    new = create_key()
    with _editing(policy_dir / "tenants.yaml") as doc:
        entry = {"prefix": new.prefix, "sha256": new.sha256, "mode": "live", "name": "benchmark live key"}
        doc["tenants"][tenant]["api_keys"].append(entry)
    return new.key


@contextmanager
def _running(name: str, argv: list[str], tmp: Path, *, env: dict[str, str] | None = None, data_dir: Path | None = None) -> Iterator[Server]:
    """Start ``argv`` logging into ``tmp``, yield once /readyz is 200, stop it and remove ``tmp``."""
    try:
        log_path = tmp / f"{name}.log"
        port = int(argv[-1]) if env is None else int(env["TIDINGS_PORT"])
        with open(log_path, "wb") as log:
            started = time.perf_counter()
            proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT if env is None else tmp)
        server = Server(name, proc, port, started, data_dir=data_dir, log_path=log_path)
        try:
            server.ready_after = _wait_ready(server)
            yield server
        finally:
            _stop(proc)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def tidings_server(
    extra_env: dict[str, str] | None = None, *, live_key: bool = False, instance_rates: dict[str, str] | None = None,
    events_url: str | None = None, edit: Callable[[Path], None] | None = None, counting: bool = False,
) -> Iterator[Server]:
    """A live ``tidings serve`` with a fresh data dir and policy copy; yields once /readyz is 200.

    ``live_key``: add a live key for the demo tenant to the copy first (``server.live_key``).
    ``instance_rates``: provider instance → ``rate`` (e.g. ``500/s``) set in the copy.
    ``events_url``: the demo tenant's event webhook endpoint, subscribed to every event type.
    ``edit``: any other change to the policy copy, given its directory.
    ``counting``: run it under tests.perf.rowcount, which keeps the rows changed per table in ``server.rowcount_file``.
    """
    tmp = Path(tempfile.mkdtemp(prefix="tidings-perf-"))
    policy_dir = make_policy_dir(tmp / "policies")
    key = add_live_key(policy_dir) if live_key else None
    with _editing(policy_dir / "providers.yaml") as doc:  # the bench's receivers listen on loopback, which the SSRF guard refuses
        doc["providers"]["demo-webhook"]["config"]["allow_private"] = True
    if instance_rates:
        with _editing(policy_dir / "providers.yaml") as doc:
            for instance, rate in instance_rates.items():
                doc["providers"][instance]["rate"] = rate
    if events_url:
        secret = f"whsec_{base64.b64encode(os.urandom(24)).decode()}"
        with _editing(policy_dir / "tenants.yaml") as doc:
            doc["webhooks"] = {"demo": {"bench": {"url": events_url, "events": ["*"], "secret": secret, "allow_private": True}}}
    if edit is not None:
        edit(policy_dir)
    data_dir = tmp / "data"
    env = dict(os.environ)
    env.update(
        TIDINGS_HOST=HOST,
        TIDINGS_PORT=str(free_port()),
        TIDINGS_DATA_DIR=str(data_dir),
        TIDINGS_POLICY_DIR=str(policy_dir),
        TIDINGS_LOG_LEVEL="WARNING",
    )
    env.update(extra_env or {})
    argv = [str(Path(sys.executable).parent / "tidings"), "serve"]
    rowcount_file = tmp / "rowcount.json" if counting else None
    if rowcount_file is not None:
        argv = [sys.executable, "-m", "tests.perf.rowcount", "serve"]
        env.update(BENCH_ROWCOUNT_FILE=str(rowcount_file), PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])))
    with _running("tidings", argv, tmp, env=env, data_dir=data_dir) as server:
        server.policy_dir, server.live_key, server.rowcount_file = policy_dir, key, rowcount_file
        yield server


@contextmanager
def _python_server(name: str, module: str) -> Iterator[Server]:
    """``python -m module PORT`` in its own process, for helpers that must not share our GIL."""
    tmp = Path(tempfile.mkdtemp(prefix=f"tidings-perf-{name}-"))
    argv = [sys.executable, "-m", module, str(free_port())]
    with _running(name, argv, tmp) as server:
        yield server


@contextmanager
def bare_server() -> Iterator[Server]:
    """The baseline aiohttp handler (tests.perf.bare_server)."""
    with _python_server("bare", "tests.perf.bare_server") as server:
        yield server


@contextmanager
def graph_server() -> Iterator[Server]:
    """The stand-in Graph API messages endpoint (tests.perf.graph)."""
    with _python_server("graph", "tests.perf.graph") as server:
        yield server


@contextmanager
def receiver_server() -> Iterator[Server]:
    """The webhook receiver that records arrivals (tests.perf.receiver)."""
    with _python_server("receiver", "tests.perf.receiver") as server:
        yield server


def serve_standalone(name: str, routes: list[web.RouteDef]) -> None:
    """Run a tiny benchmark peer (``python -m tests.perf.<name> PORT``) on uvloop, with ``/readyz``.

    It prints ``<name> serving`` once listening, which :func:`_running` does not need but a
    person reading the log does.
    """
    port = int(sys.argv[1])
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    app = web.Application()
    app.add_routes([*routes, web.get("/readyz", _ready)])
    web.run_app(app, host=HOST, port=port, access_log=None, print=lambda _m: print(f"{name} serving", flush=True))


async def _ready(_request: web.Request) -> web.Response:
    return web.Response(body=b'{"ready":true}', content_type="application/json")
