"""Retention under a steady stream of sends: the database file holds its size once purges keep pace.

The demo tenant of a ``tidings serve`` is given a short ``retention`` (``RETENTION``) in its
policy copy; nothing else is changed for the benchmark (the purge rounds come every tenth of
the shortest retention, 2 s here, as in production). The README's two-channel send (email and
SMS through the sandbox) is posted at a steady ``RATE`` per second, open loop, for ``SECONDS``,
and the database — main file plus WAL — is sampled every ``SAMPLE_EVERY`` seconds, with its
notification count and free pages.

Until the first notifications are past the retention the file grows; after that, each round
purges what the stream added a retention ago and gives the pages back, so the size should hold.
The verdict compares the size at the end with the size at the middle of the run (well past the
retention): within ``TOLERANCE`` it holds steady.

``python -m tests.perf.retention [RETENTION]`` runs it alone and prints every sample (``0``: keep
everything, to see the growth the purge stops).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson

from tests.perf.servers import SEND_PATH, Server, _editing, query_rows, tidings_server

RETENTION = "20s"
SECONDS = 60.0
RATE = 200.0  # sends a second, each two deliveries: what a 2-core machine keeps up with beside the load generator
SAMPLE_EVERY = 3.0
TOLERANCE = 0.15
IN_FLIGHT = 64  # requests outstanding at most; past it a send is counted late, not queued up
README_SEND = {
    "recipient": {"email": "ada@example.com", "phone": "+14155550100"},
    "notification": {"channels": ["email", "sms"], "template_id": "order_shipped", "data": {"order_id": "1001"}},
}
HEADERS = {"Content-Type": "application/json", "X-API-Key": "tdk_demo_sandbox_key_for_local_use"}


@dataclass(frozen=True)
class Sample:
    at: float  # seconds since the stream began
    database_bytes: int
    wal_bytes: int
    notifications: int
    free_pages: int

    @property
    def total_mb(self) -> float:
        return (self.database_bytes + self.wal_bytes) / 1e6


@dataclass
class RetentionRun:
    retention: str
    rate: float
    seconds: float
    accepted: int = 0
    failed: int = 0
    late: int = 0  # sends skipped because IN_FLIGHT requests were still outstanding
    samples: list[Sample] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)  # seconds, of the accepted sends

    def latency_ms(self, percentile: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(percentile / 100 * len(ordered)))] * 1000 if ordered else math.nan

    def at(self, moment: float) -> Sample:
        """The sample nearest to ``moment`` seconds into the run."""
        return min(self.samples, key=lambda sample: abs(sample.at - moment))

    @property
    def middle(self) -> Sample:
        return self.at(self.seconds / 2)

    @property
    def end(self) -> Sample:
        return self.samples[-1]

    @property
    def change(self) -> float:
        """Size at the end against size at the middle, as a fraction (+0.05: 5% larger)."""
        middle = self.middle.database_bytes + self.middle.wal_bytes
        return (self.end.database_bytes + self.end.wal_bytes) / middle - 1 if middle else math.nan

    @property
    def second_half(self) -> tuple[float, float]:
        """The smallest and largest size sampled from the middle on, in MB."""
        sizes = [sample.total_mb for sample in self.samples if sample.at >= self.middle.at]
        return min(sizes), max(sizes)

    @property
    def holds(self) -> bool:
        return self.accepted > 0 and self.failed == 0 and abs(self.change) <= TOLERANCE

    def describe(self) -> str:
        return (
            f"retention {self.retention}, {self.rate:g} two-channel sends/s for {self.seconds:g}s: {self.accepted:,} accepted, "
            f"{self.failed} failed, {self.late} late, p50/p99/max {self.latency_ms(50):.1f}/{self.latency_ms(99):.1f}/"
            f"{self.latency_ms(100):.1f} ms; database + WAL {self.middle.total_mb:.1f} MB at {self.middle.at:.0f}s "
            f"({self.middle.notifications:,} notifications), {self.end.total_mb:.1f} MB at {self.end.at:.0f}s "
            f"({self.end.notifications:,}): {self.change:+.1%}, {'holds steady' if self.holds else 'DOES NOT hold steady'} "
            f"(from the middle on: {self.second_half[0]:.1f}-{self.second_half[1]:.1f} MB)"
        )

    def table(self) -> str:
        lines = ["    at   database      WAL   total  notifications  free pages"]
        lines += [
            f"  {s.at:4.0f}s {s.database_bytes / 1e6:8.1f}M {s.wal_bytes / 1e6:7.1f}M {s.total_mb:6.1f}M {s.notifications:14,} {s.free_pages:11,}"
            for s in self.samples
        ]
        return "\n".join(lines)


def retention_of(retention: str) -> Callable[[Path], None]:
    """A policy edit giving the demo tenant ``retention``."""

    def edit(policy_dir: Path) -> None:
        with _editing(policy_dir / "tenants.yaml") as doc:
            doc["tenants"]["demo"]["retention"] = 0 if retention == "0" else retention

    return edit


def measure_retention(seconds: float = SECONDS, rate: float = RATE, retention: str = RETENTION) -> RetentionRun:
    """The stream against a fresh server whose demo tenant keeps ``retention`` (``"0"``: for ever, to compare)."""
    run = RetentionRun(retention, rate, seconds)
    with tidings_server({"TIDINGS_POLICY_RELOAD": "false"}, edit=retention_of(retention)) as server:
        asyncio.run(_stream(server, run))
    return run


async def _stream(server: Server, run: RetentionRun) -> None:
    body, url = orjson.dumps(README_SEND), server.base_url + SEND_PATH
    connector = aiohttp.TCPConnector(limit=IN_FLIGHT)
    async with aiohttp.ClientSession(connector=connector, headers=HEADERS, timeout=aiohttp.ClientTimeout(total=30)) as session:
        started = time.perf_counter()
        sampler = asyncio.create_task(_sample(server, run, started))
        outstanding: set[asyncio.Task[None]] = set()
        total = int(run.seconds * run.rate)
        for number in range(total):
            delay = started + number / run.rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(outstanding) >= IN_FLIGHT:
                run.late += 1
                continue
            task = asyncio.create_task(_send(session, url, body, run))
            outstanding.add(task)
            task.add_done_callback(outstanding.discard)
        await asyncio.gather(*outstanding)
        await asyncio.sleep(max(0.0, started + run.seconds - time.perf_counter()))
        sampler.cancel()
        if time.perf_counter() - started - run.samples[-1].at > 1.0:
            run.samples.append(await asyncio.to_thread(_measure, server, time.perf_counter() - started))


async def _send(session: aiohttp.ClientSession, url: str, body: bytes, run: RetentionRun) -> None:
    sent = time.perf_counter()
    try:
        async with session.post(url, data=body) as response:
            await response.read()
            if response.status == 202:
                run.accepted += 1
                run.latencies.append(time.perf_counter() - sent)
            else:
                run.failed += 1
    except (aiohttp.ClientError, asyncio.TimeoutError):
        run.failed += 1


async def _sample(server: Server, run: RetentionRun, started: float) -> None:
    while True:
        run.samples.append(await asyncio.to_thread(_measure, server, time.perf_counter() - started))
        await asyncio.sleep(SAMPLE_EVERY - (time.perf_counter() - started) % SAMPLE_EVERY)


def _measure(server: Server, at: float) -> Sample:
    wal = server.database.with_name(server.database.name + "-wal")
    (notifications, free), = query_rows(
        server.database, "SELECT (SELECT count(*) FROM notifications), (SELECT freelist_count FROM pragma_freelist_count())"
    )
    return Sample(at, _size(server.database), _size(wal), notifications, free)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


if __name__ == "__main__":
    import sys

    result = measure_retention(retention=sys.argv[1] if len(sys.argv) > 1 else RETENTION)
    print(result.table())
    print(result.describe())
