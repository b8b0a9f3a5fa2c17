"""The Store interface: what the inbox needs from a database, in the inbox's own words."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from ..errors import Claimed
from ..events import IncomingEvent, format_amount
from ..models import (
    AuditEntry,
    Classification,
    DeliveryStatus,
    EventState,
    EventSummary,
    Notification,
    Outcome,
    Priority,
    Status,
    Ticket,
    utc,
)

AddOutcome = Literal["stored", "duplicate"]
EventKind = Literal["snapshot", "thin"]
DeliveryKind = Literal["notification", "ticket"]


@dataclass(frozen=True, slots=True)
class StoredEvent:
    seq: int
    id: str
    type: str
    created: int
    livemode: bool
    customer: str | None
    account: str | None
    object_id: str | None
    amount: int | None
    currency: str | None
    payload: bytes
    status: Status
    received_at: float
    last_delivery_at: float
    deliveries: int
    acked_at: float | None
    outcome: Outcome | None
    note: str | None
    classification: str | None
    kind: EventKind
    related_object: dict[str, Any] | None
    claimed_by: str | None  # the agent holding a lease on it, until claim_expires_at
    claim_expires_at: float | None

    def body(self) -> dict[str, Any]:
        return json.loads(self.payload)

    def summary(self) -> EventSummary:
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


@dataclass(frozen=True, slots=True)
class EventQuery:
    status: Status | None = "pending"
    type: str | None = None
    customer: str | None = None
    account: str | None = None
    limit: int = 20
    after: int | None = None  # keyset cursor: the seq of the last event already seen
    newest_first: bool = False


class Store(Protocol):
    async def add_events(self, events: Sequence[IncomingEvent], received_at: float) -> list[AddOutcome]:
        """Insert each new event, or count one more delivery of a known one, in one durable transaction."""
        ...

    async def get_event(self, event_id: str) -> StoredEvent | None: ...

    async def list_events(self, query: EventQuery) -> list[StoredEvent]: ...

    async def count_events(self, query: EventQuery) -> int: ...

    async def ack(
        self, event_id: str, outcome: Outcome, note: str | None, at: float, audit: Audit, holder: str | None = None
    ) -> tuple[StoredEvent, bool]:
        """Ack a pending event; an acked event is returned unchanged. True when this call acked it.
        With a `holder` (an agent), an event another agent holds a live claim on is refused (Claimed);
        without one (an operator) the ack goes through."""
        ...

    async def claim_events(self, holder: str, limit: int, lease_seconds: float, now: float) -> list[StoredEvent]:
        """Lease up to `limit` pending events, oldest first, that no agent holds a live claim on, to
        `holder` until now + lease_seconds. Two callers never get the same event; a lapsed lease frees it."""
        ...

    async def set_classification(
        self, event_id: str, classification: Classification, at: float, audit: Audit
    ) -> None: ...

    async def add_ticket(
        self, event_id: str, title: str, body: str, priority: Priority, tracker: str | None, at: float, audit: Audit
    ) -> tuple[Ticket, bool]:
        """Create the ticket (queued for `tracker` if given), or return the one this event already has with
        this title (False)."""
        ...

    async def add_notification(
        self,
        channel: str,
        message: str,
        subject: str | None,
        recipient: str | None,
        event_id: str | None,
        idempotency_key: str,
        at: float,
        audit: Audit,
    ) -> tuple[Notification, bool]:
        """Queue a notification, or return the one already made with this idempotency key (False)."""
        ...

    async def claim_deliveries(
        self, now: float, lease_seconds: float, limit: int, of: tuple[DeliveryKind, int] | None = None
    ) -> list[Delivery]:
        """Take due deliveries (or the queued one `of` a notification or ticket) for `lease_seconds`;
        a lease that lapses frees them again."""
        ...

    async def finish_delivery(
        self,
        delivery: Delivery,
        status: DeliveryStatus,
        reason: str | None,
        next_attempt_at: float | None,
        at: float,
        tracker_id: str | None = None,
        tracker_url: str | None = None,
    ) -> None:
        """Record an attempt's outcome; a final one (sent, failed) also goes into the audit trail."""
        ...

    async def next_delivery_at(self) -> float | None: ...

    async def notification(self, notification_id: int) -> Notification: ...

    async def ticket(self, ticket_id: int) -> Ticket: ...

    async def tickets(self, event_id: str) -> list[Ticket]: ...

    async def notifications(self, event_id: str) -> list[Notification]: ...

    async def audit_trail(self, event_id: str) -> list[AuditEntry]: ...

    async def counts(self) -> list[tuple[str, str, int]]:
        """(status, type, number of events) for every status and type present."""
        ...

    async def oldest_pending(self) -> float | None:
        """When the oldest pending event was received."""
        ...

    async def delivery_counts(self) -> dict[str, int]:
        """Outgoing actions by delivery status."""
        ...

    async def prune(self, acked_before: float) -> int: ...

    async def get_state(self, key: str) -> str | None:
        """A small named value the inbox keeps for itself (e.g. where a backfill got to)."""
        ...

    async def set_state(self, key: str, value: str | None) -> None: ...

    def watch_changes(self) -> AsyncIterator[set[str]]:
        """The ids of the events changed by each commit from now on, in any process (this one included);
        a burst of commits comes as one set."""
        ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...
