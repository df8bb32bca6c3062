"""What every vendor fake does: serve on a free port of 127.0.0.1, let held requests go on stop, be waited on.

A fake subclasses :class:`LoopbackFake`, registers its vendor's routes in :meth:`add_routes`,
and serves with ``async with fake.serving():`` — ``fake.url`` is then its base URL. A handler
simulating a vendor that never answers awaits :meth:`held`, which returns when the fake
stops, so a test never hangs on a request the client has given up on. :class:`Watched` (which
every loopback fake is) lets a test wait, without sleeping, until the fake has seen something:
the fake calls ``_notify()`` whenever what it recorded changes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import ClassVar, Self

from aiohttp import web
from aiohttp.test_utils import TestServer


class Watched:
    def __init__(self) -> None:
        self._changed = asyncio.Event()

    async def wait_for(self, predicate: Callable[[Self], bool], timeout: float = 5.0) -> None:
        """Return once ``predicate(self)`` holds, re-checking at every change (at most ``timeout`` seconds)."""
        async with asyncio.timeout(timeout):
            while not predicate(self):
                await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()


class LoopbackFake(Watched):
    url_path: ClassVar[str] = ""
    """Path appended to the server's address to make :attr:`url` (a receiver's hook path)."""

    def __init__(self) -> None:
        super().__init__()
        self.url = ""
        self._stopping = asyncio.Event()

    def add_routes(self, router: web.UrlDispatcher) -> None:
        raise NotImplementedError(f"{type(self).__name__} must register its vendor's routes")

    async def held(self) -> None:
        """Wait until the fake stops: how a fake vendor takes a request and never answers it."""
        await self._stopping.wait()

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[Self]:
        app = web.Application()
        self.add_routes(app.router)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server(access_log=None)  # the vendor's log, not ours (it would show tokens in URLs)
        self.url = str(server.make_url(self.url_path)).rstrip("/")
        try:
            yield self
        finally:
            self._stopping.set()
            await server.close()
