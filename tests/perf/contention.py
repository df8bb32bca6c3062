"""How busy the rest of the machine was while a step ran: the bench's noise, measured.

On a shared 2-core machine another process's test run or benchmark takes CPU from the server
under test, and every figure drops with it. The machine's busy time (``/proc/stat``) minus this
process's and its waited-for children's (``os.times``: servers, wrk, py-spy, once stopped) is
what everything else used. A step's servers are stopped at its end, so measured from step start
to step end the difference is the others' share, in cores.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Mark:
    wall: float
    machine: float  # CPU seconds the whole machine was busy (user, nice, system, irq, softirq)
    ours: float  # CPU seconds of this process and its waited-for children

    @classmethod
    def now(cls) -> Mark:
        return cls(time.monotonic(), _machine_busy(), _ours())


def _machine_busy() -> float:
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return float("nan")
    user, nice, system, _idle, _iowait, irq, softirq = (int(f) for f in fields[:7])
    return (user + nice + system + irq + softirq) / _TICK


def _ours() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def others_cores(start: Mark, end: Mark | None = None) -> float:
    """Cores the rest of the machine kept busy on average between two marks."""
    end = end or Mark.now()
    wall = end.wall - start.wall
    if wall <= 0:
        return float("nan")
    return max(0.0, (end.machine - start.machine) - (end.ours - start.ours)) / wall
