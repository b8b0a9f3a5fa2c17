"""The runtime: every background loop of a process that serves an inbox, started in one place and stopped with it.
`serve` (the web app's lifespan), `mcp` (serve_stdio) and an embedding program start it the same way:

    async with Runtime(inbox).running():
        ...  # serve

The inbox's own loops always run (the change feed, the outbox, the forwarder, the search indexer, the MCP Events
webhook deliveries), and upkeep (alerts, approvals that lapse, retention) where asked; a face adds its own (the MCP
server tells its subscribers, the Claude channel pushes). Each runs under the inbox's supervisor: one that fails is
restarted alone, and /healthz names it meanwhile. Started twice in one process, a loop already running is not
started again."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager

import anyio

from .actions.forward import Forwarder
from .event_webhooks.delivery import WebhookDelivery
from .inbox import Inbox
from .upkeep import Upkeep

Loop = Callable[[], Awaitable[None]]


class Runtime:
    def __init__(self, inbox: Inbox, faces: Mapping[str, Loop] | None = None, *, upkeep: bool = True) -> None:
        """`faces`: the loops of the faces served, by name. `upkeep`: watch the inbox (`[alerts]`), lapse approvals
        and prune by `retention_days`, as `serve` does."""
        self.inbox = inbox
        self.faces = dict(faces or {})
        self.upkeep = upkeep

    def loops(self) -> dict[str, Loop]:
        inbox, settings = self.inbox, self.inbox.settings
        loops: dict[str, Loop] = {
            "changes": inbox.feed.follow,
            "outbox": inbox.outbox.run,
            "forwarder": Forwarder(inbox.store, settings.outbox, settings.forward, lambda: inbox.committing).run,
            "indexer": inbox.indexer.run,
            "event_webhooks": WebhookDelivery(inbox).run,
        }
        if self.upkeep:
            loops["upkeep"] = Upkeep(inbox).run
        return loops | self.faces

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Runtime]:
        """Every loop running, each under supervision, until the block ends."""
        async with anyio.create_task_group() as group:
            for name, loop in self.loops().items():
                group.start_soon(self.inbox.loops.supervise, name, loop)
            yield self
            group.cancel_scope.cancel()
