"""How the SQL store reads its tables: the columns it selects, and how a row becomes a domain object."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import fields
from typing import TYPE_CHECKING, Any

from ..errors import NotFound
from ..event_facts import FACTS
from ..models import AuditEntry, DeliveryState, Notification, Ticket, utc
from .interface import StoredEvent

if TYPE_CHECKING:
    from .connector import Connector, Transaction

EVENT_COLUMNS = ", ".join(field.name for field in fields(StoredEvent))  # in the order StoredEvent takes them
# The facts a database stores otherwise than StoredEvent holds them, by their place in a row (the facts come first).
LOADED = tuple((place, fact.loaded) for place, fact in enumerate(FACTS) if fact.loaded is not None)
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
    for place, load in LOADED:
        values[place] = load(values[place])
    return StoredEvent(*values)


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


async def read_event(tx: Transaction, event_id: str, lock: str = "") -> StoredEvent:
    rows = await tx.fetch(f"SELECT {EVENT_COLUMNS} FROM events WHERE id = ?{lock}", event_id)
    if not rows:
        raise NotFound.event(event_id)
    return stored_event(rows[0])


async def read_tickets(db: Transaction | Connector, where: str, *parameters: Any) -> list[Ticket]:
    return [ticket(row) for row in await db.fetch(f"{TICKET_SELECT} WHERE {where} ORDER BY t.id", *parameters)]


async def read_notifications(db: Transaction | Connector, where: str, *parameters: Any) -> list[Notification]:
    rows = await db.fetch(f"{NOTIFICATION_SELECT} WHERE {where} ORDER BY n.id", *parameters)
    return [notification(row) for row in rows]
