"""Does delivery keep up as accepts get faster? (issue 16's keep-up step of ``make bench``)

One ``tidings serve`` (sandbox, delay 0, no channel throughput cap), idle and empty, then
``connections`` (64) clients post the README's 2-channel send for ``seconds`` with no warm-up. The
store is read (read-only) just before the load starts and right after it ends:

- accepted: deliveries the store gained during the window;
- completed: deliveries that became done (``delivered``) during the window.

Both over the same window, and no backlog before it, so completed ÷ accepted is the share of
the window's work the dispatcher finished within it (a growing backlog shows as < 1; the few ms
of the last sends' own delivery latency are well under 1% of 30 s).

Then, right after the load, one more README send (a probe): the time from posting it until both
its deliveries are ``delivered`` (target < 5 s: a backlog delivered first-in-first-out makes it
wait behind the whole backlog); and the time from the end of the load until no delivery is left
undone (the backlog, if any, drained).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from tests.perf.load import README_SEND, LoadResult, run_load
from tests.perf.progress import SANDBOX_DONE, all_done, delivery_counts, done_among
from tests.perf.servers import SEND_PATH, Server, post_json, tidings_server

CONNECTIONS = 64
PROBE_TARGET = 5.0
DRAIN_TIMEOUT = 180.0
DRAIN_EVERY = 0.25  # full checks of the backlog (a scan of deliveries); the probe is checked every 10 ms


@dataclass
class KeepUp:
    load: LoadResult
    window: float = math.nan  # seconds between the two reads of the store
    accepted: int = 0  # deliveries accepted in the window
    completed: int = 0  # deliveries done in the window
    backlog: int = 0  # deliveries not done when the load ended
    server_cpu: float = 0.0  # CPU seconds of the server in the window
    probe: float = math.nan  # seconds from posting the probe to both its deliveries delivered
    drained: float = math.nan  # seconds from the end of the load to no delivery left undone

    @property
    def accepted_rate(self) -> float:
        return self.accepted / self.window if self.window > 0 else 0.0

    @property
    def completed_rate(self) -> float:
        return self.completed / self.window if self.window > 0 else 0.0

    @property
    def ratio(self) -> float:
        return self.completed / self.accepted if self.accepted else 0.0

    def describe(self) -> str:
        return (f"{self.load.describe()}; deliveries accepted {self.accepted:,} ({self.accepted_rate:,.0f}/s), "
                f"completed {self.completed:,} ({self.completed_rate:,.0f}/s), backlog at the end {self.backlog:,}; "
                f"probe delivered after {self.probe:.2f}s; backlog drained {self.drained:.2f}s after the load")


def measure_keepup(seconds: float, connections: int = CONNECTIONS, tool: str = "auto") -> KeepUp:
    with tidings_server() as server:
        time.sleep(1.0)  # start-up work settles; the store is empty
        db = server.database
        total0, done0 = delivery_counts(db, SANDBOX_DONE)
        started, cpu = time.perf_counter(), server.cpu_seconds()
        load = run_load(server.base_url + SEND_PATH, README_SEND, connections, seconds, tool)
        total1, done1 = delivery_counts(db, SANDBOX_DONE)
        ended = time.perf_counter()
        run = KeepUp(load, ended - started, total1 - total0, done1 - done0, total1 - done1, server.cpu_seconds() - cpu)
        _probe_and_drain(server, run, ended)
    return run


def _probe_and_drain(server: Server, run: KeepUp, load_ended: float) -> None:
    posted = time.perf_counter()
    status, reply = post_json(server.base_url + SEND_PATH, README_SEND)
    probe = [str(d["delivery_id"]) for d in reply.get("deliveries", [])] if status == 202 else []
    next_check = 0.0
    while (now := time.perf_counter()) - load_ended < DRAIN_TIMEOUT:
        if probe and math.isnan(run.probe) and done_among(server.database, probe, SANDBOX_DONE) == len(probe):
            run.probe = now - posted
        if math.isnan(run.drained) and now >= next_check:
            next_check = now + DRAIN_EVERY
            if all_done(server.database, SANDBOX_DONE):
                run.drained = now - load_ended
        if not math.isnan(run.drained) and (not probe or not math.isnan(run.probe)):
            return
        time.sleep(0.01)
