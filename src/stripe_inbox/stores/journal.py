"""What a write that changes an event records in its own transaction: the audit entry, and the event's line in
the change log every process reads."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from .interface import Audit

if TYPE_CHECKING:
    from .connector import Transaction  # which imports forwarding, which imports this


async def record_audit(tx: Transaction, at: float, audit: Audit, event_id: str | None, result: dict[str, Any]) -> None:
    """The audit entry of a change, and, for a change to an event, its line in the change log."""
    await tx.execute(
        "INSERT INTO audit (at, actor, action, event_id, arguments, result) VALUES (?, ?, ?, ?, ?, ?)",
        at,
        audit.actor,
        audit.action,
        event_id,
        json.dumps(audit.arguments),
        json.dumps(result),
    )
    if event_id is not None:
        await record_change(tx, event_id)


async def record_change(tx: Transaction, event_id: str) -> None:
    await tx.execute("INSERT INTO changes (event_id) VALUES (?)", event_id)
