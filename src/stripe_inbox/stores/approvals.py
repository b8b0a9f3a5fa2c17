"""Deliveries that wait for a person: listed, decided once, lapsed after a while."""

from __future__ import annotations

from typing import Any

from ..errors import InvalidArgument, NotFound
from ..models import Approval, DeliveryStatus, utc
from .area import AreaStore
from .connector import Connector, Transaction
from .interface import Audit, DeliveryKind
from .journal import record_audit
from .outbox import CREATOR_ATTEMPT_SECONDS
from .rows import read_notifications, read_tickets

APPROVAL_COLUMNS = "id, kind, ref_id, target, event_id, status, reason, created_at"


class ApprovalStore(AreaStore):
    async def approvals(self, status: DeliveryStatus = "awaiting_approval", limit: int = 100) -> list[Approval]:
        """Deliveries in `status` (those waiting for a person, by default), oldest first."""
        rows = await self.db.fetch(
            f"SELECT {APPROVAL_COLUMNS} FROM deliveries WHERE status = ? ORDER BY id LIMIT ?", status, limit
        )
        return [await _approval(self.db, row) for row in rows]

    async def count_approvals(self, created_since: float) -> int:
        """How many deliveries wait for a person and have not lapsed (created at or after `created_since`)."""
        (row,) = await self.db.fetch(
            "SELECT count(*) FROM deliveries WHERE status = 'awaiting_approval' AND created_at >= ?", created_since
        )
        return int(row[0])

    async def approval(self, delivery_id: int) -> Approval:
        rows = await self.db.fetch(f"SELECT {APPROVAL_COLUMNS} FROM deliveries WHERE id = ?", delivery_id)
        if not rows:
            raise NotFound(f"no approval {delivery_id}: `stripe-inbox approvals list` shows those waiting")
        return await _approval(self.db, rows[0])

    async def approval_of(self, kind: DeliveryKind, ref_id: int) -> Approval:
        """The delivery of a notification or ticket, as an approval."""
        rows = await self.db.fetch(
            f"SELECT {APPROVAL_COLUMNS} FROM deliveries WHERE kind = ? AND ref_id = ?", kind, ref_id
        )
        return await _approval(self.db, rows[0])

    async def decide(self, delivery_id: int, approved: bool, reason: str | None, at: float, audit: Audit) -> Approval:
        """A person's answer to a delivery awaiting approval: queued to be sent at once, or rejected for good.
        Only the first answer counts; a delivery no longer waiting is refused (InvalidArgument)."""
        async with self.changes.write() as tx:
            decided = await tx.fetch(
                "UPDATE deliveries SET status = ?, reason = ?, next_attempt_at = ?, finished_at = ? "
                "WHERE id = ? AND status = 'awaiting_approval' RETURNING event_id",
                "queued" if approved else "rejected",
                reason,
                at + CREATOR_ATTEMPT_SECONDS,
                None if approved else at,
                delivery_id,
            )
            if not decided:
                current = await self.approval(delivery_id)
                raise InvalidArgument(f"approval {delivery_id} is not awaiting approval: it is {current.status}")
            result = {"delivery_id": delivery_id, "status": "queued" if approved else "rejected", "reason": reason}
            await record_audit(tx, at, audit, decided[0][0], result)
        return await self.approval(delivery_id)

    async def lapse_approvals(self, created_before: float, reason: str, at: float, audit: Audit) -> list[int]:
        """Reject every delivery that has awaited approval since before `created_before`; their ids."""
        async with self.changes.write() as tx:
            lapsed = await tx.fetch(
                "UPDATE deliveries SET status = 'rejected', reason = ?, finished_at = ? "
                "WHERE status = 'awaiting_approval' AND created_at < ? RETURNING id, event_id",
                reason,
                at,
                created_before,
            )
            for delivery_id, event_id in sorted(lapsed):
                await record_audit(tx, at, audit, event_id, {"delivery_id": delivery_id, "status": "rejected"})
        return sorted(row[0] for row in lapsed)


async def _approval(db: Transaction | Connector, row: Any) -> Approval:
    delivery_id, kind, ref_id, target, event_id, status, reason, created_at = row
    made = await read_notifications(db, "n.id = ?", ref_id) if kind == "notification" else [None]
    opened = await read_tickets(db, "t.id = ?", ref_id) if kind == "ticket" else [None]
    return Approval(
        id=delivery_id,
        kind=kind,
        target=target,
        event_id=event_id,
        created_at=utc(created_at),
        lapses_at=utc(created_at),  # the inbox, which knows the timeout, moves it on
        status=status,
        reason=reason,
        notification=made[0],
        ticket=opened[0],
    )
