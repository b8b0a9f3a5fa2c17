"""What `serve` does for the inbox on its own while it runs: watch itself (`[alerts]`), lapse approvals no one
answered, and prune acked events past `retention_days` once a day. Several replicas may run it: the alerts
and the daily prune are claimed in the store, so each happens once."""

from __future__ import annotations

import logging
import time

import anyio

from .alerts import Alerts
from .errors import InboxError
from .inbox import Inbox
from .stores import Audit

log = logging.getLogger("stripe_inbox.upkeep")
DEFAULT_INTERVAL_SECONDS = 60.0
RETENTION_EVERY_SECONDS = 86400.0
RETENTION_TURN = "retention_pruned_at"
UNUSED_OAUTH_CLIENT_SECONDS = 86400.0  # a dynamic registration that bought no token in a day is forgotten


class Upkeep:
    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox
        settings = inbox.settings
        self.alerts = Alerts(inbox, settings.alerts) if settings.alerts is not None else None
        self.interval = settings.alerts.check_seconds if settings.alerts is not None else DEFAULT_INTERVAL_SECONDS

    async def run(self) -> None:
        while True:
            try:
                await self.once()
            except InboxError as error:  # the store down for a while, say: the next pass tries again
                log.warning("upkeep: %s; retrying", error)
            await anyio.sleep(self.interval)

    async def once(self) -> None:
        await self.inbox.approvals.lapse()
        if self.alerts is not None:
            await self.alerts.check()
        await self.retain()
        await self.forget_unused_oauth_clients()

    async def retain(self, now: float | None = None) -> int | None:
        """Prune acked events older than `retention_days`, if it is this process's turn today; how many."""
        days = self.inbox.settings.retention_days
        now = time.time() if now is None else now
        if days is None or not await self.inbox.store.claim_turn(RETENTION_TURN, now, RETENTION_EVERY_SECONDS):
            return None
        deleted = await self.inbox.store.prune(
            now - days * 86400, Audit("retention", "prune", {"retention_days": days})
        )
        log.info("retention: pruned %d acked events older than %g days", deleted, days)
        return deleted

    async def forget_unused_oauth_clients(self, now: float | None = None) -> int:
        """Prune OAuth registrations older than a day that never got a token; how many."""
        now = time.time() if now is None else now
        pruned = await self.inbox.store.prune_oauth_clients(now - UNUSED_OAUTH_CLIENT_SECONDS)
        if pruned:
            log.info("oauth: forgot %d client registrations unused for a day", pruned)
        return pruned
