"""Run the whole suite many times, several at once, to show it is green every time.

``make soak-test`` runs ``make test``'s pytest 20 times, two at a time, which on a 2-core
machine is as loaded as a CI runner gets. Every run's output is kept under ``--logs``; a
failed run's last lines are printed, and the exit status is 1 if any run failed::

    python -m tests.soak [--runs 20] [--parallel 2] [--logs soak-logs]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass
from pathlib import Path

SUITE = ("tests", "examples/tidings-ntfy/tests")


@dataclass(frozen=True)
class Run:
    number: int
    code: int
    seconds: float
    summary: str
    log: Path


async def run_suite(number: int, logs: Path) -> Run:
    log = logs / f"run-{number:02d}.log"
    started = time.monotonic()
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(sys.executable, "-m", "pytest", "-q", *SUITE, stdout=out, stderr=out)
        code = await process.wait()
    lines = log.read_text(errors="replace").strip().splitlines()
    return Run(number, code, time.monotonic() - started, lines[-1] if lines else "(no output)", log)


async def soak(runs: int, parallel: int, logs: Path) -> list[Run]:
    logs.mkdir(parents=True, exist_ok=True)
    slots = asyncio.Semaphore(parallel)

    async def one(number: int) -> Run:
        async with slots:
            run = await run_suite(number, logs)
        print(f"run {run.number:2d}: {'ok  ' if run.code == 0 else 'FAIL'} {run.seconds:5.0f} s  {run.summary}", flush=True)
        return run

    return list(await asyncio.gather(*(one(number) for number in range(1, runs + 1))))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--logs", type=Path, default=Path("soak-logs"))
    args = parser.parse_args(argv)
    started = time.monotonic()
    results = asyncio.run(soak(args.runs, args.parallel, args.logs))
    failed = [run for run in results if run.code != 0]
    for run in failed:
        tail = run.log.read_text(errors="replace").strip().splitlines()[-15:]
        print(f"\n--- run {run.number} failed (whole log: {run.log}) ---", *tail, sep="\n")
    minutes = (time.monotonic() - started) / 60
    print(f"\n{len(results) - len(failed)} of {len(results)} runs passed, {args.parallel} at a time, in {minutes:.1f} min")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
