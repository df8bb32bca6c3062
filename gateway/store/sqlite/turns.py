"""Taking work from several lanes in turns: one item per lane per turn, lanes in order from where the last take ended."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

Lane = tuple[str, str]
"""(tenant, mode): whose work, and in which world. A tenant's test traffic is a lane apart from its live traffic."""


def in_turns(lanes: Sequence[tuple[Lane, sqlite3.Cursor]], after: Lane | None, limit: int) -> list[Any]:
    """Up to ``limit`` rows from the lanes' cursors, one per lane per turn; the cursors are closed.

    Lanes go in order starting after ``after`` (the lane the caller's last take ended on; all
    in order when None), so when there are more lanes than ``limit`` the next take goes on with
    the lanes this one did not reach. A lane's cursor is read lazily: a backlog of millions in
    one lane costs what is taken from it.
    """
    ordered = sorted(lanes, key=lambda lane: (after is not None and lane[0] <= after, lane[0]))
    picked: list[Any] = []
    turn = list(ordered)
    while turn and len(picked) < limit:
        still = []
        for lane in turn:
            if len(picked) == limit:
                break
            row = lane[1].fetchone()
            if row is not None:
                picked.append(row)
                still.append(lane)
        turn = still
    for _lane, cursor in ordered:
        cursor.close()
    return picked
