"""``make bench``: measure Tidings against its performance targets and print one table.

1. Accepted sends/s and p50/p99 at 64 concurrent clients for ~10 s (durable 202s, checked in SQLite).
2. The same load against a bare aiohttp handler; ratio durable/bare.
3. Sandbox deliveries/s end to end (bulk-accept N, wait until all are ``delivered``).
4. Time to accept one 10,000-row bulk request.
5. Idle RSS of the server after start.
6. Time from process start to ``/readyz`` 200.
7. Policy hot reload under the send load: a template file rewritten every 100 ms (some writes
   broken), sends that failed meanwhile, and time from each write to ``/readyz`` showing it.
8. Deliveries/s through a real HTTP provider (webhook plugin → loopback receiver) at dispatch
   concurrency 50 and 200, and the engine's delay from due to provider call on a steady trickle
   of single sends (see tests.perf.dispatch).
9. A 10,000-row bulk through a provider instance limited to 500/s: the pace the receiver saw.
10. Signed event webhooks delivered per second to a loopback receiver (see tests.perf.events).

Options: ``--seconds``, ``--connections``, ``--deliveries``, ``--load-tool {auto,wrk,aiohttp}``,
``--profile FILE`` (py-spy collapsed stacks of the server during the durable load).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.perf.dispatch import (
    DELIVERY_TIMEOUT,
    THROTTLE_RATE,
    THROTTLE_ROWS,
    TRICKLE_RATE,
    TRICKLE_SECONDS,
    DispatchRun,
    accept_in_bulk,
    bulk_sizes,
    measure_dispatch,
    measure_throttled_drain,
    wait_for_status,
)
from tests.perf.events import NOTIFICATIONS, measure_events
from tests.perf.inbound import MESSAGES as INBOUND_MESSAGES
from tests.perf.inbound import measure_inbound
from tests.perf.load import SEND_BODY, LoadResult, run_load, wrk_path
from tests.perf.reload import WRITE_EVERY, ReloadResult, describe, measure_reloads
from tests.perf.servers import BULK_ROWS, SEND_PATH, Server, bare_server, count_rows, receiver_server, tidings_server

WARMUP_SECONDS = 2.0


@dataclass
class Row:
    metric: str
    measured: str
    target: str = ""
    ok: bool | None = None  # None: informational

    @property
    def verdict(self) -> str:
        return "" if self.ok is None else ("PASS" if self.ok else "MISS")


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, {platform.system()} {platform.release()}"


def bulk_body(offset: int, rows: int) -> dict:
    # Distinct, valid E.164 numbers; none is one of the sandbox's failing addresses.
    return {
        "channels": ["sms"],
        "template_id": "otp",
        "data": {"product": "Acme"},
        "recipients": [{"phone": f"+1415{offset + i:07d}", "data": {"code": str(i % 1_000_000)}} for i in range(rows)],
    }


def start_profiler(server: Server, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        print(f"  (py-spy not found; no profile written to {out})", flush=True)
        return None
    cmd = [spy, "record", "--pid", str(server.proc.pid), "--duration", str(max(1, round(seconds))),
           "--rate", "100", "--threads", "--format", "raw", "--output", str(out), "--nonblocking"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def measure_load(
    server: Server, args: argparse.Namespace, profile: Path | None = None, before_run: object = None
) -> LoadResult:
    url = server.base_url + SEND_PATH
    run_load(url, SEND_BODY, args.connections, WARMUP_SECONDS, args.load_tool)
    if callable(before_run):
        before_run()
    spy = start_profiler(server, args.seconds, profile) if profile else None
    try:
        cpu0 = server.cpu_seconds()
        result = run_load(url, SEND_BODY, args.connections, args.seconds, args.load_tool)
        result.server_cpu = server.cpu_seconds() - cpu0
    finally:
        if spy is not None:
            try:
                spy.wait(timeout=args.seconds + 30)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait()
    return result


def bench(args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    n = args.connections

    print(f"[1/6] tidings serve: start-up, idle RSS, {n} clients x {args.seconds:.0f}s of sends ...", flush=True)
    with tidings_server() as server:
        ready = server.ready_after or math.nan
        time.sleep(1.0)  # let start-up work (dispatcher's first claims, policy watch) settle
        idle_rss = server.rss_mb()
        sql = "SELECT count(*) FROM notifications"
        baseline: list[int] = []
        durable = measure_load(server, args, args.profile,
                               before_run=lambda: baseline.append(count_rows(server.database, sql)))
        loaded_rss = server.rss_mb()
        stored = count_rows(server.database, sql) - baseline[0]  # rows added during the measured run
    accepted_total = durable.count(202)
    print(f"      {durable.describe()}; notifications stored during the run: {stored}", flush=True)

    print(f"[2/6] bare aiohttp handler: {n} clients x {args.seconds:.0f}s ...", flush=True)
    with bare_server() as server:
        bare = measure_load(server, args)
    print(f"      {bare.describe()}", flush=True)

    print(f"[3/6] bulk accept {args.deliveries} rows in requests of {BULK_ROWS}, wait for 'delivered' ...", flush=True)
    with tidings_server() as server:
        bodies = [bulk_body(i * BULK_ROWS, rows) for i, rows in enumerate(bulk_sizes(args.deliveries))]
        t0 = time.perf_counter()
        accepted, bulk_times = accept_in_bulk(server, bodies)
        accepted_at = time.perf_counter() - t0
        delivered = wait_for_status(server, "delivered", accepted, t0 + DELIVERY_TIMEOUT)
        all_done = time.perf_counter() - t0
        bulk_rss = server.rss_mb()
    print(f"      accepted {accepted} in {accepted_at:.2f}s (bulk requests: "
          f"{', '.join(f'{t:.2f}s' for t in bulk_times)}); delivered {delivered} after {all_done:.2f}s", flush=True)

    print(f"[4/6] policy reload: {n} clients x {args.seconds:.0f}s of sends, templates.yaml rewritten "
          f"every {WRITE_EVERY * 1000:.0f} ms ...", flush=True)
    with tidings_server() as server:
        reload = measure_reloads(server, args.seconds, n, args.load_tool)
    print(f"      {reload.load.describe()}; {reload.writes} writes", flush=True)

    print(f"[5/6] webhook deliveries to a loopback receiver: {args.deliveries} in bulk, then "
          f"{TRICKLE_RATE:.0f}/s single sends for {TRICKLE_SECONDS:.0f}s, at dispatch concurrency 50 and 200 ...", flush=True)
    dispatch = measure_dispatch(args.deliveries)
    for run in dispatch:
        print(f"      {run.describe()}", flush=True)
    print(f"[5b] {THROTTLE_ROWS:,}-row bulk through an instance limited to {THROTTLE_RATE:g}/s ...", flush=True)
    with receiver_server() as receiver:
        drain = measure_throttled_drain(receiver)
    print(f"      {drain.sent:,}/{drain.accepted:,} sent at {drain.rate:,.1f}/s; busiest second {drain.busiest_second}", flush=True)
    print(f"[5c] event webhooks: {NOTIFICATIONS:,} sandbox sends, every event to a loopback receiver ...", flush=True)
    with receiver_server() as receiver:
        events = measure_events(receiver)
    print(f"      {events.describe()}", flush=True)

    print(f"[5d] provider receipts: {INBOUND_MESSAGES:,} WhatsApp sends, then signed 'delivered' callbacks by wrk ...", flush=True)
    inbound = measure_inbound() if wrk_path() else None
    print(f"      {inbound.describe() if inbound else 'skipped: wrk is not installed (apt-get install wrk)'}", flush=True)

    print("[6/6] done; servers stopped, temp dirs removed.\n", flush=True)

    tool = durable.tool
    rows.append(Row("Load generator", tool))
    ok_durable = durable.count(202) > 0 and stored >= accepted_total and durable.errors == 0
    rows.append(Row(f"1. Durable sends/s ({n} clients, {durable.duration:.0f}s)", f"{durable.rate():,.0f}/s",
                    "all 202s stored", ok_durable))
    rows.append(Row("   durable latency p50 / p99", f"{durable.p50_ms:.1f} / {durable.p99_ms:.1f} ms", "p99 < 25 ms",
                    durable.p99_ms < 25.0))
    non202 = sum(v for k, v in durable.statuses.items() if k != 202)
    rows.append(Row("   durable non-202 answers / socket errors", f"{non202} / {durable.errors}", "0 / 0",
                    non202 == 0 and durable.errors == 0))
    rows.append(Row("   server CPU: cores busy / per accepted send", _cpu(durable)))
    rows.append(Row(f"2. Bare aiohttp 202s/s ({n} clients)", f"{bare.rate():,.0f}/s"))
    rows.append(Row("   bare latency p50 / p99", f"{bare.p50_ms:.1f} / {bare.p99_ms:.1f} ms"))
    rows.append(Row("   bare CPU: cores busy / per 202", _cpu(bare)))
    ratio = durable.rate() / bare.rate() if bare.rate() else 0.0
    rows.append(Row("   ratio durable / bare", f"{ratio:.2f}", ">= 0.80", ratio >= 0.8))
    e2e = delivered / all_done if all_done else 0.0
    rows.append(Row(f"3. Sandbox deliveries/s end to end ({accepted:,})", f"{e2e:,.0f}/s", ">= 3,000/s",
                    delivered >= accepted and e2e >= 3000))
    rows.append(Row("   all delivered after", f"{all_done:.2f} s" + ("" if delivered >= accepted else
                    f" (TIMED OUT: {delivered}/{accepted})")))
    rows.append(Row(f"4. Bulk accept, one {BULK_ROWS:,}-row request", f"{bulk_times[0]:.2f} s", "< 2 s",
                    bulk_times[0] < 2.0))
    rows.append(Row("5. Idle RSS after start", f"{idle_rss:.1f} MB", "< 80 MB", idle_rss < 80))
    rows.append(Row("   RSS after send load / after bulk run", f"{loaded_rss:.1f} / {bulk_rss:.1f} MB"))
    rows.append(Row("6. Process start to /readyz 200", f"{ready:.2f} s", "< 1 s", ready < 1.0))
    rows += _reload_rows(reload)
    rows += _dispatch_rows(dispatch)
    rows.append(Row(f"9. {THROTTLE_ROWS:,}-row bulk through a {THROTTLE_RATE:g}/s instance: drained at",
                    f"{drain.rate:,.1f}/s ({drain.sent:,} sent)", f"{THROTTLE_RATE:g}/s ±3%", drain.exact and drain.sent == drain.accepted))
    rows.append(Row("   most provider calls in any 1 s window", f"{drain.busiest_second}", f"<= {drain.ceiling:g} (rate+burst+3%)",
                    drain.busiest_second <= drain.ceiling))
    rows.append(Row(f"10. Signed event webhooks/s to a loopback receiver ({events.received:,})", f"{events.rate:,.0f}/s",
                    ">= 2,000/s", events.rate >= 2000 and events.received == events.expected))
    if inbound is None:
        rows.append(Row("11. Provider receipts acknowledged/s (signed WhatsApp callbacks)", "skipped: needs wrk", ">= 3,000/s"))
        return rows
    rows.append(Row("11. Provider receipts acknowledged/s (signed WhatsApp callbacks)", f"{inbound.ack_rate:,.0f}/s", ">= 3,000/s",
                    inbound.ack_rate >= 3000 and inbound.refused == 0))
    rows.append(Row(f"    reconciled to delivered ({inbound.delivered:,})", f"{inbound.reconcile_rate:,.0f}/s",
                    "keeps up with acks", inbound.reconcile_rate >= 0.9 * inbound.ack_rate))
    return rows


def _reload_rows(reload: ReloadResult) -> list[Row]:
    load = reload.load
    non202 = sum(n for status, n in load.statuses.items() if status != 202)
    seen = len(reload.reloads) + len(reload.rejections)
    return [
        Row(f"7. Policy reload under load ({reload.writes} writes)",
            f"{len(reload.reloads)} reloads, {len(reload.rejections)} refused", "every write seen",
            seen == reload.writes),
        Row("   sends meanwhile: requests (rate) / non-202 / socket errors",
            f"{reload.requests:,} ({load.rate():,.0f}/s) / {non202} / {load.errors}", "0 failed",
            reload.requests > 0 and reload.failed == 0),
        Row("   write to new version in /readyz p50 / max", describe(reload.reloads), "< 1 s", _within(reload.reloads, 1.0)),
        Row("   broken write to error in /readyz p50 / max", describe(reload.rejections), "< 1 s",
            _within(reload.rejections, 1.0)),
    ]


def _dispatch_rows(runs: list[DispatchRun]) -> list[Row]:
    rows = []
    for number, run in enumerate(runs):
        label = f"{'8.' if number == 0 else '  '} Webhook deliveries/s, dispatch concurrency {run.concurrency} ({run.accepted:,})"
        done = "" if run.sent >= run.accepted else f" (TIMED OUT: {run.sent}/{run.accepted})"
        rows += [
            Row(label, f"{run.rate:,.0f}/s{done}", ">= 3,000/s", run.sent >= run.accepted and run.rate >= 3000),
            Row("   provider calls/s first to last / connections opened", f"{run.call_rate:,.0f}/s / {run.connections}"),
            Row("   server CPU: cores busy / per delivery (accept included)",
                f"{run.server_cpu / run.elapsed:.2f} / {run.cpu_per_delivery_us:.0f} us"),
            Row(f"   engine delay due to provider call p50 / p99 ({TRICKLE_RATE:.0f}/s trickle, not the backlog)",
                f"{run.delay_ms(50):.1f} / {run.delay_ms(99):.1f} ms", "p99 < 50 ms", run.delay_ms(99) < 50.0),
        ]
    return rows


def _within(latencies: list[float], limit: float) -> bool:
    return bool(latencies) and max(latencies) < limit


def _cpu(result: LoadResult) -> str:
    accepted = result.count(202)
    if not accepted or result.duration <= 0:
        return "n/a"
    return f"{result.server_cpu / result.duration:.2f} / {result.server_cpu / accepted * 1e6:.0f} us"


def print_table(rows: list[Row]) -> None:
    headers = ("Measurement", "Measured", "Target", "Result")
    table = [(r.metric, r.measured, r.target, r.verdict) for r in rows]
    widths = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(headers)]
    line = "  ".join("-" * w for w in widths)
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    print(line)
    for cells in table:
        print("  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip())
    print(line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.perf.run", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each load run (default 10)")
    parser.add_argument("--connections", type=int, default=64, help="concurrent clients (default 64)")
    parser.add_argument("--deliveries", type=int, default=20_000, help="bulk-accepted deliveries to wait for")
    parser.add_argument("--load-tool", choices=["auto", "wrk", "aiohttp"], default="auto")
    parser.add_argument("--profile", type=Path, help="write py-spy raw stacks of the server's send load here")
    args = parser.parse_args(argv)
    args.seconds = min(max(args.seconds, 1.0), 120.0)
    args.deliveries = min(max(args.deliveries, 1), 200_000)

    using = "wrk" if args.load_tool == "wrk" or (args.load_tool == "auto" and wrk_path()) else "aiohttp client"
    print(f"Tidings benchmark on {machine()}")
    print(f"Load generator: {using}" + ("" if using == "wrk" else " (wrk not installed; Python client may be the bottleneck)"))
    print("All servers on 127.0.0.1, fresh temp data dirs, sandbox delivery delay 0, channel throughput caps off, log level WARNING.\n", flush=True)
    rows = bench(args)
    print_table(rows)
    missed = [r.metric.strip() for r in rows if r.ok is False]
    print(f"\n{len(missed)} target(s) missed" + (": " + "; ".join(missed) if missed else "") + ".")
    return 0


if __name__ == "__main__":
    sys.exit(main())
