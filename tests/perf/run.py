"""``make bench``: measure Tidings against its performance targets and print one table.

Issue 16 ("Step 9 — Speed") sets the first targets; each is a rate or a ratio measured in this
run (the bare baseline included), on 127.0.0.1 with fresh temp data dirs, the sandbox's delivery
delay 0 and no channel throughput cap (so no sms 50/s throttle):

1. Durable accepts: wrk at ``--connections`` (64) posting the README's 2-channel send
   (email + sms, ``order_shipped``, the demo test key) for ``--seconds`` after a 2 s warm-up:
   202s/s, p50/p99, CPU per accept, every 202 stored. Once every delivery of the run is
   ``delivered``: rows kept and bytes stored per notification, by table (tests.perf.footprint;
   bytes from SQLite's ``dbstat``).
2. The same load against a bare aiohttp handler (tests.perf.bare_server); ratio durable ÷ bare.
3. Rows written per notification, accept → delivered: inserts, updates and deletes by table,
   counted inside a separate ``tidings serve`` (tests.perf.rowcount) over ``ROW_SENDS`` README sends.
4. Keep-up (tests.perf.keepup): ``--keepup-seconds`` (30) of README sends at 64 clients from an
   idle server; deliveries completed ÷ deliveries accepted in that window; a send right after
   the load, time until it is delivered; time until the backlog drained.
5. End to end through a real HTTP provider: 3,000 single sends at 64 clients through the
   ``webhook`` plugin to a loopback receiver, first send → last arrival (tests.perf.dispatch).
6. One 10,000-row bulk through the webhook plugin, accept → all received, at the default
   dispatch concurrency and at 200; then the engine's delay on a 200/s trickle of single sends.
7. Signed event webhooks delivered per second to a loopback receiver (tests.perf.events).
8. Signed provider receipts acknowledged per second, and reconciled (tests.perf.inbound).

Then the earlier steps' targets, kept as regression checks:

9. Sandbox deliveries/s end to end (bulk-accept ``--deliveries``, wait until all are ``delivered``),
   and the time to accept one 10,000-row bulk request.
10. Policy hot reload under the send load (tests.perf.reload).
11. A 10,000-row bulk through a provider instance limited to 500/s: the pace the receiver saw.
12. Retention (tests.perf.retention): a steady stream of README sends against a short tenant
    retention; the database file (and WAL) holds its size once purges keep pace.
13. Business events (tests.perf.business_events): 5,000 ``order.shipped`` events with two
    recipients each, posted by wrk at 64 clients with the demo key over the shipped routes;
    accepted/s and p99, processed/s and notifications made/s, and how long after the last
    arrival the last event was processed.
Idle RSS and process start to ``/readyz`` come from step 1's server.

The machine may be shared: each step also reports how many cores other processes kept busy
meanwhile (tests.perf.contention), shown per row in the table's Others column.

Options: ``--seconds``, ``--keepup-seconds``, ``--connections``, ``--deliveries``,
``--load-tool {auto,wrk,aiohttp}``, ``--profile FILE`` (py-spy of the server during step 1's
measured load: ``.svg`` a flame graph, ``.json`` speedscope, anything else raw collapsed stacks;
``make bench PROFILE=FILE``).
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
from dataclasses import dataclass, field
from pathlib import Path

from tests.perf.business_events import EVENTS as BUSINESS_EVENTS
from tests.perf.business_events import EventLoad, measure_business_events
from tests.perf.contention import Mark, others_cores
from tests.perf.dispatch import (
    DELIVERY_TIMEOUT,
    SINGLE_CONNECTIONS,
    SINGLE_SENDS,
    THROTTLE_RATE,
    THROTTLE_ROWS,
    TRICKLE_RATE,
    TRICKLE_SECONDS,
    DispatchRun,
    SingleSends,
    ThrottledDrain,
    accept_in_bulk,
    bulk_sizes,
    measure_dispatch,
    measure_single_sends,
    measure_throttled_drain,
    wait_for_status,
)
from tests.perf.events import NOTIFICATIONS, EventRun, measure_events
from tests.perf.footprint import Footprint, RowWrites, footprint, measure_row_writes, snapshot
from tests.perf.inbound import MESSAGES as INBOUND_MESSAGES
from tests.perf.inbound import InboundRun, measure_inbound
from tests.perf.keepup import PROBE_TARGET, KeepUp, measure_keepup
from tests.perf.load import README_SEND, LoadResult, run_load, wrk_path
from tests.perf.progress import SANDBOX_DONE, wait_until_done
from tests.perf.reload import WRITE_EVERY, ReloadResult, describe, measure_reloads
from tests.perf.retention import RATE as RETENTION_RATE
from tests.perf.retention import RETENTION, RetentionRun, measure_retention
from tests.perf.retention import SECONDS as RETENTION_SECONDS
from tests.perf.servers import BULK_ROWS, SEND_PATH, Server, bare_server, count_rows, receiver_server, tidings_server

WARMUP_SECONDS = 2.0
DRAIN_TIMEOUT = 120.0  # after step 1's load, the longest wait for every delivery to be delivered
ROW_SENDS = 2_000
STEPS = 13

# Issue 16's targets.
RATIO_TARGET = 0.40
P99_TARGET_MS = 25.0
SINGLE_TARGET = 2_500.0
BULK_TARGET = 4_000.0
INSERTS_TARGET = 8.0
BYTES_TARGET = 1_500.0  # 1.5 KB
RECEIPTS_TARGET = 3_000.0
EVENTS_TARGET = 2_000.0
KEEPUP_TARGET = 0.9
EVENT_LAG_TARGET = 2.0  # seconds from the last event's arrival until it is processed


@dataclass
class Row:
    metric: str
    measured: str = ""
    target: str = ""
    ok: bool | None = None  # None: informational
    steps: tuple[int, ...] = ()  # the steps it was measured in, for the noise column

    @property
    def verdict(self) -> str:
        return "" if self.ok is None else ("PASS" if self.ok else "MISS")


def section(title: str) -> Row:
    return Row(f"== {title}")


def tag(rows: list[Row], *steps: int) -> list[Row]:
    """Mark ``rows`` as measured in ``steps`` (rows already marked keep theirs)."""
    for row in rows:
        row.steps = row.steps or steps
    return rows


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
        print(f"  (py-spy not found: pip install py-spy, or make .venv/.installed-dev; no profile written to {out})", flush=True)
        return None
    kind = {".svg": "flamegraph", ".json": "speedscope"}.get(out.suffix, "raw")
    cmd = [spy, "record", "--pid", str(server.proc.pid), "--duration", str(max(1, round(seconds))),
           "--rate", "100", "--threads", "--format", kind, "--output", str(out), "--nonblocking"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def measure_load(
    server: Server, args: argparse.Namespace, profile: Path | None = None, before_run: object = None
) -> LoadResult:
    url = server.base_url + SEND_PATH
    run_load(url, README_SEND, args.connections, WARMUP_SECONDS, args.load_tool)
    if callable(before_run):
        before_run()
    spy = start_profiler(server, args.seconds, profile) if profile else None
    try:
        cpu0 = server.cpu_seconds()
        result = run_load(url, README_SEND, args.connections, args.seconds, args.load_tool)
        result.server_cpu = server.cpu_seconds() - cpu0
    finally:
        if spy is not None:
            try:
                spy.wait(timeout=args.seconds + 30)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait()
    return result


@dataclass
class Durable:
    """Step 1: the durable load, and what its notifications left in the store once delivered."""

    load: LoadResult
    stored: int  # notifications stored during the measured run
    ready_after: float
    idle_rss: float
    loaded_rss: float
    drained: float  # seconds from the end of the load until every delivery was delivered (NaN: timed out)
    kept: Footprint


@dataclass
class StepLog:
    """Prints each step's heading, and measures how busy the rest of the machine was during it."""

    number: int = 0
    started: Mark | None = None
    others: dict[int, float] = field(default_factory=dict)  # step → cores other processes kept busy

    def begin(self, number: int, text: str) -> None:
        self.end()
        print(f"[{number}/{STEPS}] {text} ...", flush=True)
        self.number, self.started = number, Mark.now()

    def end(self) -> None:
        if self.started is not None:
            self.others[self.number] = cores = others_cores(self.started)
            note(f"(other processes on this machine kept {cores:.2f} cores busy during this step)")
            self.started = None

    def noise(self, row: Row) -> str:
        cores = [self.others[s] for s in row.steps if s in self.others]
        return f"{max(cores):.2f}" if cores else ""


def note(text: str) -> None:
    print(f"      {text}", flush=True)


def run_durable(args: argparse.Namespace) -> Durable:
    with tidings_server() as server:
        ready = server.ready_after or math.nan
        time.sleep(1.0)  # let start-up work (dispatcher's first claims, policy watch) settle
        idle_rss = server.rss_mb()
        empty = snapshot(server.database)  # before the warm-up: every notification of the run is counted
        sql = "SELECT count(*) FROM notifications"
        baseline: list[int] = []
        load = measure_load(server, args, args.profile, before_run=lambda: baseline.append(count_rows(server.database, sql)))
        loaded_rss = server.rss_mb()
        stored = count_rows(server.database, sql) - baseline[0]  # rows added during the measured run
        drained = wait_until_done(server.database, SANDBOX_DONE, DRAIN_TIMEOUT)
        time.sleep(0.5)  # what follows the last delivery (the notification's own status) commits
        kept = footprint(empty, snapshot(server.database))
    return Durable(load, stored, ready, idle_rss, loaded_rss, drained, kept)


@dataclass
class SandboxBulk:
    accepted: int
    accepted_after: float
    bulk_times: list[float]
    delivered: int
    all_done: float
    rss: float


def run_sandbox_bulk(deliveries: int) -> SandboxBulk:
    with tidings_server() as server:
        bodies = [bulk_body(i * BULK_ROWS, rows) for i, rows in enumerate(bulk_sizes(deliveries))]
        t0 = time.perf_counter()
        accepted, bulk_times = accept_in_bulk(server, bodies)
        accepted_at = time.perf_counter() - t0
        delivered = wait_for_status(server, "delivered", accepted, t0 + DELIVERY_TIMEOUT)
        all_done = time.perf_counter() - t0
        return SandboxBulk(accepted, accepted_at, bulk_times, delivered, all_done, server.rss_mb())


def bench(args: argparse.Namespace, log: StepLog) -> list[Row]:
    n = args.connections
    step = log.begin
    step(1, f"tidings serve: start-up, idle RSS, {n} clients x {args.seconds:.0f}s of README sends (2 channels), "
            "then wait until all are delivered")
    durable = run_durable(args)
    note(f"{durable.load.describe()}; notifications stored during the run: {durable.stored:,}")
    note(f"all delivered {durable.drained:.2f}s after the load; {durable.kept.describe()}")
    if args.profile:
        note(f"py-spy profile of the measured load: {args.profile.resolve()}" if args.profile.exists()
             else f"no profile written to {args.profile}")

    step(2, f"bare aiohttp handler: {n} clients x {args.seconds:.0f}s of the same send")
    with bare_server() as server:
        bare = measure_load(server, args)
    note(bare.describe())

    step(3, f"rows written: {ROW_SENDS:,} README sends into a tidings serve that counts its SQL writes, until delivered")
    writes = measure_row_writes(ROW_SENDS, n, DRAIN_TIMEOUT)
    note(writes.describe())

    step(4, f"keep-up: {n} clients x {args.keepup_seconds:.0f}s of README sends from idle, one more send after, until drained")
    keepup = measure_keepup(args.keepup_seconds, n, args.load_tool)
    note(keepup.describe())

    step(5, f"end to end: {SINGLE_SENDS:,} single sends at {SINGLE_CONNECTIONS} clients, webhook plugin -> loopback receiver")
    single: SingleSends | None = None
    if wrk_path():
        with receiver_server() as receiver:
            single = measure_single_sends(receiver)
    note(single.describe() if single else "skipped: needs wrk (apt-get install wrk)")

    step(6, f"{BULK_ROWS:,}-row bulk through the webhook plugin to a loopback receiver, accept -> all received, "
            f"then {TRICKLE_RATE:.0f}/s single sends for {TRICKLE_SECONDS:.0f}s; default dispatch concurrency and 200")
    dispatch = measure_dispatch(BULK_ROWS)
    for run in dispatch:
        note(run.describe())

    step(7, f"event webhooks: {NOTIFICATIONS:,} sandbox sends, every event to a loopback receiver")
    with receiver_server() as receiver:
        events = measure_events(receiver)
    note(events.describe())

    step(8, f"provider receipts: {INBOUND_MESSAGES:,} WhatsApp sends, then signed 'delivered' callbacks by wrk")
    inbound = measure_inbound() if wrk_path() else None
    note(inbound.describe() if inbound else "skipped: needs wrk (apt-get install wrk)")

    step(9, f"sandbox: bulk accept {args.deliveries:,} rows in requests of {BULK_ROWS:,}, wait for 'delivered'")
    sandbox = run_sandbox_bulk(args.deliveries)
    note(f"accepted {sandbox.accepted:,} in {sandbox.accepted_after:.2f}s (bulk requests: "
         f"{', '.join(f'{t:.2f}s' for t in sandbox.bulk_times)}); delivered {sandbox.delivered:,} after {sandbox.all_done:.2f}s")

    step(10, f"policy reload: {n} clients x {args.seconds:.0f}s of sends, templates.yaml rewritten every {WRITE_EVERY * 1000:.0f} ms")
    with tidings_server() as server:
        reload = measure_reloads(server, args.seconds, n, args.load_tool)
    note(f"{reload.load.describe()}; {reload.writes} writes")

    step(11, f"{THROTTLE_ROWS:,}-row bulk through an instance limited to {THROTTLE_RATE:g}/s")
    with receiver_server() as receiver:
        drain = measure_throttled_drain(receiver)
    note(f"{drain.sent:,}/{drain.accepted:,} sent at {drain.rate:,.1f}/s; busiest second {drain.busiest_second}")

    step(12, f"retention: the README send at {RETENTION_RATE:g}/s for {RETENTION_SECONDS:.0f}s, demo tenant retention "
             f"{RETENTION}, database + WAL sampled")
    retention = measure_retention()
    note(retention.describe())

    step(13, f"business events: {BUSINESS_EVENTS:,} order.shipped events (2 recipients each) at {n} clients, until all are processed")
    business = measure_business_events(BUSINESS_EVENTS, n) if wrk_path() else None
    note(business.describe() if business else "skipped: needs wrk (apt-get install wrk)")
    log.end()
    print("Done; servers stopped, temp dirs removed.\n", flush=True)

    rows = [Row("Load generator", durable.load.tool)]
    rows += [section("Issue 16 (Step 9 - Speed)")]
    rows += _accept_rows(durable, bare, n)
    rows += tag(_single_rows(single), 5)
    rows += tag(_bulk_rows(dispatch), 6)
    rows += _store_rows(writes, durable)
    rows += tag(_receipt_rows(inbound), 8)
    rows += tag(_event_rows(events), 7)
    rows += tag(_keepup_rows(keepup, args.keepup_seconds, n), 4)
    rows += tag(_retention_rows(retention), 12)
    rows += [section("Issue 17 (business events)")]
    rows += tag(_business_event_rows(business), 13)
    rows += [section("Earlier targets")]
    rows += _earlier_rows(durable, sandbox, reload, drain)
    rows += tag(_delay_rows(dispatch), 6)
    return rows


def _accept_rows(durable: Durable, bare: LoadResult, n: int) -> list[Row]:
    load = durable.load
    ratio = load.rate() / bare.rate() if bare.rate() else 0.0
    non202 = sum(v for k, v in load.statuses.items() if k != 202)
    ok = load.count(202) > 0 and durable.stored >= load.count(202) and non202 == 0 and load.errors == 0
    return tag([
        Row(f"1. Durable accepts / bare aiohttp handler (README send, {n} clients, {load.duration:.0f}s)",
            f"{ratio:.2f} ({load.rate():,.0f} vs {bare.rate():,.0f}/s)", f">= {RATIO_TARGET:.2f}", ratio >= RATIO_TARGET, (1, 2)),
        Row("   durable: 202s / notifications stored meanwhile / non-202 / socket errors",
            f"{load.count(202):,} / {durable.stored:,} / {non202} / {load.errors}", "stored >= 202s, 0, 0", ok),
        Row("   server CPU: cores busy / per durable accept", _cpu(load)),
        Row("   bare: p50 / p99; CPU cores busy / per 202", f"{bare.p50_ms:.1f} / {bare.p99_ms:.1f} ms; {_cpu(bare)}", steps=(2,)),
        Row("2. Accept latency p99 (p50)", f"{load.p99_ms:.1f} ms ({load.p50_ms:.1f})", f"< {P99_TARGET_MS:.0f} ms",
            load.p99_ms < P99_TARGET_MS),
    ], 1)


def _single_rows(single: SingleSends | None) -> list[Row]:
    label = f"3. End to end, webhook plugin -> receiver, {SINGLE_SENDS:,} single sends at {SINGLE_CONNECTIONS} clients"
    if single is None or single.load is None:
        return [Row(label, "skipped: needs wrk", f">= {SINGLE_TARGET:,.0f} msg/s")]
    done = "" if single.complete else f" (TIMED OUT: {single.received:,}/{single.accepted:,})"
    accepts = single.load.count(202) / single.load.duration if single.load.duration > 0 else 0.0
    return [
        Row(label, f"{single.rate:,.0f} msg/s{done}", f">= {SINGLE_TARGET:,.0f} msg/s", single.complete and single.rate >= SINGLE_TARGET),
        Row("   sends accepted/s while wrk ran; first send -> last arrival",
            f"{accepts:,.0f}/s; {single.elapsed:.2f} s for {single.received:,}"),
        Row("   server CPU per message (accept + delivery)",
            f"{single.server_cpu / single.received * 1e6:,.0f} us" if single.received else "n/a"),
    ]


def _bulk_rows(runs: list[DispatchRun]) -> list[Row]:
    rows = []
    for number, run in enumerate(runs):
        done = "" if run.complete else f" (TIMED OUT: {run.received:,}/{run.accepted:,})"
        if number == 0:
            rows.append(Row(f"4. {run.accepted:,}-row bulk, webhook plugin, accept -> all received (dispatch concurrency {run.label})",
                            f"{run.rate:,.0f}/s{done}", f">= {BULK_TARGET:,.0f}/s", run.complete and run.rate >= BULK_TARGET))
        else:
            rows.append(Row(f"   the same at dispatch concurrency {run.label}", f"{run.rate:,.0f}/s{done}"))
        rows.append(Row("   provider calls/s first to last / connections opened / CPU per delivery",
                        f"{run.call_rate:,.0f}/s / {run.connections} / {run.cpu_per_delivery_us:,.0f} us"))
    return rows


def _delay_rows(runs: list[DispatchRun]) -> list[Row]:
    return [
        Row(f"{'16.' if number == 0 else '   '} Engine delay due -> webhook call p50 / p99, {TRICKLE_RATE:.0f}/s trickle, "
            f"dispatch concurrency {run.label}", f"{run.delay_ms(50):.1f} / {run.delay_ms(99):.1f} ms", "p99 < 50 ms",
            run.delay_ms(99) < 50.0)
        for number, run in enumerate(runs)
    ]


def _store_rows(writes: RowWrites, durable: Durable) -> list[Row]:
    kept = durable.kept
    drained = "" if not math.isnan(durable.drained) else " (NOT all delivered)"
    rows = []
    if writes.counted:
        counted = "" if writes.drained else " (NOT all delivered)"
        rows += tag([
            Row("5. Rows written per 2-channel notification, accept -> delivered: inserts",
                f"{writes.total('insert'):.2f} (+ {writes.total('update'):.2f} updates, {writes.total('delete'):.2f} deletes){counted}",
                f"<= {INSERTS_TARGET:.0f} inserts", writes.drained and writes.total("insert") <= INSERTS_TARGET),
            Row("   inserts by table", _tables(writes.per.get("insert", {}))),
            Row("   updates by table", _tables(writes.per.get("update", {}))),
        ], 3)
        if writes.per.get("delete"):
            rows.append(Row("   deletes by table", _tables(writes.per["delete"]), steps=(3,)))
        rows.append(Row(f"   rows kept per notification, step 1 ({kept.notifications:,}){drained}", f"{kept.rows_per_notification:.2f}"))
    else:  # the counting wrapper saw nothing: fall back to rows kept (inserts minus deletes)
        rows.append(Row(f"5. Rows kept per 2-channel notification, accept -> delivered ({kept.notifications:,}; inserts only){drained}",
                        f"{kept.rows_per_notification:.2f}", f"<= {INSERTS_TARGET:.0f} inserts",
                        not drained and kept.rows_per_notification <= INSERTS_TARGET))
        rows.append(Row("   rows kept by table", _tables(kept.rows)))
    size = kept.bytes_per_notification
    rows += [
        Row(f"6. Database size per 2-channel notification (step 1, {kept.notifications:,}){drained}",
            f"{size:,.0f} B ({size / 1000:.2f} KB)", f"<= {BYTES_TARGET:,.0f} B", not drained and size <= BYTES_TARGET),
        Row("   bytes by table, indexes included" if kept.by_table else "   (no dbstat: pages in use, one total)",
            _tables(kept.bytes, "{:,.0f}")),
    ]
    return tag(rows, 1)


def _receipt_rows(inbound: InboundRun | None) -> list[Row]:
    label = "7. Signed provider receipts acknowledged/s (WhatsApp callbacks, 50 connections)"
    if inbound is None:
        return [Row(label, "skipped: needs wrk", f">= {RECEIPTS_TARGET:,.0f}/s")]
    return [
        Row(label, f"{inbound.ack_rate:,.0f}/s", f">= {RECEIPTS_TARGET:,.0f}/s", inbound.ack_rate >= RECEIPTS_TARGET and inbound.refused == 0),
        Row(f"   reconciled to delivered ({inbound.delivered:,}); ack p99", f"{inbound.reconcile_rate:,.0f}/s; {inbound.ack_p99_ms:.1f} ms",
            "keeps up with acks", inbound.reconcile_rate >= 0.9 * inbound.ack_rate),
    ]


def _event_rows(events: EventRun) -> list[Row]:
    return [Row(f"8. Signed event webhooks/s to a loopback receiver ({events.received:,})", f"{events.rate:,.0f}/s",
                f">= {EVENTS_TARGET:,.0f}/s", events.rate >= EVENTS_TARGET and events.received == events.expected)]


def _keepup_rows(run: KeepUp, seconds: float, connections: int) -> list[Row]:
    load = run.load
    drained = f"{run.drained:.2f} s" if not math.isnan(run.drained) else "not within the wait"
    return [
        Row(f"9. Keep-up over {seconds:.0f}s at {connections} clients: deliveries completed / accepted",
            f"{run.ratio:.2f} ({run.completed_rate:,.0f} vs {run.accepted_rate:,.0f}/s)", f">= {KEEPUP_TARGET:.1f}",
            run.accepted > 0 and run.ratio >= KEEPUP_TARGET),
        Row("   a send right after the load: delivered after", f"{run.probe:.2f} s", f"< {PROBE_TARGET:.0f} s", run.probe < PROBE_TARGET),
        Row("   backlog when the load ended / drained after", f"{run.backlog:,} deliveries / {drained}"),
        Row("   notifications accepted/s (p99) during it; server cores busy",
            f"{load.rate():,.0f}/s ({load.p99_ms:.1f} ms); {run.server_cpu / run.window:.2f}" if run.window > 0 else "n/a"),
    ]


def _business_event_rows(run: EventLoad | None) -> list[Row]:
    label = f"17. Business events processed / accepted ({BUSINESS_EVENTS:,} events, 2 recipients each)"
    if run is None:
        return [Row(label, "skipped: needs wrk", f">= {KEEPUP_TARGET:.1f}")]
    done = "" if run.complete else f" (NOT all processed: {run.processed:,}/{run.events:,})"
    ratio = run.processed_rate / run.accepted_rate if run.accepted_rate else 0.0
    return [
        Row(label, f"{ratio:.2f} ({run.processed_rate:,.0f} vs {run.accepted_rate:,.0f}/s){done}", f">= {KEEPUP_TARGET:.1f}",
            run.complete and ratio >= KEEPUP_TARGET),
        Row("   last event processed after the last arrival / longest wait", f"{run.lag:.2f} / {run.longest_wait:.2f} s",
            f"< {EVENT_LAG_TARGET:.0f} s", run.complete and run.lag < EVENT_LAG_TARGET),
        Row("   notifications made/s; accept p99 (p50); server CPU per event",
            f"{run.notification_rate:,.0f}/s; {run.load.p99_ms:.1f} ms ({run.load.p50_ms:.1f}); {run.cpu_per_event_us:,.0f} us"),
    ]


def _retention_rows(run: RetentionRun) -> list[Row]:
    return [Row(f"9b. Database + WAL with a {run.retention} retention, middle -> end of {run.seconds:.0f}s",
                f"{run.middle.total_mb:.1f} -> {run.end.total_mb:.1f} MB ({run.change:+.1%})", "within ±15%", run.holds)]


def _earlier_rows(durable: Durable, sandbox: SandboxBulk, reload: ReloadResult, drain: ThrottledDrain) -> list[Row]:
    e2e = sandbox.delivered / sandbox.all_done if sandbox.all_done else 0.0
    timed_out = "" if sandbox.delivered >= sandbox.accepted else f" (TIMED OUT: {sandbox.delivered}/{sandbox.accepted})"
    rows = [
        Row(f"10. Sandbox deliveries/s end to end ({sandbox.accepted:,} in bulk)", f"{e2e:,.0f}/s{timed_out}", ">= 3,000/s",
            sandbox.delivered >= sandbox.accepted and e2e >= 3000, (9,)),
        Row(f"11. Bulk accept, one {BULK_ROWS:,}-row request", f"{sandbox.bulk_times[0]:.2f} s", "< 2 s", sandbox.bulk_times[0] < 2.0, (9,)),
        Row("12. Idle RSS after start", f"{durable.idle_rss:.1f} MB", "< 80 MB", durable.idle_rss < 80, (1,)),
        Row("    RSS after send load / after bulk run", f"{durable.loaded_rss:.1f} / {sandbox.rss:.1f} MB", steps=(1, 9)),
        Row("13. Process start to /readyz 200", f"{durable.ready_after:.2f} s", "< 1 s", durable.ready_after < 1.0, (1,)),
    ]
    rows += tag(_reload_rows(reload), 10)
    rows += tag([
        Row(f"15. {THROTTLE_ROWS:,}-row bulk through a {THROTTLE_RATE:g}/s instance: drained at",
            f"{drain.rate:,.1f}/s ({drain.sent:,} sent)", f"{THROTTLE_RATE:g}/s ±3%", drain.exact and drain.sent == drain.accepted),
        Row("    most provider calls in any 1 s window", f"{drain.busiest_second}", f"<= {drain.ceiling:g} (rate+burst+3%)",
            drain.busiest_second <= drain.ceiling),
    ], 11)
    return rows


def _tables(per: dict[str, float], fmt: str = "{:.2f}") -> str:
    items = sorted(((t, n) for t, n in per.items() if abs(n) >= 0.005), key=lambda kv: -kv[1])
    return ", ".join(f"{t} {fmt.format(n)}" for t, n in items) or "none"


def _reload_rows(reload: ReloadResult) -> list[Row]:
    load = reload.load
    non202 = sum(n for status, n in load.statuses.items() if status != 202)
    seen = len(reload.reloads) + len(reload.rejections)
    return [
        Row(f"14. Policy reload under load ({reload.writes} writes)",
            f"{len(reload.reloads)} reloads, {len(reload.rejections)} refused", "every write seen",
            seen == reload.writes),
        Row("    sends meanwhile: requests (rate) / non-202 / socket errors",
            f"{reload.requests:,} ({load.rate():,.0f}/s) / {non202} / {load.errors}", "0 failed",
            reload.requests > 0 and reload.failed == 0),
        Row("    write to new version in /readyz p50 / max", describe(reload.reloads), "< 1 s", _within(reload.reloads, 1.0)),
        Row("    broken write to error in /readyz p50 / max", describe(reload.rejections), "< 1 s",
            _within(reload.rejections, 1.0)),
    ]


def _within(latencies: list[float], limit: float) -> bool:
    return bool(latencies) and max(latencies) < limit


def _cpu(result: LoadResult) -> str:
    accepted = result.count(202)
    if not accepted or result.duration <= 0:
        return "n/a"
    return f"{result.server_cpu / result.duration:.2f} / {result.server_cpu / accepted * 1e6:.0f} us"


def print_table(rows: list[Row], log: StepLog) -> None:
    headers = ("Measurement", "Measured", "Target", "Result", "Others")
    table = [(r.metric, r.measured, r.target, r.verdict, log.noise(r)) for r in rows]
    widths = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(headers)]
    line = "  ".join("-" * w for w in widths)
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    print(line)
    for cells in table:
        print("  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip())
    print(line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.perf.run", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the durable, bare and reload load runs (default 10)")
    parser.add_argument("--keepup-seconds", type=float, default=30.0, help="length of the keep-up load run (default 30)")
    parser.add_argument("--connections", type=int, default=64, help="concurrent clients (default 64)")
    parser.add_argument("--deliveries", type=int, default=20_000, help="bulk-accepted deliveries to wait for")
    parser.add_argument("--load-tool", choices=["auto", "wrk", "aiohttp"], default="auto")
    parser.add_argument("--profile", type=Path, help="py-spy of the server during step 1's measured load, written here "
                        "(.svg: flame graph, .json: speedscope, else raw collapsed stacks)")
    args = parser.parse_args(argv)
    args.seconds = min(max(args.seconds, 1.0), 120.0)
    args.keepup_seconds = min(max(args.keepup_seconds, 1.0), 300.0)
    args.deliveries = min(max(args.deliveries, 1), 200_000)

    using = "wrk" if args.load_tool == "wrk" or (args.load_tool == "auto" and wrk_path()) else "aiohttp client"
    print(f"Tidings benchmark on {machine()}")
    print(f"Load generator: {using}" + ("" if using == "wrk" else " (wrk not installed; Python client may be the bottleneck)"))
    print("All servers on 127.0.0.1, fresh temp data dirs, sandbox delivery delay 0, channel throughput caps off "
          "(no sms 50/s), log level WARNING.\n", flush=True)
    log = StepLog()
    rows = bench(args, log)
    print_table(rows, log)
    print("Others: cores that other processes on this machine kept busy during the step(s) a row comes from "
          f"(the most of them), of {os.cpu_count()}. Well above 0, that row's figure is low for this machine.")
    missed = [r.metric.strip() for r in rows if r.ok is False]
    print(f"\n{len(missed)} target(s) missed" + (": " + "; ".join(missed) if missed else "") + ".")
    if args.profile:
        print(f"Profile of step 1's durable load: {args.profile.resolve()}" if args.profile.exists()
              else f"No profile was written to {args.profile} (is py-spy installed, and may it attach to a process?)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
