"""Deliveries end to end: accept, then wait until the store says they went out and the receiver got them.

:func:`accept_in_bulk` and :func:`wait_for_status` serve every delivery step of ``make bench``.
The webhook steps send through a real HTTP provider — the built-in ``webhook`` plugin, as the
demo tenant's ``demo-webhook`` instance — to a loopback receiver in its own process
(tests.perf.receiver), with a live key (test keys would go to the sandbox):

- :func:`measure_single_sends`: ``SINGLE_SENDS`` single sends by wrk at ``SINGLE_CONNECTIONS``
  clients, the same body each time (no idempotency key, so each is a new notification); msg/s
  from just before wrk starts to the last arrival at the receiver;
- :func:`measure_dispatch`, for each ``TIDINGS_DISPATCH_CONCURRENCY`` in ``CONCURRENCIES``
  (``None``: the server's default), one ``tidings serve``:
  - throughput: one ``BULK_ROWS``-row bulk request of webhook notifications; deliveries/s from
    just before the request to the last arrival at the receiver (accept → all received); also
    the rate between the first and last provider call as the receiver saw them, and how many
    connections the gateway's shared HTTP pool opened to it;
  - engine delay: once that backlog is gone, an open-loop trickle of single sends
    (``TRICKLE_RATE``/s for ``TRICKLE_SECONDS``); per delivery, the receiver's arrival time minus
    the notification's ``created_at``. Measured on a backlog it would be queueing behind the
    backlog; the trickle shows the engine's own delay: commit, wake-up, claim, one loopback call.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field

import aiohttp
import orjson

from tests.perf.load import HEADERS, LoadResult, run_wrk
from tests.perf.progress import WEBHOOK_DONE, wait_until_done
from tests.perf.servers import BULK_PATH, BULK_ROWS, SEND_PATH, Server, post_json, query_rows, receiver_server, tidings_server

CONCURRENCIES: tuple[int | None, ...] = (None, 200)  # None: the server's default
SINGLE_SENDS = 3_000
SINGLE_CONNECTIONS = 64
TRICKLE_RATE = 200.0
TRICKLE_SECONDS = 5.0
DELIVERY_TIMEOUT = 120.0
POLL_SECONDS = 0.05


def accept_in_bulk(server: Server, bodies: list[dict], headers: Mapping[str, str] = HEADERS) -> tuple[int, list[float]]:
    """POST each bulk body in turn; the rows accepted and how long each request took."""
    accepted, took = 0, []
    for body in bodies:
        started = time.perf_counter()
        status, reply = post_json(server.base_url + BULK_PATH, body, headers=headers)
        took.append(time.perf_counter() - started)
        if status != 202:
            raise RuntimeError(f"bulk answered {status}: {str(reply)[:300]}")
        accepted += int(reply["accepted"])
    return accepted, took


def wait_for_status(server: Server, status: str, count: int, deadline: float) -> int:
    """Poll the store until ``count`` deliveries are in ``status`` or ``deadline`` (perf_counter) passes."""
    while (reached := _count_in(server, status)) < count and time.perf_counter() < deadline:
        time.sleep(POLL_SECONDS)
    return reached


def _count_in(server: Server, status: str) -> int:
    return int(query_rows(server.database, "SELECT count(*) FROM deliveries WHERE status = ?", (status,))[0][0])


def bulk_sizes(total: int) -> list[int]:
    """``total`` rows cut into bulk requests the server accepts."""
    return [min(BULK_ROWS, total - start) for start in range(0, total, BULK_ROWS)]


@dataclass
class DispatchRun:
    """One ``tidings serve`` at one dispatch concurrency: the bulk drain, then the trickle."""

    concurrency: int | None  # None: the server's default
    accepted: int = 0
    sent: int = 0  # bulk deliveries ``sent`` in the store
    received: int = 0  # bulk deliveries the receiver got
    elapsed: float = math.nan  # just before the bulk request → the receiver's last arrival of the bulk
    calls: int = 0  # provider calls the receiver saw during the bulk drain
    calls_span: float = math.nan  # from the first of them to the last
    connections: int = 0  # distinct client ports the receiver saw during the bulk drain
    server_cpu: float = 0.0  # CPU seconds tidings used from the first bulk request to the last send
    delays: list[float] = field(default_factory=list)  # trickle: created_at → provider call, seconds
    trickle_sent: int = 0
    trickle_refused: int = 0

    @property
    def label(self) -> str:
        return "default" if self.concurrency is None else str(self.concurrency)

    @property
    def complete(self) -> bool:
        return self.accepted > 0 and self.received >= self.accepted

    @property
    def rate(self) -> float:
        return self.received / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def call_rate(self) -> float:
        return self.calls / self.calls_span if self.calls_span > 0 else 0.0

    @property
    def cpu_per_delivery_us(self) -> float:
        return self.server_cpu / self.sent * 1e6 if self.sent else math.nan

    def delay_ms(self, percent: int) -> float:
        if len(self.delays) < 2:
            return math.nan
        return statistics.quantiles(self.delays, n=100, method="inclusive")[percent - 1] * 1000

    def describe(self) -> str:
        return (
            f"concurrency {self.label}: {self.received:,}/{self.accepted:,} received, all after {self.elapsed:.2f}s; "
            f"trickle {self.trickle_sent} sent, {self.trickle_refused} refused; max delay "
            f"{max(self.delays, default=math.nan) * 1000:.1f} ms"
        )


def measure_dispatch(rows: int = BULK_ROWS) -> list[DispatchRun]:
    with receiver_server() as receiver:
        return [_measure_one(receiver, concurrency, rows) for concurrency in CONCURRENCIES]


def _measure_one(receiver: Server, concurrency: int | None, deliveries: int) -> DispatchRun:
    run = DispatchRun(concurrency)
    hook = receiver.base_url + f"/hook/c{run.label}"
    env = {} if concurrency is None else {"TIDINGS_DISPATCH_CONCURRENCY": str(concurrency)}
    with tidings_server(env, live_key=True) as server:
        assert server.live_key is not None
        headers = HEADERS | {"X-API-Key": server.live_key}
        started, cpu = time.time(), server.cpu_seconds()
        run.accepted, _ = accept_in_bulk(server, [webhook_bulk_body(hook, rows) for rows in bulk_sizes(deliveries)], headers)
        run.sent = wait_for_status(server, "sent", run.accepted, time.perf_counter() + DELIVERY_TIMEOUT)
        run.server_cpu = server.cpu_seconds() - cpu
        trickle, run.trickle_refused = asyncio.run(trickle_sends(server.base_url + SEND_PATH, headers, hook))
        expected = run.sent + len(trickle)
        run.trickle_sent = wait_for_status(server, "sent", expected, time.perf_counter() + DELIVERY_TIMEOUT) - run.sent
        created = dict(query_rows(server.database, _CREATED_AT))
    _record_arrivals(run, fetch_arrivals(receiver), created, set(trickle), started)
    return run


_CREATED_AT = "SELECT d.id, n.created_at FROM deliveries d JOIN notifications n ON n.id = d.notification_id"


def webhook_bulk_body(hook: str, rows: int) -> dict:
    return {"channels": ["webhook"], "body": "bench delivery", "recipients": [{"url": hook} for _ in range(rows)]}


async def trickle_sends(url: str, headers: Mapping[str, str], hook: str) -> tuple[list[str], int]:
    """Single sends at ``TRICKLE_RATE``/s on a fixed schedule (open loop); delivery ids accepted, refusals."""
    body = orjson.dumps({"recipient": {"url": hook}, "notification": {"channels": ["webhook"], "body": "bench trickle"}})
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=10)) as session:
        start, sends = loop.time(), []
        for i in range(round(TRICKLE_RATE * TRICKLE_SECONDS)):
            await asyncio.sleep(max(0.0, start + i / TRICKLE_RATE - loop.time()))
            sends.append(asyncio.ensure_future(_send_one(session, url, body)))
        answers = await asyncio.gather(*sends)
    accepted = [delivery_id for delivery_id in answers if delivery_id is not None]
    return accepted, len(answers) - len(accepted)


async def _send_one(session: aiohttp.ClientSession, url: str, body: bytes) -> str | None:
    try:
        async with session.post(url, data=body) as response:
            if response.status != 202:
                return None
            reply = await response.json()
            return str(reply["deliveries"][0]["delivery_id"])
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return None


def fetch_arrivals(receiver: Server) -> dict[str, tuple[float, int]]:
    """delivery id → (unix time of its first provider call, client port), from the receiver."""
    with urllib.request.urlopen(receiver.base_url + "/arrivals", timeout=30.0) as response:
        first: dict[str, list[float]] = orjson.loads(response.read())["first"]
    return {delivery_id: (at, int(port)) for delivery_id, (at, port) in first.items()}


def _record_arrivals(
    run: DispatchRun, arrivals: Mapping[str, tuple[float, int]], created: Mapping[str, float], trickle: set[str], started: float
) -> None:
    bulk = [arrivals[d] for d in created if d not in trickle and d in arrivals]
    if bulk:
        times = [at for at, _port in bulk]
        run.received, run.elapsed = len(times), max(times) - started
        run.calls, run.calls_span = len(times), max(times) - min(times)
        run.connections = len({port for _at, port in bulk})
    run.delays = [arrivals[d][0] - created[d] for d in trickle if d in arrivals and d in created]


@dataclass
class SingleSends:
    """``SINGLE_SENDS`` single webhook sends at ``SINGLE_CONNECTIONS`` clients, to the last arrival."""

    load: LoadResult | None = None
    accepted: int = 0  # deliveries in the store (wrk stops after SINGLE_SENDS answers; a few more were in flight)
    received: int = 0  # of them, how many the receiver got
    elapsed: float = math.nan  # just before wrk started → the receiver's last arrival
    server_cpu: float = 0.0  # CPU seconds tidings used over the same span (to all sent)

    @property
    def rate(self) -> float:
        return self.received / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def complete(self) -> bool:
        return self.accepted > 0 and self.received >= self.accepted

    def describe(self) -> str:
        load = self.load.describe() if self.load else "no load"
        return (f"{load}; {self.received:,}/{self.accepted:,} received, the last {self.elapsed:.2f}s after the first send; "
                f"server CPU {self.server_cpu:.2f}s")


def measure_single_sends(receiver: Server) -> SingleSends:
    run = SingleSends()
    hook = receiver.base_url + "/hook/single"
    body = {"recipient": {"url": hook}, "notification": {"channels": ["webhook"], "body": "bench single send"}}
    with tidings_server(live_key=True) as server:
        assert server.live_key is not None
        headers = HEADERS | {"X-API-Key": server.live_key}
        time.sleep(0.5)  # start-up work settles
        started, cpu = time.time(), server.cpu_seconds()
        run.load = run_wrk(server.base_url + SEND_PATH, body, SINGLE_CONNECTIONS, DELIVERY_TIMEOUT, headers=headers, responses=SINGLE_SENDS)
        # Sends in flight when wrk stopped may commit a moment later: all done and no new row for 0.2 s is settled.
        for _ in range(10):
            wait_until_done(server.database, WEBHOOK_DONE, DELIVERY_TIMEOUT)
            if _settled(server):
                break
        run.server_cpu = server.cpu_seconds() - cpu
        ids = {row[0] for row in query_rows(server.database, "SELECT id FROM deliveries")}
    times = [at for delivery_id, (at, _port) in fetch_arrivals(receiver).items() if delivery_id in ids]
    run.accepted, run.received = len(ids), len(times)
    if times:
        run.elapsed = max(times) - started
    return run


def _settled(server: Server) -> bool:
    before = query_rows(server.database, "SELECT count(*) FROM deliveries")[0][0]
    time.sleep(0.2)
    return bool(query_rows(server.database, "SELECT count(*) FROM deliveries")[0][0] == before)


THROTTLE_RATE = 500.0  # per second, set on the demo-webhook instance
THROTTLE_ROWS = 10_000


@dataclass
class ThrottledDrain:
    """A 10,000-row bulk send through an instance limited to ``THROTTLE_RATE``/s."""

    configured: float
    accepted: int = 0
    sent: int = 0
    rate: float = math.nan  # calls after the initial burst, per second of their span
    busiest_second: int = 0  # most provider calls in any one-second window

    @property
    def ceiling(self) -> float:
        """Most calls any one second may see: a full bucket plus a second's refill, plus 3% for
        arrivals the network bunches up on their way to the receiver."""
        return 2 * self.configured * 1.03

    @property
    def exact(self) -> bool:
        """At the configured pace (within 3%) and never above the ceiling in any second."""
        return abs(self.rate - self.configured) <= 0.03 * self.configured and self.busiest_second <= self.ceiling


def measure_throttled_drain(receiver: Server) -> ThrottledDrain:
    """Bulk-accept ``THROTTLE_ROWS`` webhook sends with ``rate: 500/s`` on the instance; read the pace the receiver saw."""
    drain = ThrottledDrain(THROTTLE_RATE)
    hook = receiver.base_url + "/hook/throttled"
    with tidings_server({"TIDINGS_POLICY_RELOAD": "false"}, live_key=True, instance_rates={"demo-webhook": f"{THROTTLE_RATE:g}/s"}) as server:
        assert server.live_key is not None
        headers = HEADERS | {"X-API-Key": server.live_key}
        drain.accepted, _ = accept_in_bulk(server, [webhook_bulk_body(hook, rows) for rows in bulk_sizes(THROTTLE_ROWS)], headers)
        timeout = time.perf_counter() + drain.accepted / THROTTLE_RATE * 2 + DELIVERY_TIMEOUT
        drain.sent = wait_for_status(server, "sent", drain.accepted, timeout)
        ids = {row[0] for row in query_rows(server.database, "SELECT id FROM deliveries")}
    arrivals = fetch_arrivals(receiver)
    times = sorted(at for delivery_id, (at, _port) in arrivals.items() if delivery_id in ids)
    burst = int(THROTTLE_RATE)  # a full bucket holds one second's worth
    if len(times) > burst + 1:
        steady = times[burst:]
        drain.rate = (len(steady) - 1) / (steady[-1] - steady[0])
        drain.busiest_second = max(_calls_within(times, start, 1.0) for start in range(len(times)))
    return drain


def _calls_within(times: list[float], start: int, window: float) -> int:
    end = start
    while end < len(times) and times[end] - times[start] < window:
        end += 1
    return end - start
