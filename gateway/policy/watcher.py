"""Hot reload: notice a change in the policy directory and put the new set in service.

:class:`PolicyWatcher` watches the directory with ``watchfiles`` (inotify on Linux), recursively
and without a filter: any event is worth a reload attempt, including a Kubernetes ConfigMap
update, which only re-points the hidden ``..data`` symlink the visible files link through.
Events are grouped (a quiet ``STEP_MS``, at most ``DEBOUNCE_MS``), the directory is loaded in a
worker thread so the event loop keeps serving, and then one of three things happens:

- the set is the one already served (same version, same secret values): nothing is swapped
  or rebuilt, and an earlier rejection is forgotten;
- it does not validate: the last good set keeps serving, and the holder records the error
  (``/readyz`` shows it) and the log gets one line per issue;
- it is valid: ``switch`` (:class:`gateway.engine.switch.PolicySwitch` in the app) puts it in
  service — provider instances, policy and dispatcher channels — in one step without an
  ``await`` inside, so no request or delivery ever sees half of it. A request keeps the set it
  read when it started.

Reloads run one at a time; ``reload()`` is also the explicit way in (SIGHUP, tests).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Final

from watchfiles import awatch

from gateway.errors import PolicyError, PolicyIssue
from gateway.policy.view import PolicyHolder, PolicySet

log = logging.getLogger(__name__)
STEP_MS: Final = 20  # reload once the directory has been quiet this long...
DEBOUNCE_MS: Final = 500  # ...or a burst of changes has gone on this long
CATCH_UP_SECONDS: Final = 0.5  # after start, off the start-up path: changes made before the watch opened


class PolicyWatcher:
    """Reloads the policy directory when it changes (once started) and when asked."""

    def __init__(
        self,
        directory: Path,
        loader: Callable[[], PolicySet],
        policies: PolicyHolder,
        switch: Callable[[PolicySet], None] | None = None,
        observe: Callable[[bool], None] | None = None,
    ) -> None:
        """``observe`` hears of each reload that changed the set served (True) or was refused (False): the metrics."""
        self._directory = directory
        self._observe = observe or _unobserved
        self._loader = loader
        self._policies = policies
        self._switch = switch or policies.swap
        self._lock = asyncio.Lock()
        self._attempted = asyncio.Condition()
        self._stop = asyncio.Event()
        self._watching: asyncio.Task[None] | None = None
        self._catch_up: asyncio.TimerHandle | None = None
        self._requested: set[asyncio.Task[bool]] = set()
        self.attempts = 0
        """Reload attempts finished so far, whatever their outcome."""

    @property
    def watching(self) -> bool:
        """Whether changes on disk are being watched (``policy_reload``); without it only SIGHUP reloads."""
        return self._watching is not None and not self._watching.done()

    async def start(self) -> None:
        """Watch the directory from now on, and soon catch up on changes made since it was loaded."""
        self._watching = asyncio.create_task(self._watch(), name="policy-watcher")
        # awatch opens its inotify watch before its first await, so one step of the task is enough.
        await asyncio.sleep(0)
        self._catch_up = asyncio.get_running_loop().call_later(CATCH_UP_SECONDS, self.request_reload)

    async def stop(self) -> None:
        """Stop watching (within one step) and let a reload that is under way finish."""
        self._stop.set()
        if self._catch_up is not None:
            self._catch_up.cancel()
        if self._watching is not None:
            await self._watching
        await asyncio.gather(*self._requested, return_exceptions=True)

    def request_reload(self) -> None:
        """Reload soon, in the background (a signal handler cannot await); ignored once stopped."""
        if self._stop.is_set():
            return
        task = asyncio.create_task(self.reload(), name="policy-reload")
        self._requested.add(task)
        task.add_done_callback(self._requested.discard)

    async def reload(self) -> bool:
        """Load the directory now and switch to it if it is valid and new; True if it switched."""
        async with self._lock:
            try:
                return await self._reload()
            finally:
                async with self._attempted:
                    self.attempts += 1
                    self._attempted.notify_all()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` holds, checking it again after every reload attempt."""
        async with self._attempted:
            await self._attempted.wait_for(predicate)

    async def _watch(self) -> None:
        try:
            async for changes in awatch(
                self._directory, watch_filter=None, step=STEP_MS, debounce=DEBOUNCE_MS, stop_event=self._stop, recursive=True
            ):
                log.debug("policy directory changed: %s", ", ".join(sorted(path for _change, path in changes)))
                await self.reload()
        except Exception:
            log.exception("watching %s failed; policy changes now need SIGHUP or a restart", self._directory)

    async def _reload(self) -> bool:
        current = self._policies.current
        try:
            new = await asyncio.to_thread(self._loader)
        except PolicyError as err:
            self._reject(err, current)
            return False
        except Exception as err:  # a loader bug or an unreadable directory: still not worth dying for
            log.exception("loading policies from %s failed", self._directory)
            issue = PolicyIssue(str(self._directory), "", f"could not load the policy directory ({type(err).__name__}); see the log")
            self._reject(PolicyError([issue]), current)
            return False
        if _same(new, current):
            self._policies.clear_error()
            return False
        try:
            self._switch(new)
        except PolicyError as err:
            self._reject(err, current)
            return False
        self._observe(True)
        log.info("policies reloaded: version %s -> %s from %d files", current.version, new.version, len(new.files))
        for warning in sorted(set(new.simulated_live_routes()) - set(current.simulated_live_routes())):
            log.warning("%s", warning)
        return True

    def _reject(self, error: PolicyError, serving: PolicySet) -> None:
        self._policies.reject(error)
        self._observe(False)
        log.warning("policy change rejected, still serving version %s; %d problem(s):", serving.version, len(error.issues))
        for issue in error.issues:
            log.warning("%s", issue)


def _unobserved(_changed: bool) -> None:
    """Nobody counts reloads (a watcher built outside the app)."""


def _same(new: PolicySet, current: PolicySet) -> bool:
    """Whether ``new`` is the set already served.

    The version hashes the policy files only; comparing the resolved documents too means a
    rotated ``$file`` secret (a change the watch sees) still reaches the instances that use it.
    """
    return new.version == current.version and new.document == current.document
