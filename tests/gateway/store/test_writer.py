"""The writer's background jobs: each commits alone, and jobs waiting beside one go first."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

from gateway.store.writer import GroupCommitWriter, connect


async def test_a_background_job_commits_alone_and_the_jobs_waiting_beside_it_go_before_the_next(tmp_path: Path) -> None:
    writer = GroupCommitWriter(connect(tmp_path / "w.sqlite3", "NORMAL"))
    writer.start()
    ran: list[tuple[str, int]] = []  # (job, the writer's batch count when it ran): one count, one transaction
    running, release = threading.Event(), threading.Event()

    def job(name: str, hold: bool = False) -> Callable[[sqlite3.Connection], None]:
        def run(_conn: sqlite3.Connection) -> None:
            ran.append((name, writer.batches))
            if hold:
                running.set()
                release.wait(5)

        return run

    first = asyncio.ensure_future(writer.run(job("purge 1", hold=True), background=True))
    await asyncio.to_thread(running.wait, 5)
    later = [
        asyncio.ensure_future(writer.run(job("purge 2"), background=True)),
        asyncio.ensure_future(writer.run(job("send a"))),
        asyncio.ensure_future(writer.run(job("send b"))),
        asyncio.ensure_future(writer.run(job("purge 3"), background=True)),
    ]
    await asyncio.sleep(0)  # every one of them is queued while the first purge holds the writer
    release.set()
    await asyncio.gather(first, *later)
    await writer.stop()

    order = [name for name, _batch in ran]
    assert order == ["purge 1", "send a", "send b", "purge 2", "purge 3"]
    batch = dict(ran)
    assert batch["send a"] == batch["send b"], "the sends share a commit"
    assert len({batch["purge 1"], batch["send a"], batch["purge 2"], batch["purge 3"]}) == 4, "each purge commits alone"


async def test_stopping_finishes_the_background_jobs_asked_for(tmp_path: Path) -> None:
    writer = GroupCommitWriter(connect(tmp_path / "w.sqlite3", "NORMAL"))
    writer.start()
    done = [asyncio.ensure_future(writer.run(lambda conn: conn.execute("SELECT 1").fetchone()[0], background=True)) for _ in range(3)]
    await asyncio.sleep(0)
    await writer.stop()
    assert [await job for job in done] == [1, 1, 1]
