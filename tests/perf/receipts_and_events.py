"""Steps 10 and 11 of ``make bench`` alone, several times back to back: the medians of a noisy machine.

``python -m tests.perf.receipts_and_events --runs 5 [--only inbound|events]``. Each run starts
fresh servers; the receipts run needs wrk. Besides the rates it prints the server's CPU time
per callback and per event, which moves less than the rates when others share the machine.
"""

from __future__ import annotations

import argparse
import statistics

from tests.perf.events import measure_events
from tests.perf.inbound import measure_inbound
from tests.perf.servers import receiver_server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.perf.receipts_and_events", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", choices=["inbound", "events"])
    args = parser.parse_args(argv)
    acks: list[float] = []
    callback_cpu: list[float] = []
    events: list[float] = []
    event_cpu: list[float] = []
    for number in range(1, args.runs + 1):
        if args.only in (None, "inbound"):
            inbound = measure_inbound()
            print(f"run {number} receipts: {inbound.describe()}", flush=True)
            acks.append(inbound.ack_rate)
            callback_cpu.append(inbound.cpu_per_callback_us)
        if args.only in (None, "events"):
            with receiver_server() as receiver:
                run = measure_events(receiver)
            print(f"run {number} events: {run.describe()}", flush=True)
            events.append(run.rate)
            event_cpu.append(run.cpu_per_event_us)
    if acks:
        print(f"receipts acknowledged/s: median {statistics.median(acks):,.0f} of {[round(a) for a in acks]}; "
              f"server CPU per callback: median {statistics.median(callback_cpu):,.0f} us")
    if events:
        print(f"event webhooks delivered/s: median {statistics.median(events):,.0f} of {[round(e) for e in events]}; "
              f"server CPU per event: median {statistics.median(event_cpu):,.0f} us")


if __name__ == "__main__":
    main()
