"""The change feed: every change to the inbox, made in this process or any other (serve replicas, the CLI, other
agents), handed to this process's waiters and consumers. The runtime follows the store's changes, once per
process; `wait_for_events`, the MCP subscriptions and the Claude channel read them here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import anyio

from .stores.changes import INCIDENT_CHANGE

if TYPE_CHECKING:
    from .stores import Store


class ChangeFeed:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._listeners: list[set[str]] = []  # what each `changes()` consumer has yet to take
        self.changed = anyio.Event()  # set, and replaced, at every change

    async def follow(self) -> None:
        """Hand every change in the store to the waiters and consumers, for ever: the changed events' ids to
        `changes()` consumers, and any change (an incident's too) to those waiting on `changed`."""
        async for changed in self.store.watch_changes():
            events = changed - {INCIDENT_CHANGE}
            for pending in self._listeners:
                pending.update(events)
            self.changed.set()
            self.changed = anyio.Event()

    async def changes(self) -> AsyncIterator[set[str]]:
        """The ids of the events changed since the last set this consumer took; needs `follow` running."""
        pending: set[str] = set()
        self._listeners.append(pending)
        try:
            while True:
                while not pending:
                    await self.changed.wait()
                changed = set(pending)
                pending.clear()
                yield changed
        finally:
            self._listeners.remove(pending)
