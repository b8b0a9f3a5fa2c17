"""Forwarding in the SQL store (which new events each [[forward]] destination takes is decided by the ingest, in its
transaction, so a 200 to Stripe implies the forward will be made: ingest.py): the forward deliveries' rounds: outcomes
recorded and more claimed in one transaction, each destination's run of failures (pause, then one probe), replays,
and what get_event and the stats show."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidArgument, NotFound
from ..models import DeliveryStatus, Forward, utc
from .area import AreaStore
from .connector import Connector, Transaction
from .interface import Audit
from .journal import record_audit

FORWARD_COLUMNS = (
    "id, target, status, attempts, status_code, latency_ms, reason, replay, created_at, next_attempt_at, finished_at"
)
# Each through deliveries_forward_due (status, target, next_attempt_at): the rows already sent are never read.
CLAIMABLE = (  # lapsed leases (their sender died), then what is due
    "SELECT id FROM deliveries WHERE kind = 'forward' AND status = 'sending' AND target = ? AND lease_until < ? "
    "ORDER BY lease_until LIMIT ?",
    "SELECT id FROM deliveries WHERE kind = 'forward' AND status = 'queued' AND target = ? AND next_attempt_at <= ? "
    "ORDER BY next_attempt_at LIMIT ?",
)
SCHEDULE = (
    "SELECT target, min(next_attempt_at) FROM deliveries WHERE kind = 'forward' AND status = 'queued' GROUP BY target "
    "UNION ALL "
    "SELECT target, min(lease_until) FROM deliveries WHERE kind = 'forward' AND status = 'sending' GROUP BY target"
)
OUTCOME_VALUES = (
    "(CAST(? AS BIGINT), CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS INTEGER), CAST(? AS DOUBLE PRECISION), "
    "CAST(? AS DOUBLE PRECISION), CAST(? AS DOUBLE PRECISION))"
)
RECORD_OUTCOMES = """
    UPDATE deliveries SET status = v.column2, reason = v.column3, status_code = v.column4, latency_ms = v.column5,
                          next_attempt_at = coalesce(v.column6, deliveries.next_attempt_at), finished_at = v.column7,
                          lease_until = NULL
    FROM (VALUES {values}) AS v WHERE deliveries.id = v.column1
"""


@dataclass(frozen=True, slots=True)
class ForwardDelivery:
    """A forward claimed for sending: the exact stored bytes, to one destination."""

    id: int
    destination: str
    event_id: str
    attempts: int  # counting the one now being made
    payload: bytes


@dataclass(frozen=True, slots=True)
class ForwardOutcome:
    delivery: ForwardDelivery
    status: DeliveryStatus  # sent, queued (to be retried at next_attempt_at) or failed
    status_code: int | None
    latency_ms: float | None
    error: str | None
    next_attempt_at: float | None
    at: float
    health: bool = True  # whether it says something about the destination (a removed one's does not)


@dataclass(frozen=True, slots=True)
class PausePolicy:
    after_failures: int  # in a row
    seconds: float  # the cool-down before one probe


@dataclass(slots=True)
class Health:
    """A destination's run of failures: paused once it reaches the policy's count, until the cool-down ends and one
    probe (in flight until probe_until) succeeds."""

    failures: int = 0
    paused_until: float | None = None
    probe_until: float | None = None

    def record(self, ok: bool, at: float, policy: PausePolicy) -> None:
        if ok:
            self.failures, self.paused_until, self.probe_until = 0, None, None
            return
        self.failures += 1
        if self.paused_until is not None or self.failures >= policy.after_failures:
            self.paused_until, self.probe_until = at + policy.seconds, None

    def allowance(self, wanted: int, now: float) -> int:
        """How many forwards may be claimed now: all wanted, none while paused, one (the probe) after the
        cool-down."""
        if self.paused_until is None:
            return wanted
        if now < self.paused_until or (self.probe_until is not None and now < self.probe_until):
            return 0
        return min(wanted, 1)

    def resumes_at(self) -> float | None:
        """While paused, when a probe may go."""
        if self.paused_until is None:
            return None
        return max(self.paused_until, self.probe_until or 0.0)


class ForwardStore(AreaStore):
    """Forwards to the [[forward]] destinations: queued by the ingest, sent in rounds, replayed on demand."""

    async def forward_schedule(self) -> tuple[dict[str, float], dict[str, Health]]:
        """Per destination with forwards to make, when the earliest falls due (or its lease lapses); and the
        destinations' health."""
        due: dict[str, float] = {}
        for target, at in await self.db.fetch(SCHEDULE):
            due[target] = min(at, due.get(target, at))
        return due, await _health(self.db, "")

    async def forward_round(
        self,
        outcomes: Sequence[ForwardOutcome],
        wanted: dict[str, int],
        now: float,
        lease_seconds: float,
        pause: PausePolicy,
    ) -> list[ForwardDelivery]:
        """Record `outcomes` and claim up to `wanted[destination]` due forwards for each, for `lease_seconds`, in
        one transaction (on SQLite, the ingest's next group commit); a paused destination gets none, or one probe
        once its cool-down is over."""
        dialect = self.db.dialect

        async def work(tx: Transaction) -> list[ForwardDelivery]:
            health = await _health(tx, dialect.lock_row)
            if outcomes:
                await _record(tx, outcomes)
            changed = set()
            for outcome in outcomes:
                if outcome.health:
                    health.setdefault(outcome.delivery.destination, Health()).record(
                        outcome.status == "sent", outcome.at, pause
                    )
                    changed.add(outcome.delivery.destination)
            claimed: list[Sequence[Any]] = []
            for destination, count in sorted(wanted.items()):
                state = health.get(destination, Health())
                allowed = state.allowance(count, now)
                if allowed and state.paused_until is not None:
                    state.probe_until = now + lease_seconds
                    health[destination] = state
                    changed.add(destination)
                claimed += await _claim(tx, dialect.skip_locked, destination, allowed, now, lease_seconds)
            await _save_health(tx, {destination: health[destination] for destination in changed})
            return await _deliveries(tx, claimed)

        claimed = await self.db.write_batched(work)
        self.changes.committed()
        return claimed

    async def release_forwards(self, delivery_ids: Sequence[int]) -> None:
        """Forwards claimed by a sender that stops before it has an answer: queued again at once, the attempt
        not counted."""
        if not delivery_ids:
            return
        async with self.changes.write() as tx:
            await tx.execute(
                "UPDATE deliveries SET status = 'queued', attempts = attempts - 1, lease_until = NULL "
                f"WHERE status = 'sending' AND id IN ({', '.join('?' * len(delivery_ids))})",
                *delivery_ids,
            )

    async def replay_forwards(self, event_ids: Sequence[str], destination: str, at: float, audit: Audit) -> list[int]:
        """A new forward of each event to `destination`, due at once, audited; NotFound names a missing event.
        Returns the new forwards' ids, in the order of `event_ids`."""
        made = []
        async with self.changes.write() as tx:
            found = {row[0] for row in await tx.fetch(_in("SELECT id FROM events WHERE id IN", event_ids), *event_ids)}
            for event_id in event_ids:
                if event_id not in found:
                    raise NotFound.event(event_id)
            for event_id in event_ids:
                (row,) = await tx.fetch(
                    "INSERT INTO deliveries (kind, target, event_id, next_attempt_at, created_at, replay) "
                    "VALUES ('forward', ?, ?, ?, ?, ?) RETURNING id",
                    destination,
                    event_id,
                    at,
                    at,
                    True,
                )
                made.append(row[0])
                of_event = Audit(audit.actor, audit.action, {**audit.arguments, "event_id": event_id})
                await record_audit(tx, at, of_event, event_id, {"forward_id": row[0], "destination": destination})
        return made

    async def retry_forward(self, event_id: str, forward_id: int, at: float, audit: Audit) -> None:
        """Queue a failed forward of `event_id` again, due at once with a fresh count of attempts, audited; a
        forward that is not failed is refused (InvalidArgument), one of another event is not found."""
        async with self.changes.write() as tx:
            rows = await tx.fetch(
                "UPDATE deliveries SET status = 'queued', attempts = 0, next_attempt_at = ?, lease_until = NULL, "
                "finished_at = NULL WHERE kind = 'forward' AND id = ? AND event_id = ? AND status = 'failed' "
                "RETURNING target",
                at,
                forward_id,
                event_id,
            )
            if not rows:
                found = await tx.fetch(
                    "SELECT status FROM deliveries WHERE kind = 'forward' AND id = ? AND event_id = ?",
                    forward_id,
                    event_id,
                )
                if not found:
                    raise NotFound(f"no forward {forward_id} of event {event_id}")
                raise InvalidArgument(f"forward {forward_id} is {found[0][0]}: only a failed one can be retried")
            await record_audit(tx, at, audit, event_id, {"forward_id": forward_id, "destination": rows[0][0]})

    async def forwards(self, event_id: str) -> list[Forward]:
        rows = await self.db.fetch(
            f"SELECT {FORWARD_COLUMNS} FROM deliveries WHERE event_id = ? AND kind = 'forward' ORDER BY id", event_id
        )
        return [forward(row) for row in rows]

    async def forward(self, forward_id: int) -> Forward:
        (row,) = await self.db.fetch(f"SELECT {FORWARD_COLUMNS} FROM deliveries WHERE id = ?", forward_id)
        return forward(row)

    async def forward_counts(self) -> list[tuple[str, str, int]]:
        """(destination, delivery state, number of forwards) for every pair present."""
        rows = await self.db.fetch(
            "SELECT target, status, count(*) FROM deliveries WHERE kind = 'forward' GROUP BY target, status "
            "ORDER BY target, status"
        )
        return [(row[0], row[1], int(row[2])) for row in rows]


def forward(row: Sequence[Any]) -> Forward:
    status = row[2]
    return Forward(
        id=row[0],
        destination=row[1],
        status=status,
        attempts=row[3],
        status_code=row[4],
        latency_ms=None if row[5] is None else round(row[5], 3),
        error=row[6],
        replay=bool(row[7]),
        created_at=utc(row[8]),  # type: ignore[arg-type]
        next_attempt_at=utc(row[9]) if status == "queued" else None,
        finished_at=utc(row[10]),
    )


async def _claim(
    tx: Transaction, skip_locked: str, destination: str, allowed: int, now: float, lease_seconds: float
) -> list[Sequence[Any]]:
    """Lease up to `allowed` of `destination`'s claimable forwards: lapsed leases first, then what is due."""
    claimed: list[Sequence[Any]] = []
    for claimable in CLAIMABLE:
        if len(claimed) >= allowed:
            break
        claimed += await tx.fetch(
            f"WITH chosen AS ({claimable}{skip_locked}) "
            "UPDATE deliveries SET status = 'sending', attempts = attempts + 1, lease_until = ? "
            "WHERE id IN (SELECT id FROM chosen) RETURNING id, target, event_id, attempts",
            destination,
            now,
            allowed - len(claimed),
            now + lease_seconds,
        )
    return claimed


async def _save_health(tx: Transaction, health: dict[str, Health]) -> None:
    for destination, state in sorted(health.items()):
        await tx.execute(
            "INSERT INTO forward_health (destination, failures, paused_until, probe_until) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (destination) DO UPDATE SET failures = excluded.failures, "
            "paused_until = excluded.paused_until, probe_until = excluded.probe_until",
            destination,
            state.failures,
            state.paused_until,
            state.probe_until,
        )


async def _deliveries(tx: Transaction, claimed: Sequence[Sequence[Any]]) -> list[ForwardDelivery]:
    """The claimed forwards (id, target, event_id, attempts) with their events' bytes, in id order."""
    payloads = await _payloads(tx, sorted({row[2] for row in claimed}))
    return [
        ForwardDelivery(row[0], row[1], row[2], row[3], payloads[row[2]])
        for row in sorted(claimed, key=lambda row: row[0])
        if row[2] in payloads
    ]


async def _health(db: Transaction | Connector, lock: str) -> dict[str, Health]:
    rows = await db.fetch(
        f"SELECT destination, failures, paused_until, probe_until FROM forward_health ORDER BY destination{lock}"
    )
    return {row[0]: Health(row[1], row[2], row[3]) for row in rows}


async def _record(tx: Transaction, outcomes: Sequence[ForwardOutcome]) -> None:
    final = ("sent", "failed")
    values = [
        value
        for o in outcomes
        for value in (
            o.delivery.id,
            o.status,
            o.error,
            o.status_code,
            o.latency_ms,
            o.next_attempt_at,
            o.at if o.status in final else None,
        )
    ]
    await tx.execute(RECORD_OUTCOMES.format(values=", ".join([OUTCOME_VALUES] * len(outcomes))), *values)
    event_ids = sorted({o.delivery.event_id for o in outcomes})
    await tx.execute(f"INSERT INTO changes (event_id) VALUES {', '.join(['(?)'] * len(event_ids))}", *event_ids)


async def _payloads(tx: Transaction, event_ids: Sequence[str]) -> dict[str, bytes]:
    if not event_ids:
        return {}
    rows = await tx.fetch(_in("SELECT id, payload FROM events WHERE id IN", event_ids), *event_ids)
    return {row[0]: bytes(row[1]) for row in rows}


def _in(sql: str, values: Sequence[Any]) -> str:
    return f"{sql} ({', '.join('?' * len(values))})"
