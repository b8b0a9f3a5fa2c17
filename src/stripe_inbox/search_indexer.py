"""The search indexer: keeps the search index within a bounded lag of the inbox, off the path to the 200. A new
event is only queued by its insert; each process that serves indexes what is queued, in batches, within
INDEX_SECONDS. While the ingress is near what the machine can take, indexing gives way to it, but never for
longer than MAX_LAG_SECONDS. A read that needs the index first indexes what is queued, when that is little
(read_your_writes), so an agent woken by a new event finds it at once; only under sustained overload does a read
answer before the index holds every event, and then it says how many it lacks. Several processes may run it on
one inbox: each queued event is indexed once."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio
import anyio.to_process
import anyio.to_thread
from anyio import BrokenWorkerProcess

from .errors import StoreUnavailable
from .indexing import Findable, findables

if TYPE_CHECKING:
    from .stores import Store

log = logging.getLogger("stripe_inbox")
INDEX_BATCH = 500  # events indexed per write
INDEX_SECONDS = 0.5  # the lag of the search index while the ingress has room
MAX_LAG_SECONDS = 10.0  # the longest a busy ingress keeps an event from the index
BUSY_COMMITTING = 4  # deliveries waiting for their commit at once, on average: the ingress is busy
SAMPLE_SECONDS = 0.02  # how often that is looked at
PROGRESS_FROM = 20_000  # a backlog this large (an upgrade, a backfill) is indexed with progress in the log
PROGRESS_STEPS = 10
# A read indexes the queue itself when it holds no more than this (a few ms of work); past it the ingress is
# overloaded, and the read answers at once, with how many events the index lacks.
READ_CATCH_UP = 500


class SearchIndexer:
    def __init__(self, store: Store, committing: Callable[[], int] = lambda: 0) -> None:
        """`committing`: how many deliveries wait for their commit now (Inbox.committing)."""
        self.store = store
        self._committing = committing
        # The commands that serve (`serve`, `mcp`) set this: run() then reads what search knows of each event out
        # of its payload in a worker process, since on the event loop's own interpreter that Python work would
        # take the GIL from the ingress. Elsewhere (an inbox opened in another program, the tests) a thread does.
        self.in_worker_process = False
        self._worker: anyio.CapacityLimiter | None = None
        self._reading = anyio.Lock()  # readers share one catch-up: those that come meanwhile find the queue done

    async def run(self) -> None:
        """Index forever."""
        if self.in_worker_process:
            self._worker = anyio.CapacityLimiter(1)
        while True:
            busy = await self._busy_meanwhile()
            try:
                await self.once(busy)
            except (StoreUnavailable, BrokenWorkerProcess) as error:  # a worker that died is replaced next round
                log.warning("search index: %s; retrying", error)

    async def _busy_meanwhile(self) -> bool:
        """Wait INDEX_SECONDS; whether meanwhile several deliveries waited for their commit, on average."""
        samples = waiting = 0
        deadline = time.monotonic() + INDEX_SECONDS
        while time.monotonic() < deadline:
            await anyio.sleep(SAMPLE_SECONDS)
            samples, waiting = samples + 1, waiting + self._committing()
        return waiting >= BUSY_COMMITTING * samples

    async def once(self, busy: bool = False, now: float | None = None) -> int:
        """Index what is queued, unless the ingress is `busy` and nothing has waited MAX_LAG_SECONDS; how many."""
        if busy:
            oldest = await self.store.oldest_unindexed_at()
            if oldest is None or (time.time() if now is None else now) - oldest < MAX_LAG_SECONDS:
                return 0
        return await self.catch_up()

    async def catch_up(self) -> int:
        """Index the events queued now (not those that arrive meanwhile, so a round under load ends); how many."""
        backlog = await self.store.unindexed()
        announced = backlog >= PROGRESS_FROM
        if announced:
            log.info("indexing %s stored events for search", f"{backlog:,}")
        done, step, after = 0, max(backlog // PROGRESS_STEPS, 1), 0
        while done < backlog:
            # Past the last seq this round took: one that commits meanwhile with a lower seq waits for the next.
            queued = await self.store.queued_for_index(INDEX_BATCH, after)
            if not queued:
                break
            after = queued[-1][0]
            indexed = await self.store.index(await self._extract(queued))
            if announced and (done + indexed) // step > done // step:
                log.info("indexed %s of %s events", f"{min(done + indexed, backlog):,}", f"{backlog:,}")
            done += indexed
        return done

    async def read_your_writes(self) -> None:
        """Index every event queued now, when they are few (READ_CATCH_UP): what a search or a timeline reads
        next holds every event stored before this call."""
        async with self._reading:
            try:
                queued = await self.store.unindexed(at_most=READ_CATCH_UP + 1)
                if 0 < queued <= READ_CATCH_UP:
                    await self.index_batch(READ_CATCH_UP)
            except (StoreUnavailable, BrokenWorkerProcess) as error:  # the read still answers, saying what it lacks
                log.warning("search index: %s; this read answers without the newest events", error)

    async def index_batch(self, limit: int | None = None) -> int:
        """Index the oldest INDEX_BATCH (or `limit`) queued events; how many this process indexed."""
        queued = await self.store.queued_for_index(limit or INDEX_BATCH)
        if not queued:
            return 0
        return await self.store.index(await self._extract(queued))

    async def _extract(self, events: list[tuple[int, bytes]]) -> list[tuple[int, Findable]]:
        prefixed = self.store.db.dialect.text_prefixes
        if self._worker is None:
            return await anyio.to_thread.run_sync(findables, events, prefixed)
        return await anyio.to_process.run_sync(findables, events, prefixed, limiter=self._worker)
