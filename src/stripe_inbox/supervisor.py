"""Background loops kept apart: each runs under supervision, so an unexpected exception in one is logged and that
loop alone is restarted after a bounded backoff, while the others and the server go on. `/healthz` reports the
loops that are down or crash-looping."""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio

log = logging.getLogger("stripe_inbox.supervisor")

FIRST_BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 60.0
# A restarted loop counts as healthy again once it has run this long without failing.
STABLE_SECONDS = 60.0


@dataclass(slots=True)
class LoopHealth:
    """How one supervised loop fares."""

    name: str
    crashes: int = 0  # in a row: a run of STABLE_SECONDS or longer starts the count afresh
    error: str | None = None  # the type of the last failure only: its message may hold data or a secret
    restarting: bool = False  # waiting out its backoff
    restarted_at: float | None = None  # monotonic

    def healthy(self, now: float, stable_seconds: float) -> bool:
        if self.restarting:
            return False
        return self.restarted_at is None or self.crashes == 0 or now - self.restarted_at >= stable_seconds


class Supervisor:
    def __init__(
        self,
        first_backoff: float = FIRST_BACKOFF_SECONDS,
        max_backoff: float = MAX_BACKOFF_SECONDS,
        stable_seconds: float = STABLE_SECONDS,
    ) -> None:
        self.first_backoff = first_backoff
        self.max_backoff = max_backoff
        self.stable_seconds = stable_seconds
        self.loops: dict[str, LoopHealth] = {}
        self._running: set[str] = set()

    async def supervise(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        """Run `run` for ever: whenever it fails (or returns, which a loop should never do), log it and start it
        again after a backoff that doubles with each failure in a row, up to `max_backoff`. One loop runs under
        each name: asked to start another while it runs (the runtime started twice in one process), this returns
        at once."""
        if name in self._running:
            log.debug("background loop %s runs already", name)
            return
        self._running.add(name)
        try:
            await self._keep_running(name, run)
        finally:
            self._running.discard(name)

    async def _keep_running(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        health = self.loops.setdefault(name, LoopHealth(name))
        while True:
            started = time.monotonic()
            try:
                await run()
                failure = "returned"
                log.error("background loop %s ended on its own", name)
            except Exception as error:  # cancellation is a BaseException: stopping the server still stops it
                cause = _innermost(error)
                failure = type(cause).__name__
                # Where it failed, without the message: that may hold an event's data or a URL with a secret.
                where = "".join(traceback.format_tb(cause.__traceback__))
                log.error("background loop %s failed: %s, raised at\n%s", name, failure, where.rstrip())
            if time.monotonic() - started >= self.stable_seconds:
                health.crashes = 0
            health.crashes += 1
            health.error = failure
            backoff = min(self.first_backoff * 2 ** (health.crashes - 1), self.max_backoff)
            log.warning("background loop %s: restarting in %g s (failure %d in a row)", name, backoff, health.crashes)
            health.restarting = True
            await anyio.sleep(backoff)
            health.restarting, health.restarted_at = False, time.monotonic()

    def unhealthy(self) -> list[LoopHealth]:
        """The loops down (waiting to restart) or restarted too recently to trust, by name."""
        now = time.monotonic()
        return sorted(
            (health for health in self.loops.values() if not health.healthy(now, self.stable_seconds)),
            key=lambda health: health.name,
        )


def _innermost(error: Exception) -> Exception:
    """The one exception a task group wrapped (a loop with tasks of its own fails as a group of one)."""
    while isinstance(error, ExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error
