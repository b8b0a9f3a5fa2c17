"""The change log: every write that changes an event records the event's id, in the same transaction, in
`changes`, whose sequence numbers readers follow from where they last read."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import anyio

from .connector import Connector, Transaction

# PostgreSQL hands out sequence numbers before commit, so a change can commit just after one numbered
# higher. A gap below the highest number read is looked for again for this long; after that it is taken
# for a rolled-back transaction, which leaves one for good.
GAP_SECONDS = 10.0
MAX_GAP = 10_000  # more numbers than transactions in flight at once could hold
CHANGE_COALESCE_SECONDS = 0.05  # a burst of commits reaches watchers as one set of ids
CHANGE_LOG_PRUNE_SECONDS = 600.0  # each watcher drops what it had read this long ago
# A change log line that is no event's id: an incident was opened or cleared (the incident log has what).
INCIDENT_CHANGE = "!incident"


class ChangeCursor:
    """Where one reader is in the change log: the highest number read, and the gaps below it."""

    def __init__(self, position: int) -> None:
        self.position = position
        self._gaps: dict[int, float] = {}  # number -> when it was first missed

    @property
    def read_after(self) -> int:
        """The number to read the log after: the lowest open gap's predecessor, or the position."""
        return min(self._gaps, default=self.position + 1) - 1

    def take(self, rows: Sequence[Sequence[Any]], now: float) -> set[str]:
        """The event ids in `rows` (seq, event_id), read after `read_after`, that this reader has not seen."""
        changed = set()
        for seq, event_id in rows:
            if seq > self.position:
                self._gaps.update(dict.fromkeys(range(max(self.position + 1, seq - MAX_GAP), seq), now))
                self.position = seq
                changed.add(event_id)
            elif self._gaps.pop(seq, None) is not None:
                changed.add(event_id)
        for seq, missed_at in list(self._gaps.items()):
            if now - missed_at > GAP_SECONDS:
                del self._gaps[seq]
        return changed


class ChangeLog:
    """The change log as this process follows it: watchers here hear of a commit made here at once, and of one made
    elsewhere when the database says so or its commit marker moves."""

    def __init__(self, db: Connector) -> None:
        self.db = db
        self._watchers: set[anyio.Event] = set()  # change watchers waiting in this process
        db.on_commit(self.committed)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[Transaction]:
        """A transaction that may change events (record_audit and record_change say which); watchers in this
        process hear of its commit at once."""
        async with self.db.transaction() as tx:
            yield tx
        self.committed()

    def committed(self) -> None:
        for wake in self._watchers:
            wake.set()

    @contextmanager
    def waking(self, wake: anyio.Event) -> Iterator[None]:
        """Set `wake` at the next commit made in this process (or announced by the database) while open."""
        self._watchers.add(wake)
        try:
            yield
        finally:
            self._watchers.discard(wake)

    async def change_marker(self) -> int:
        """The latest position in the change log: it moves whenever any event changes, in any process."""
        rows = await self.db.fetch("SELECT coalesce(max(seq), 0) FROM changes")
        return int(rows[0][0])

    async def watch_changes(self) -> AsyncIterator[set[str]]:
        """The ids of the events each commit from now on changed, made in this process or any other; a
        burst of commits comes as one set."""
        (last,) = await self.db.fetch("SELECT coalesce(max(seq), 0) FROM changes")
        cursor = ChangeCursor(int(last[0]))
        prune_upto, pruned_at = cursor.position, time.monotonic()
        while True:
            wake = anyio.Event()
            self._watchers.add(wake)
            try:
                marker = await self.db.commit_marker()  # taken before the read: a later commit moves it
                rows = await self.db.fetch(
                    "SELECT seq, event_id FROM changes WHERE seq > ? ORDER BY seq", cursor.read_after
                )
                if changed := cursor.take(rows, time.time()):
                    yield changed
                    await anyio.sleep(CHANGE_COALESCE_SECONDS)
                while not wake.is_set():
                    with anyio.move_on_after(self.db.poll_seconds):
                        await wake.wait()
                    if await self.db.commit_marker() != marker:
                        break
            finally:
                self._watchers.discard(wake)
            if time.monotonic() - pruned_at >= CHANGE_LOG_PRUNE_SECONDS:
                async with self.db.transaction() as tx:
                    # The newest line stays: on SQLite, numbers continue from the highest one left.
                    await tx.execute(
                        "DELETE FROM changes WHERE seq <= ? AND seq < (SELECT max(seq) FROM changes)", prune_upto
                    )
                prune_upto, pruned_at = cursor.position, time.monotonic()
