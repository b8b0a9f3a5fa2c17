"""What the SQL stores share: the columns they select, how a row becomes a domain object, and how a
batch of deliveries becomes one upsert and its answers."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Sequence
from typing import Any, Protocol

from ..errors import StoreUnavailable
from ..events import IncomingEvent
from ..models import AuditEntry, DeliveryState, Notification, Ticket, utc
from .interface import AddOutcome, Audit, Delivery, StoredEvent

EVENT_COLUMNS = (
    "seq, id, type, created, livemode, customer, account, object_id, amount, currency, payload, status, "
    "received_at, last_delivery_at, deliveries, acked_at, outcome, note, classification, kind, related_object, "
    "claimed_by, claim_expires_at"
)
INSERTED_COLUMNS = (
    "id, type, created, livemode, customer, account, object_id, amount, currency, payload, "
    "received_at, last_delivery_at, kind, related_object, deliveries"
)
DELIVERY_COLUMNS = "d.target, d.status, d.attempts, d.reason, d.next_attempt_at, d.finished_at"
TICKET_SELECT = (
    "SELECT t.id, t.event_id, t.title, t.body, t.priority, t.created_at, t.tracker_id, t.tracker_url, "
    f"{DELIVERY_COLUMNS} FROM tickets t LEFT JOIN deliveries d ON d.kind = 'ticket' AND d.ref_id = t.id"
)
NOTIFICATION_SELECT = (
    f"SELECT n.id, n.channel, n.message, n.subject, n.recipient, n.event_id, n.created_at, {DELIVERY_COLUMNS} "
    "FROM notifications n JOIN deliveries d ON d.kind = 'notification' AND d.ref_id = n.id"
)
AUDIT_SELECT = "SELECT id, at, actor, action, event_id, arguments, result FROM audit"


def stored_event(row: Sequence[Any]) -> StoredEvent:
    values = list(row)
    values[4] = bool(values[4])
    values[20] = None if values[20] is None else json.loads(values[20])
    return StoredEvent(*values)


Batch = Sequence[tuple[Sequence[IncomingEvent], float]]  # each caller's events and when they arrived
IngestItem = tuple[list[IncomingEvent], float, "asyncio.Future[list[AddOutcome]]"]  # ... and who waits
MAX_BATCH_EVENTS = 500  # 15 parameters each stays far below SQLite's limit of 32766


class IngestQueue(Protocol):
    """What group commit needs of its queue: queue.SimpleQueue (a thread) and asyncio.Queue both fit."""

    def empty(self) -> bool: ...
    def get_nowait(self) -> IngestItem | None: ...
    def put_nowait(self, item: IngestItem | None) -> None: ...


def take_batch(first: IngestItem, queue: IngestQueue) -> list[IngestItem]:
    """`first` and whatever else is queued, up to MAX_BATCH_EVENTS events; a None (closing) stays queued."""
    batch, size = [first], len(first[0])
    while size < MAX_BATCH_EVENTS and not queue.empty():
        if (more := queue.get_nowait()) is None:
            queue.put_nowait(None)
            break
        batch.append(more)
        size += len(more[0])
    return batch


def settle(batch: list[IngestItem], results: list[list[AddOutcome]] | Exception) -> None:
    """Answer each caller of a batch with its outcomes, or, when the commit failed, with StoreUnavailable
    (a 503 to Stripe, which retries): none is left hanging."""
    for index, (_, _, future) in enumerate(batch):
        if future.done():  # the caller went away; its events are stored all the same
            continue
        if isinstance(results, Exception):
            future.set_exception(StoreUnavailable(f"the inbox database cannot be written: {results}"))
        else:
            future.set_result(results[index])


def insert_rows(batch: Batch) -> list[tuple[Any, ...]]:
    """One row per distinct event, in id order (so concurrent writers lock rows in the same order), its
    last column the number of deliveries in this batch: one id may come twice, a retry racing the original."""
    first: dict[str, tuple[IncomingEvent, float]] = {}
    last: dict[str, float] = {}
    copies: Counter[str] = Counter()
    for events, received_at in batch:
        for event in events:
            first.setdefault(event.id, (event, received_at))
            last[event.id] = received_at
            copies[event.id] += 1
    return [_row(*first[event_id], last[event_id], copies[event_id]) for event_id in sorted(first)]


def answers(batch: Batch, returned: Sequence[Sequence[Any]]) -> list[list[AddOutcome]]:
    """Each caller's answers from the upsert's (id, deliveries) rows: the first copy of an id in the batch
    was stored when its row holds exactly this batch's copies of it; every other copy is a duplicate."""
    deliveries = {row[0]: row[1] for row in returned}
    copies = Counter(event.id for events, _ in batch for event in events)
    seen: set[str] = set()
    results = []
    for events, _ in batch:
        mine: list[AddOutcome] = []
        for event in events:
            first = event.id not in seen
            seen.add(event.id)
            mine.append("stored" if first and deliveries[event.id] == copies[event.id] else "duplicate")
        results.append(mine)
    return results


def _row(event: IncomingEvent, received_at: float, last_delivery_at: float, copies: int) -> tuple[Any, ...]:
    return (
        event.id,
        event.type,
        event.created,
        event.livemode,
        event.customer,
        event.account,
        event.object_id,
        event.amount,
        event.currency,
        event.payload,
        received_at,
        last_delivery_at,
        event.kind,
        None if event.related_object is None else json.dumps(event.related_object),
        copies,
    )


def outcome_audit(
    delivery: Delivery, status: str, reason: str | None, tracker_url: str | None
) -> tuple[Audit, str | None, dict[str, Any]]:
    """The audit entry (who and what, the event, the result) for a delivery's final outcome."""
    ref = delivery.notification or delivery.ticket
    return (
        Audit("outbox", f"deliver_{delivery.kind}", {"id": ref.id if ref else None, "to": delivery.target}),
        delivery.event.id if delivery.event else None,
        {"status": status, "attempts": delivery.attempts, "reason": reason, "tracker_url": tracker_url},
    )


def ticket(row: Sequence[Any]) -> Ticket:
    return Ticket(
        id=row[0],
        event_id=row[1],
        title=row[2],
        body=row[3],
        priority=row[4],
        created_at=utc(row[5]),
        tracker_id=row[6],
        tracker_url=row[7],
        tracker=row[8],
        delivery=None if row[8] is None else delivery_state(row[9:]),
    )


def notification(row: Sequence[Any]) -> Notification:
    return Notification(
        id=row[0],
        channel=row[1],
        message=row[2],
        subject=row[3],
        recipient=row[4],
        event_id=row[5],
        created_at=utc(row[6]),
        delivery=delivery_state(row[8:]),
    )


def delivery_state(row: Sequence[Any]) -> DeliveryState:
    status, attempts, reason, next_attempt_at, finished_at = row
    return DeliveryState(
        status=status,
        attempts=attempts,
        reason=reason,
        next_attempt_at=utc(next_attempt_at) if status == "queued" else None,
        finished_at=utc(finished_at),
    )


def audit_entry(row: Sequence[Any]) -> AuditEntry:
    return AuditEntry(
        id=row[0],
        at=utc(row[1]),
        actor=row[2],
        action=row[3],
        event_id=row[4],
        arguments=json.loads(row[5]),
        result=json.loads(row[6]),
    )
