"""Business events taken in and processed per second (step 13 of ``make bench``).

One ``tidings serve`` over the shipped policies (sandbox, delay 0), idle and empty; wrk at 64
connections posts ``EVENTS`` (5,000) ``order.shipped`` events with the demo test key, each with
its own ``event_id`` and two recipients, so each processed event makes two notifications through
the shipped ``order-shipped`` route (WhatsApp, then SMS, then email). Then the bench waits until
every event is processed and reads the store (read-only) once:

- accepted/s: the 202s over wrk's run; p99 accept latency from wrk;
- processed/s and notifications made/s: events (and the notifications they made) over the span
  from the first event's arrival to the last one's processing (``received_at`` and
  ``processed_at`` are the server's clock);
- the time from the last arrival until the last event was processed (the backlog the load left),
  and the longest any one event waited from its arrival to its processing.

``python -m tests.perf.business_events [--events N] [--runs R]`` runs this step alone, R times.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from tests.perf.load import NUMBER, LoadResult, run_wrk, wrk_path
from tests.perf.servers import query_rows, tidings_server

EVENTS = 5_000
CONNECTIONS = 64
RECIPIENTS = 2
TIMEOUT = 300.0  # the longest wait, after the load, for every event to be processed
EVENT_PATH = "/api/v1/events"
EVENT_BODY = {  # the shipped order-shipped route's event, numbered per request (NUMBER), to two people
    "event_id": f"bench-order-{NUMBER}",
    "event_name": "order.shipped",
    "source": "warehouse",
    "recipients": [{"phone": "+14155550100", "email": "ada@example.com"}, {"phone": "+14155550101", "email": "bob@example.com"}],
    "data": {"order_id": NUMBER},
}


@dataclass
class EventLoad:
    load: LoadResult
    events: int = 0  # events kept (wrk stops counting at EVENTS; those in flight then are kept too)
    processed: int = 0
    notifications: int = 0  # notifications the events made
    span: float = math.nan  # first arrival -> last processed, seconds
    lag: float = math.nan  # last arrival -> last processed
    longest_wait: float = math.nan  # the longest arrival -> processed of one event
    server_cpu: float = 0.0  # from the load's start until the last event was processed

    @property
    def accepted_rate(self) -> float:
        return self.load.rate(202)

    @property
    def processed_rate(self) -> float:
        return self.processed / self.span if self.span > 0 else 0.0

    @property
    def notification_rate(self) -> float:
        return self.notifications / self.span if self.span > 0 else 0.0

    @property
    def complete(self) -> bool:
        return self.events > 0 and self.processed == self.events and self.notifications == RECIPIENTS * self.events

    def describe(self) -> str:
        return (f"{self.load.describe()}; {self.events:,} events kept, accepted {self.accepted_rate:,.0f}/s "
                f"(p99 {self.load.p99_ms:.1f} ms); {self.processed:,} processed at {self.processed_rate:,.0f}/s, "
                f"{self.notifications:,} notifications at {self.notification_rate:,.0f}/s; last processed {self.lag:.2f}s after "
                f"the last arrival; longest wait {self.longest_wait:.2f}s; server CPU {self.cpu_per_event_us:,.0f} us per event")

    @property
    def cpu_per_event_us(self) -> float:
        return self.server_cpu / self.events * 1e6 if self.events else math.nan


def measure_business_events(events: int = EVENTS, connections: int = CONNECTIONS) -> EventLoad:
    with tidings_server({"TIDINGS_POLICY_RELOAD": "false"}) as server:
        time.sleep(1.0)  # start-up work settles; the store is empty
        cpu = server.cpu_seconds()
        load = run_wrk(server.base_url + EVENT_PATH, EVENT_BODY, connections, 120.0, responses=events, numbered=True)
        run = EventLoad(load)
        _wait_processed(server.database)
        run.server_cpu = server.cpu_seconds() - cpu
        _read(server.database, run)
    return run


def _counts(database: Path) -> tuple[int, int]:
    ((kept, processed),) = query_rows(database, "SELECT count(*), count(processed_at) FROM business_events")
    return int(kept), int(processed)


def _wait_processed(database: Path) -> None:
    deadline = time.perf_counter() + TIMEOUT
    while time.perf_counter() < deadline:
        kept, processed = _counts(database)
        if kept and processed == kept:
            return
        time.sleep(0.05)


def _read(database: Path, run: EventLoad) -> None:
    ((kept, processed, first, last, done, longest),) = query_rows(
        database,
        "SELECT count(*), count(processed_at), min(received_at), max(received_at), max(processed_at), "
        "max(processed_at - received_at) FROM business_events",
    )
    run.events, run.processed = int(kept), int(processed)
    run.notifications = int(query_rows(database, "SELECT count(*) FROM notifications WHERE event_id IS NOT NULL")[0][0])
    if processed:
        run.span, run.lag, run.longest_wait = done - first, done - last, longest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.perf.business_events", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=EVENTS)
    parser.add_argument("--connections", type=int, default=CONNECTIONS)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args(argv)
    if not wrk_path():
        raise SystemExit("needs wrk (apt-get install wrk)")
    runs = []
    for number in range(1, args.runs + 1):
        run = measure_business_events(args.events, args.connections)
        print(f"run {number}: {run.describe()}", flush=True)
        runs.append(run)
    if len(runs) > 1:
        print(f"medians: accepted {statistics.median(r.accepted_rate for r in runs):,.0f}/s, "
              f"processed {statistics.median(r.processed_rate for r in runs):,.0f}/s, "
              f"notifications {statistics.median(r.notification_rate for r in runs):,.0f}/s, "
              f"p99 accept {statistics.median(r.load.p99_ms for r in runs):.1f} ms, "
              f"last processed {statistics.median(r.lag for r in runs):.2f}s after the last arrival")


if __name__ == "__main__":
    main()
