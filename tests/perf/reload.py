"""Policy hot reload under send load: rewrite a policy file while sends keep coming.

While the load generator posts sends to a live ``tidings serve``, ``templates.yaml`` in its
policy directory is rewritten about every ``WRITE_EVERY`` seconds, each time with a new text for
the ``otp`` SMS body (the template the load sends), so every write is a new policy version.
Every ``BREAK_EVERY``-th write is a broken one instead (invalid YAML, or YAML with a template
syntax error), fixed by the next. After each write ``/readyz`` is polled until the change shows:
the new version for a good write, the error (with the old version still serving) for a broken
one. Sends must keep being accepted throughout.
"""

from __future__ import annotations

import statistics
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from tests.perf.load import SEND_BODY, LoadResult, run_load
from tests.perf.servers import Server

SEND_PATH = "/api/v1/notifications/send"
WRITE_EVERY = 0.1
BREAK_EVERY = 10
VISIBLE_WITHIN = 5.0  # give up on one write after this long (the target is 1 s)
OTP_SMS = "Your {{ product }} code is {{ code }}. It expires in 10 minutes."


@dataclass
class ReloadResult:
    load: LoadResult
    writes: int = 0
    reloads: list[float] = field(default_factory=list)  # write → new version in /readyz, seconds
    rejections: list[float] = field(default_factory=list)  # broken write → error in /readyz, seconds

    @property
    def requests(self) -> int:
        return sum(self.load.statuses.values()) + self.load.errors

    @property
    def failed(self) -> int:
        return sum(n for status, n in self.load.statuses.items() if status != 202) + self.load.errors


def policy_status(server: Server) -> dict[str, Any]:
    with urllib.request.urlopen(server.base_url + "/readyz", timeout=5.0) as response:
        policy: dict[str, Any] = orjson.loads(response.read())["policy"]
        return policy


def wait_until(server: Server, predicate: Callable[[dict[str, Any]], bool]) -> float | None:
    """Seconds until ``/readyz``'s policy block satisfies ``predicate``, or None if it never does."""
    started = time.perf_counter()
    while (elapsed := time.perf_counter() - started) < VISIBLE_WITHIN:
        if predicate(policy_status(server)):
            return elapsed
        time.sleep(0.002)
    return None


def broken_text(good: str, revision: int) -> str:
    """Alternately invalid YAML and valid YAML whose template does not compile."""
    if revision % 2:
        return good.replace(OTP_SMS, "Your {{ product }} code is {{ code }. Broken.", 1)
    return good.replace(f'"{OTP_SMS}"', '"Unclosed quote', 1)


def measure_reloads(server: Server, seconds: float, connections: int, tool: str) -> ReloadResult:
    assert server.policy_dir is not None
    templates = server.policy_dir / "templates.yaml"
    original = templates.read_text()
    assert OTP_SMS in original, "templates.yaml no longer has the otp SMS text this benchmark edits"
    result = ReloadResult(load=LoadResult(tool="", duration=0.0))
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(run_load, server.base_url + SEND_PATH, SEND_BODY, connections, seconds, tool)
        time.sleep(0.5)  # let the load reach full speed before the first write
        while not running.done():
            _write_once(server, templates, original, result)
        result.load = running.result()
    return result


def _write_once(server: Server, templates: Path, original: str, result: ReloadResult) -> None:
    result.writes += 1
    revision = result.writes
    serving = policy_status(server)["version"]
    written = time.perf_counter()
    if revision % BREAK_EVERY == 0:
        templates.write_text(broken_text(original, revision // BREAK_EVERY))
        took = wait_until(server, lambda p: p["last_error"] is not None and p["version"] == serving)
        seen = result.rejections
    else:
        templates.write_text(original.replace(OTP_SMS, f"{OTP_SMS} (rev {revision})", 1))
        took = wait_until(server, lambda p: p["version"] != serving and p["last_error"] is None)
        seen = result.reloads
    if took is not None:  # else never seen: the table reports fewer seen than written
        seen.append(took)
    time.sleep(max(0.0, WRITE_EVERY - (time.perf_counter() - written)))


def describe(latencies: list[float]) -> str:
    if not latencies:
        return "n/a"
    return f"{statistics.median(latencies) * 1000:.0f} / {max(latencies) * 1000:.0f} ms"
