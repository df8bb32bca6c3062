"""Closed-loop HTTP load: ``wrk`` with a Lua script when installed, else an aiohttp client.

Both run a fixed number of connections for a fixed time against one URL on 127.0.0.1, count
responses by status and report latency percentiles. On a 2-core machine a Python load
generator competes with the server for CPU and usually saturates first, so wrk is preferred.
``run_wrk(..., responses=N)`` stops once N responses have come back instead (a fixed number of
sends; the requests still in flight then are sent but not counted). Every request posts the same
body: without an idempotency key, each one is a new notification. With ``numbered=True`` every
:data:`NUMBER` in the body is replaced by the request's number (1, 2, …), for bodies that must
differ, such as business events, whose ``event_id`` is their identity.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

HEADERS = {"Content-Type": "application/json", "X-API-Key": "tdk_demo_sandbox_key_for_local_use"}
README_SEND = {  # the README's send: one notification, two deliveries (email and sms)
    "recipient": {"email": "ada@example.com", "phone": "+14155550100"},
    "notification": {"channels": ["email", "sms"], "template_id": "order_shipped", "data": {"order_id": "1001"}},
}
NUMBER = "@N@"  # in a numbered load's body: the request's number
SEND_BODY = {  # one sms delivery with the otp template (the policy-reload step rewrites that template)
    "recipient": {"phone": "+14155550100"},
    "notification": {"channels": ["sms"], "template_id": "otp", "data": {"code": "123456", "product": "Acme"}},
}


@dataclass
class LoadResult:
    tool: str
    duration: float
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0  # connect/read/write/timeout errors
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    max_ms: float = float("nan")
    server_cpu: float = 0.0  # CPU seconds the server process used during the run, if measured

    def count(self, status: int) -> int:
        return self.statuses.get(status, 0)

    def rate(self, status: int = 202) -> float:
        return self.count(status) / self.duration if self.duration > 0 else 0.0

    def describe(self) -> str:
        codes = ", ".join(f"{code}: {n}" for code, n in sorted(self.statuses.items()))
        return f"{self.tool}: {self.duration:.1f}s, statuses {{{codes}}}, socket errors {self.errors}"


def wrk_path() -> str | None:
    return shutil.which("wrk")


_LUA = r"""
wrk.method = "POST"
wrk.body = %(body)s
%(headers)s
%(request)s
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {} end
local limit, seen = %(limit)d, 0
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  seen = seen + 1
  if limit > 0 and seen == limit then
    wrk.thread:stop()
    local marker = io.open(%(marker)s, "w")  -- tells run_wrk to interrupt wrk, which would sleep out -d
    marker:close()
  end
end
function done(summary, latency, requests)
  local merged = {}
  for _, t in ipairs(threads) do
    for code, n in pairs(t:get("statuses")) do merged[code] = (merged[code] or 0) + n end
  end
  local parts = {}
  for code, n in pairs(merged) do table.insert(parts, string.format('"%%d": %%d', code, n)) end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"duration_us": %%d, "p50_us": %%d, "p99_us": %%d, "max_us": %%d, "errors": %%d, "statuses": {%%s}}\n',
    summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    e.connect + e.read + e.write + e.timeout, table.concat(parts, ", ")))
end
"""


# Each request's body with NUMBER replaced by a counter (one wrk thread: the numbers are unique).
_NUMBERED = r"""
local sent = 0
function request()
  sent = sent + 1
  local body = string.gsub(wrk.body, %(number)s, tostring(sent))
  return wrk.format(nil, nil, nil, body)
end
"""


def _lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string literal is a valid Lua string literal for ASCII text


def run_wrk(
    url: str, body: dict, connections: int, seconds: float, threads: int = 1, *,
    headers: Mapping[str, str] = HEADERS, responses: int = 0, numbered: bool = False,
) -> LoadResult:
    """``responses``: stop after that many (one wrk thread only); ``seconds`` is then only a limit.
    ``numbered``: :data:`NUMBER` in the body becomes each request's number (one wrk thread only)."""
    assert urlsplit(url).hostname == "127.0.0.1", url
    assert responses == 0 or threads == 1, "a response limit is counted per wrk thread"
    assert not numbered or threads == 1, "request numbers are counted per wrk thread"
    lines = "\n".join(f"wrk.headers[{_lua_string(k)}] = {_lua_string(v)}" for k, v in headers.items())
    with tempfile.TemporaryDirectory(prefix="tidings-perf-wrk-") as tmp:
        path, marker = Path(tmp) / "post.lua", Path(tmp) / "limit-reached"
        body_text = _lua_string(json.dumps(body, separators=(",", ":")))
        request = _NUMBERED % {"number": _lua_string(NUMBER)} if numbered else ""
        path.write_text(_LUA % {"body": body_text, "headers": lines, "request": request, "limit": responses,
                                "marker": _lua_string(str(marker))})
        cmd = [
            wrk_path() or "wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
            "--timeout", "5s", "-s", str(path), url,
        ]
        stdout, stderr, code = _run_until(cmd, marker, seconds + 60)
    line = next((ln for ln in stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if code != 0 or line is None:
        raise RuntimeError(f"wrk failed ({code}):\n{stdout}\n{stderr}")
    data = json.loads(line[len("WRKJSON "):])
    return LoadResult(
        tool=f"wrk -t{threads} -c{connections}",
        duration=data["duration_us"] / 1e6,
        statuses={int(k): v for k, v in data["statuses"].items()},
        errors=data["errors"],
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
    )


def _run_until(cmd: list[str], marker: Path, timeout: float) -> tuple[str, str, int]:
    """Run wrk to its end, or interrupt it (SIGINT: it still reports) once ``marker`` exists."""
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        deadline = time.monotonic() + timeout
        while proc.poll() is None and not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
        return stdout, stderr, proc.returncode


async def _aiohttp_load(url: str, body: dict, connections: int, seconds: float, headers: Mapping[str, str]) -> LoadResult:
    import aiohttp
    import orjson

    payload = orjson.dumps(body)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0
    timeout = aiohttp.ClientTimeout(total=5)
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=dict(headers)) as session:
        start = time.perf_counter()
        deadline = start + seconds

        async def worker() -> None:
            nonlocal errors
            while (t0 := time.perf_counter()) < deadline:
                try:
                    async with session.post(url, data=payload) as resp:
                        await resp.read()
                        statuses[resp.status] = statuses.get(resp.status, 0) + 1
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - t0)

        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - start
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000 if latencies else float("nan")

    return LoadResult(
        tool=f"aiohttp client x{connections}", duration=elapsed, statuses=statuses, errors=errors,
        p50_ms=pct(50), p99_ms=pct(99), max_ms=latencies[-1] * 1000 if latencies else float("nan"),
    )


def run_aiohttp(url: str, body: dict, connections: int, seconds: float, headers: Mapping[str, str] = HEADERS) -> LoadResult:
    assert urlsplit(url).hostname == "127.0.0.1", url
    try:
        import uvloop

        return uvloop.run(_aiohttp_load(url, body, connections, seconds, headers))
    except ImportError:
        return asyncio.run(_aiohttp_load(url, body, connections, seconds, headers))


def run_load(
    url: str, body: dict, connections: int, seconds: float, tool: str = "auto", headers: Mapping[str, str] = HEADERS
) -> LoadResult:
    """``tool`` is ``auto`` (wrk if installed), ``wrk`` or ``aiohttp``."""
    if tool == "wrk" or (tool == "auto" and wrk_path()):
        return run_wrk(url, body, connections, seconds, headers=headers)
    return run_aiohttp(url, body, connections, seconds, headers)
