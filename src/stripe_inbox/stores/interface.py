"""The shapes the store speaks in: a stored event, an audit note, an outgoing delivery (its query is filters.py's
EventQuery, derived from the filters)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import Claimed
from ..event_facts import with_facts
from ..events import format_amount, read_stored
from ..models import (
    Classification,
    EventState,
    EventSummary,
    Notification,
    Outcome,
    Status,
    Ticket,
    utc,
)
from ..resolution import Resolution

AddOutcome = Literal["stored", "duplicate"]
DeliveryKind = Literal["notification", "ticket"]


@with_facts(defaults=False)
class StoredEvent:
    """An event as the store holds it: the facts of event_facts.py, then what the inbox did with it."""

    seq: int
    status: Status
    received_at: float
    last_delivery_at: float
    deliveries: int
    acked_at: float | None
    outcome: Outcome | None
    note: str | None
    classification: str | None
    claimed_by: str | None  # the agent holding a lease on it, until claim_expires_at
    claim_expires_at: float | None

    def body(self) -> dict[str, Any]:
        return read_stored(self.payload, self.id, self.type)

    def related(self) -> dict[str, Any] | None:
        """What a thin event is about."""
        return None if self.related_object is None else json.loads(self.related_object)

    def summary(self, resolution: Resolution | None = None) -> EventSummary:
        return EventSummary(
            id=self.id,
            type=self.type,
            status=self.status,
            created=utc(self.created),
            received_at=utc(self.received_at),
            deliveries=self.deliveries,
            livemode=self.livemode,
            customer=self.customer,
            account=self.account,
            object_id=self.object_id,
            amount=None if self.amount is None or self.currency is None else format_amount(self.amount, self.currency),
            superseded_by=resolution.superseded_by if resolution else None,
            stale=resolution.stale if resolution else False,
        )

    def check_claim(self, holder: str | None, now: float) -> None:
        """Raise Claimed when an agent `holder` may not ack this event: another agent's lease is live.
        No holder (an operator) may always."""
        owner = self.claim_holder(now)
        if holder is not None and owner not in (None, holder):
            raise Claimed.by_another(self.id, owner, utc(self.claim_expires_at).isoformat())  # type: ignore[union-attr]

    def claim_holder(self, now: float) -> str | None:
        """The agent whose lease on this pending event has not lapsed."""
        live = self.status == "pending" and self.claim_expires_at is not None and self.claim_expires_at >= now
        return self.claimed_by if live else None

    def state(self, now: float) -> EventState:
        holder = self.claim_holder(now)
        return EventState(
            status=self.status,
            received_at=utc(self.received_at),
            last_delivery_at=utc(self.last_delivery_at),
            deliveries=self.deliveries,
            acked_at=utc(self.acked_at),
            outcome=self.outcome,
            note=self.note,
            claimed_by=holder,
            claimed_until=None if holder is None else utc(self.claim_expires_at),
        )

    def stored_classification(self) -> Classification | None:
        return None if self.classification is None else Classification.model_validate_json(self.classification)


@dataclass(frozen=True, slots=True)
class Audit:
    """Who changed something and how; the store writes it in the same transaction as the change."""

    actor: str
    action: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Delivery:
    """An outgoing action claimed from the outbox: a notification, or a ticket to forward."""

    id: int
    kind: DeliveryKind
    target: str  # the channel or tracker
    attempts: int  # counting the one now being made
    notification: Notification | None
    ticket: Ticket | None
    event: StoredEvent | None
