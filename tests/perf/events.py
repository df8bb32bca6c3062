"""Signed event webhooks delivered per second to a loopback receiver (step 10 of ``make bench``).

The demo tenant's endpoint is pointed at tests.perf.receiver (``allow_private``, every event
type). A bulk of sandbox sends produces three events per notification (queued, sent,
delivered); the rate is the number of distinct events the receiver got over the span from the
first to the last arrival, so it measures the event worker, not the accepts. The server's CPU
per event (accepting and sending the messages included) is less sensitive to a busy machine.
"""

from __future__ import annotations

import math
import time
import urllib.request
from dataclasses import dataclass

import orjson

from tests.perf.dispatch import POLL_SECONDS, accept_in_bulk, bulk_sizes, fetch_arrivals
from tests.perf.servers import Server, tidings_server

NOTIFICATIONS = 5_000
EVENTS_PER_NOTIFICATION = 3  # message.queued, message.sent, message.delivered
TIMEOUT = 120.0


@dataclass
class EventRun:
    expected: int
    received: int = 0
    rate: float = math.nan
    cpu_per_event_us: float = math.nan  # the server's CPU time (all threads) from the bulk accept to the last event, per event

    def describe(self) -> str:
        return f"{self.received:,}/{self.expected:,} events received at {self.rate:,.0f}/s; server CPU {self.cpu_per_event_us:,.0f} us per event"


def measure_events(receiver: Server) -> EventRun:
    run = EventRun(NOTIFICATIONS * EVENTS_PER_NOTIFICATION)
    with tidings_server({"TIDINGS_POLICY_RELOAD": "false"}, events_url=receiver.base_url + "/events") as server:
        bodies = [
            {"channels": ["sms"], "body": "bench event", "recipients": [{"phone": f"+1415{n:07d}"} for n in range(start, start + rows)]}
            for start, rows in zip(range(0, NOTIFICATIONS, 10_000), bulk_sizes(NOTIFICATIONS), strict=True)
        ]
        cpu = server.cpu_seconds()
        accept_in_bulk(server, bodies)
        deadline = time.perf_counter() + TIMEOUT
        while _distinct(receiver) < run.expected and time.perf_counter() < deadline:
            time.sleep(POLL_SECONDS)
        run.cpu_per_event_us = (server.cpu_seconds() - cpu) / run.expected * 1e6
    times = sorted(at for _event, (at, _port) in fetch_arrivals(receiver).items())
    run.received = len(times)
    if len(times) > 1:
        run.rate = (len(times) - 1) / (times[-1] - times[0])
    return run


def _distinct(receiver: Server) -> int:
    with urllib.request.urlopen(receiver.base_url + "/count", timeout=10.0) as response:
        return int(orjson.loads(response.read())["distinct"])
