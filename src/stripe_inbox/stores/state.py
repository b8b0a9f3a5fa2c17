"""The inbox watching itself: small named values, turns shared among replicas, open incidents, and the failed
deliveries alerts report."""

from __future__ import annotations

from .area import AreaStore
from .changes import INCIDENT_CHANGE
from .connector import Transaction
from .interface import Audit
from .journal import record_audit

LOG_INCIDENT = "INSERT INTO incident_log (name, state, detail, at) VALUES (?, ?, ?, ?)"


class StateStore(AreaStore):
    async def get_state(self, key: str) -> str | None:
        """A small named value the inbox keeps for itself (e.g. where a backfill got to)."""
        rows = await self.db.fetch("SELECT value FROM state WHERE key = ?", key)
        return rows[0][0] if rows else None

    async def set_state(self, key: str, value: str | None) -> None:
        async with self.db.transaction() as tx:
            if value is None:
                await tx.execute("DELETE FROM state WHERE key = ?", key)
            else:
                await tx.execute(
                    "INSERT INTO state (key, value) VALUES (?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    key,
                    value,
                )

    async def claim_turn(self, key: str, now: float, every_seconds: float) -> bool:
        """True for the one caller, of any replica, whose turn it is to do the work named `key` (at most once
        every `every_seconds`)."""
        async with self.db.transaction() as tx:
            claimed = await tx.fetch(
                "INSERT INTO state (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value "
                "WHERE CAST(state.value AS DOUBLE PRECISION) <= ? RETURNING key",
                key,
                repr(now),
                now - every_seconds,
            )
        return bool(claimed)

    async def incidents(self) -> dict[str, tuple[float, str]]:
        """The open incidents: name -> (when opened, what was found)."""
        rows = await self.db.fetch("SELECT name, opened_at, detail FROM incidents")
        return {name: (opened_at, detail) for name, opened_at, detail in rows}

    async def open_incident(self, name: str, detail: str, at: float, audit: Audit) -> bool:
        """Open the incident; True for the one caller (of any replica) that did, who then alerts."""
        async with self.changes.write() as tx:
            opened = await tx.fetch(
                "INSERT INTO incidents (name, opened_at, detail) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO NOTHING RETURNING name",
                name,
                at,
                detail,
            )
            if opened:
                await record_audit(tx, at, audit, None, {"incident": name, "detail": detail})
                await _log_incident(tx, name, "opened", detail, at)
        return bool(opened)

    async def close_incident(self, name: str, at: float, audit: Audit) -> float | None:
        """Close the incident; when it was opened, for the one caller that closed it, else None."""
        async with self.changes.write() as tx:
            closed = await tx.fetch("DELETE FROM incidents WHERE name = ? RETURNING opened_at, detail", name)
            if closed:
                await record_audit(tx, at, audit, None, {"incident": name, "open_seconds": round(at - closed[0][0], 3)})
                await _log_incident(tx, name, "cleared", closed[0][1], at)
        return closed[0][0] if closed else None

    async def failed_deliveries(self, since: float, limit: int = 10) -> list[tuple[str, str, str | None]]:
        """(kind, target, reason) of outgoing actions that ended failed since `since`, newest first; the
        inbox's own alerts (idempotency keys `alert:…`) are not among them."""
        rows = await self.db.fetch(
            "SELECT d.kind, d.target, d.reason FROM deliveries d "
            "LEFT JOIN notifications n ON d.kind = 'notification' AND n.id = d.ref_id "
            "WHERE d.status = 'failed' AND d.finished_at >= ? "
            "AND (n.idempotency_key IS NULL OR n.idempotency_key NOT LIKE 'alert:%') ORDER BY d.id DESC LIMIT ?",
            since,
            limit,
        )
        return [(kind, target, reason) for kind, target, reason in rows]

    async def ping(self) -> None:
        await self.db.fetch("SELECT 1")


async def _log_incident(tx: Transaction, name: str, state: str, detail: str, at: float) -> None:
    """The incident's line in the incident log, and a line in the change log that wakes its watchers."""
    await tx.execute(LOG_INCIDENT, name, state, detail, at)
    await tx.execute("INSERT INTO changes (event_id) VALUES (?)", INCIDENT_CHANGE)
