"""Batches of writes: coalesced, retried when the store is busy, and never stuck behind a bad item; callers waiting on their own write."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.engine.batching import Batcher, Coalescer


class Busy(Exception):
    pass


class Sink:
    def __init__(self, *, poison: set[int] = frozenset(), busy_times: int = 0) -> None:  # type: ignore[assignment]
        self.poison = poison
        self.busy_times = busy_times
        self.written: list[int] = []
        self.calls = 0

    async def flush(self, batch: list[int]) -> None:
        self.calls += 1
        if self.busy_times:
            self.busy_times -= 1
            raise Busy("database is locked")
        if self.poison & set(batch):
            raise TypeError("cannot serialise")
        self.written += batch


def batcher(sink: Sink) -> Batcher[int]:
    return Batcher(sink.flush, name="test", retryable=lambda error: isinstance(error, Busy), retry_pause=0)


async def test_items_added_together_are_written_in_one_flush_in_order() -> None:
    sink = Sink()
    queue = batcher(sink)
    for item in range(10):
        queue.add(item)
    await queue.drain()
    assert (sink.written, sink.calls) == (list(range(10)), 1)


async def test_a_busy_store_gets_the_whole_batch_again() -> None:
    sink = Sink(busy_times=2)
    queue = batcher(sink)
    for item in range(5):
        queue.add(item)
    await queue.drain()
    assert sink.written == list(range(5))


async def test_an_item_that_can_never_be_written_is_dropped_alone_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    sink = Sink(poison={6})
    queue = batcher(sink)
    for item in range(10):
        queue.add(item)
    await queue.drain()
    assert sink.written == [0, 1, 2, 3, 4, 5, 7, 8, 9]
    assert "dropping an item that cannot be written: int" in caplog.text


async def test_drain_returns_only_after_items_added_during_a_flush_are_written() -> None:
    """What settles a test (and a shutdown) must not return with work still queued behind a flush."""
    release, flushing = asyncio.Event(), asyncio.Event()
    written: list[int] = []

    async def flush(batch: list[int]) -> None:
        flushing.set()
        if not written:
            await release.wait()
        written.extend(batch)

    queue: Batcher[int] = Batcher(flush, name="test")
    queue.add(1)
    await flushing.wait()
    queue.add(2)
    queue.add(3)
    draining = asyncio.ensure_future(queue.drain())
    await asyncio.sleep(0)
    assert not draining.done(), "the first flush is still held"
    release.set()
    await asyncio.wait_for(draining, 5)
    assert written == [1, 2, 3]


async def test_an_item_is_settled_once_its_batch_is_written_even_after_a_busy_retry() -> None:
    sink = Sink(busy_times=1)
    queue = batcher(sink)
    assert (queue.add(1), queue.add(2)) == (1, 2)
    assert queue.settled_through == 0, "nothing is written before the flush runs"
    await queue.drain()
    assert (sink.written, sink.calls, queue.settled_through) == ([1, 2], 2, 2)
    assert queue.add(3) == 3
    await queue.drain()
    assert (sink.written, queue.settled_through) == ([1, 2, 3], 3)


class HeldSink(Sink):
    """A sink whose first write waits for ``release``: what arrives meanwhile piles up behind it."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.writing, self.release = asyncio.Event(), asyncio.Event()
        self.batches: list[list[int]] = []

    async def flush(self, batch: list[int]) -> None:
        self.batches.append(list(batch))
        self.writing.set()
        if len(self.batches) == 1:
            await self.release.wait()
        await super().flush(batch)


def coalescer(sink: Sink) -> Coalescer[int]:
    return Coalescer(sink.flush, name="test", transient=lambda error: isinstance(error, Busy))


async def test_callers_arriving_together_share_one_write_and_each_returns_only_once_it_is_done() -> None:
    sink = HeldSink()
    writes = coalescer(sink)
    first = asyncio.ensure_future(writes.submit(0))
    await sink.writing.wait()
    rest = [asyncio.ensure_future(writes.submit(item)) for item in range(1, 6)]
    await asyncio.sleep(0)  # one turn of the loop: every caller has handed its item over
    assert not any(task.done() for task in [first, *rest]), "nobody is answered before the write holding its item is done"
    sink.release.set()
    await asyncio.wait_for(asyncio.gather(first, *rest), 5)
    assert sink.batches == [[0], [1, 2, 3, 4, 5]], "those that came during a write went together in the next"
    assert sink.written == [0, 1, 2, 3, 4, 5]


async def test_a_write_the_store_refused_fails_every_caller_in_it() -> None:
    sink = Sink(busy_times=1)
    writes = coalescer(sink)
    answers = await asyncio.gather(*(writes.submit(item) for item in range(3)), return_exceptions=True)
    assert [type(answer) for answer in answers] == [Busy, Busy, Busy]
    assert sink.written == []
    await writes.submit(3)
    assert sink.written == [3], "the next write goes through"


async def test_an_item_that_cannot_be_written_fails_its_own_caller_only() -> None:
    sink = Sink(poison={2})
    writes = coalescer(sink)
    answers = await asyncio.gather(*(writes.submit(item) for item in range(5)), return_exceptions=True)
    assert [type(answer).__name__ for answer in answers] == ["NoneType", "NoneType", "TypeError", "NoneType", "NoneType"]
    assert sink.written == [0, 1, 3, 4]
