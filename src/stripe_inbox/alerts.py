"""The inbox watching itself: conditions checked by `serve`, each an incident that alerts the `[alerts]` channel
once when it opens and once when it clears. The incident's row in the store is the claim, so of several
replicas exactly one alerts; opening and clearing are in the audit trail."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Protocol

from .errors import InboxError
from .inbox import Inbox
from .settings import AlertSettings
from .stores import Audit

log = logging.getLogger("stripe_inbox.alerts")
ACTOR = "alerts"


@dataclass(frozen=True, slots=True)
class Finding:
    """What an open incident is about, in a sentence for the operator."""

    detail: str


class Condition(Protocol):
    name: str

    async def check(self, inbox: Inbox, now: float) -> Finding | None:
        """A Finding while the incident is open, else None."""
        ...


@dataclass(frozen=True, slots=True)
class OldestPending:
    """No agent is working the inbox: the oldest pending event has waited too long."""

    minutes: float
    name: str = "oldest_pending"

    async def check(self, inbox: Inbox, now: float) -> Finding | None:
        oldest = await inbox.store.oldest_pending()
        if oldest is None or now - oldest <= self.minutes * 60:
            return None
        waited = (now - oldest) / 60
        return Finding(
            f"the oldest pending event has waited {waited:.1f} minutes (over {self.minutes:g}): is an agent "
            "working the inbox?"
        )


@dataclass(frozen=True, slots=True)
class FailedActions:
    """A notification, ticket or forward ended failed lately; open until none has for the window."""

    window_minutes: float
    name: str = "failed_actions"

    async def check(self, inbox: Inbox, now: float) -> Finding | None:
        failed = await inbox.store.failed_deliveries(now - self.window_minutes * 60)
        if not failed:
            return None
        kind, target, reason = failed[0]
        return Finding(
            f"outgoing actions ended failed in the last {self.window_minutes:g} minutes; the latest: a {kind} to "
            f"{target!r}: {reason or 'no reason given'}"
        )


@dataclass(frozen=True, slots=True)
class PausedForwards:
    """A `[[forward]]` destination failed so often in a row that forwarding to it is paused."""

    name: str = "paused_forwards"

    async def check(self, inbox: Inbox, now: float) -> Finding | None:
        _, health = await inbox.store.forward_schedule()
        paused = sorted(name for name, state in health.items() if state.paused_until is not None)
        if not paused:
            return None
        return Finding(f"forwarding is paused after repeated failures to: {', '.join(paused)}")


def conditions(settings: AlertSettings) -> list[Condition]:
    chosen: list[Condition] = []
    if settings.oldest_pending_minutes is not None:
        chosen.append(OldestPending(settings.oldest_pending_minutes))
    if settings.failed_actions:
        chosen.append(FailedActions(settings.failed_actions_window_minutes))
    chosen.append(PausedForwards())
    return chosen


class Alerts:
    def __init__(self, inbox: Inbox, settings: AlertSettings) -> None:
        self.inbox = inbox
        self.settings = settings
        self.conditions = conditions(settings)

    async def check(self, now: float | None = None) -> None:
        """One pass: open the incidents now found, clear those no longer found, alerting for each change."""
        now = time.time() if now is None else now
        store = self.inbox.store
        already = await store.incidents()
        for condition in self.conditions:
            finding = await condition.check(self.inbox, now)
            if finding is not None and condition.name not in already:
                audit = Audit(ACTOR, "alert_opened", {"incident": condition.name})
                if await store.open_incident(condition.name, finding.detail, now, audit):
                    await self._alert(f"stripe-inbox alert: {finding.detail}", f"{condition.name}:{now}:opened")
            elif finding is None and condition.name in already:
                audit = Audit(ACTOR, "alert_cleared", {"incident": condition.name})
                opened_at = await store.close_incident(condition.name, now, audit)
                if opened_at is not None:
                    minutes = (now - opened_at) / 60
                    detail = already[condition.name][1]
                    await self._alert(
                        f"stripe-inbox alert cleared after {minutes:.1f} minutes: {detail}",
                        f"{condition.name}:{opened_at}:cleared",
                    )

    async def _alert(self, message: str, key: str) -> None:
        try:
            await self.inbox.notify(self.settings.channel, message, None, "stripe-inbox alert", ACTOR, f"alert:{key}")
        except InboxError as error:
            log.warning("alerts: could not alert %s: %s", self.settings.channel, error)
