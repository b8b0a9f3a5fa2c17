"""The events and what is done with them: the ingest, reading and searching them, acking, claiming and
classifying them, the audit trail, and pruning. Every write that changes an event records its id in the change
log, in the same transaction, so every process can tell its clients exactly which events changed."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

from ..errors import NotFound
from ..events import IncomingEvent
from ..filters import CLAUSES, EventQuery
from ..models import AuditEntry, Classification, Outcome
from ..resolution import Fact, Resolution, resolve
from .area import AreaStore
from .changes import ChangeLog
from .connector import Connector, Dialect, Transaction
from .ingest import Delivery, ForwardRoute, write_deliveries
from .interface import AddOutcome, Audit, StoredEvent
from .journal import record_audit
from .rows import AUDIT_SELECT, EVENT_COLUMNS, audit_entry, read_event, stored_event
from .search import SEARCH_COUNT_CAP, count_cap, search_where, text_walk

FACT_COLUMNS = "e.id, e.type, e.object_id, e.object_status, e.created, e.seq"  # what resolution reads (Fact)
# The events still queued for the search index about their own object `e.object_id`: the queue walked (CROSS JOIN
# keeps SQLite from walking every event instead), each event read by its seq.
QUEUED_ABOUT = "SELECT q.seq FROM search_queue q CROSS JOIN events e WHERE e.seq = q.seq AND e.object_id"
# The highest seq pruning ever deleted: an event feed's cursor below it may have missed events (stores/feed.py).
PRUNED_KEY = "events_pruned_through"
PRUNED_THROUGH = (
    "INSERT INTO state (key, value) SELECT ?, CAST(max(seq) AS TEXT) FROM events WHERE status = 'acked' "
    "AND acked_at < ? HAVING max(seq) IS NOT NULL ON CONFLICT (key) DO UPDATE SET value = excluded.value "
    "WHERE CAST(state.value AS BIGINT) < CAST(excluded.value AS BIGINT)"
)


class EventStore(AreaStore):
    def __init__(self, db: Connector, changes: ChangeLog) -> None:
        super().__init__(db, changes)
        self._routes: tuple[ForwardRoute, ...] = ()
        self._write_deliveries = self._write  # one bound method for every delivery

    def forward_new_events(self, routes: Sequence[ForwardRoute]) -> None:
        """From now on, each new event gets a queued forward, in its own transaction, to each destination of
        `routes` that takes its type."""
        self._routes = tuple(routes)

    async def add_events(self, events: Sequence[IncomingEvent], received_at: float) -> list[AddOutcome]:
        """Insert each new event, or count one more delivery of a known one, in one durable transaction."""
        if not events:
            return []
        outcomes: list[AddOutcome] = await self.db.group_commit(
            self._write_deliveries, (events, received_at), len(events)
        )
        self.changes.committed()
        return outcomes

    async def _write(self, tx: Transaction, deliveries: Sequence[Delivery]) -> list[list[AddOutcome]]:
        """A group commit's batch of deliveries, with the destinations that take new events as they are now."""
        return await write_deliveries(tx, self.db.dialect, self._routes, deliveries)

    async def get_event(self, event_id: str) -> StoredEvent | None:
        rows = await self.db.fetch(f"SELECT {EVENT_COLUMNS} FROM events WHERE id = ?", event_id)
        return stored_event(rows[0]) if rows else None

    async def get_events(self, event_ids: Sequence[str]) -> list[StoredEvent]:
        """The stored events among `event_ids`, in no particular order."""
        if not event_ids:
            return []
        marks = ", ".join("?" * len(event_ids))
        rows = await self.db.fetch(f"SELECT {EVENT_COLUMNS} FROM events WHERE id IN ({marks})", *event_ids)
        return [stored_event(row) for row in rows]

    async def list_events(self, query: EventQuery, matches: int | None = None) -> list[StoredEvent]:
        """`matches`: count_events(query), where the caller has it already: a range or full-text search picks its
        plan by it."""
        walk = await text_walk(self.db, query, matches)
        where, parameters = _where(query, self.db.dialect, walk is not None)
        if query.after is not None:
            where.append("seq < ?" if query.newest_first else "seq > ?")
            parameters.append(query.after)
        if walk is not None:
            where.append("seq BETWEEN ? AND ?")
            parameters += [walk.low, walk.high]
        order = "DESC" if query.newest_first else "ASC"
        if not query.searches:
            rows = await self.db.fetch(
                f"SELECT {EVENT_COLUMNS} FROM events {_sql_where(where)} ORDER BY seq {order} LIMIT ?",
                *parameters,
                query.limit,
            )
            return [stored_event(row) for row in rows]
        # A search picks its page's seqs first, so only those rows are read whole. Full text is read from
        # its index in seq order where the index yields that order (FTS5); elsewhere a broad search walks the
        # events, testing each one's terms, and a narrow one sorts the few matches its index yields. A range
        # that matches more than a count's worth of events is read in seq order, where the page is met at once;
        # a narrower one through its index, sorting the few it matches.
        dialect, seq = self.db.dialect, "seq"
        if query.words:
            source, seq = dialect.text_source, dialect.text_seq if walk else dialect.text_seq_sorted
        elif query.ranged and (await self.count_events(query) if matches is None else matches) > SEARCH_COUNT_CAP:
            source = f"events{dialect.in_seq_order}"
        else:
            source = "events"
        rows = await self.db.fetch(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE seq IN (SELECT {seq} FROM {source} {_sql_where(where)} "
            f"ORDER BY {seq} {order} LIMIT ?) ORDER BY seq {order}",
            *parameters,
            query.limit,
        )
        if walk is not None and not walk.whole and len(rows) < query.limit:
            return await self.list_events(query)  # the matches lie beyond the walk: the index finds them
        return [stored_event(row) for row in rows]

    async def count_events(self, query: EventQuery) -> int:
        """How many events match; for a search, up to its count_cap + 1."""
        where, parameters = _where(query, self.db.dialect)
        if query.searches:
            source = "events"
            if query.words:
                source = self.db.dialect.text_index if len(where) == 1 else self.db.dialect.text_source
            rows = await self.db.fetch(
                f"SELECT count(*) FROM (SELECT 1 FROM {source} {_sql_where(where)} LIMIT ?) AS matched",
                *parameters,
                count_cap(query) + 1,
            )
            return int(rows[0][0])
        # Totals come from the counts the triggers keep; a customer's or account's events through their index.
        if any(getattr(query, each.store_key) is not None for each in CLAUSES if not each.tallied):
            source = "count(*) FROM events"
        else:
            source = "CAST(coalesce(sum(n), 0) AS BIGINT) FROM event_counts"
        rows = await self.db.fetch(f"SELECT {source} {_sql_where(where)}", *parameters)
        return int(rows[0][0])

    async def timeline(self, object_id: str, limit: int) -> list[StoredEvent]:
        """The events about an object, oldest first by Stripe's time, then arrival: those the search index holds,
        and those still queued for it whose own object it is (those that only refer to it wait for the index)."""
        rows = await self.db.fetch(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE seq IN (SELECT seq FROM event_keys WHERE key = ? "
            f"UNION ALL {QUEUED_ABOUT} = ?) ORDER BY created, seq LIMIT ?",
            object_id,
            object_id,
            limit,
        )
        return [stored_event(row) for row in rows]

    async def resolutions(self, events: Sequence[StoredEvent]) -> dict[str, Resolution]:
        """Each event's superseded_by and stale, from one read of the events about the same objects."""
        facts = [_fact(event) for event in events]
        objects = sorted({fact.object_id for fact in facts if fact.object_id is not None})
        if not objects:
            return resolve(facts, [])
        # Indexed events are found through their keys; those still queued for the index (a few, or under
        # overload a few seconds' worth) by their object_id, which the insert stores, so resolution never waits
        # for the index: the queue is walked (CROSS JOIN keeps SQLite from walking every event created since
        # instead). One statement reads one snapshot: an event being indexed is met once, on one side.
        marks, since = ", ".join(["?"] * len(objects)), min(fact.created for fact in facts)
        rows = await self.db.fetch(
            f"SELECT {FACT_COLUMNS} FROM event_keys k JOIN events e ON e.seq = k.seq WHERE k.key IN ({marks}) "
            "AND e.object_id = k.key AND e.created >= ? "
            f"UNION ALL SELECT {FACT_COLUMNS} FROM search_queue q CROSS JOIN events e "
            f"WHERE e.seq = q.seq AND e.object_id IN ({marks}) AND e.created >= ?",
            *objects,
            since,
            *objects,
            since,
        )
        return resolve(facts, [Fact(*row) for row in rows])

    async def currencies(self) -> list[str]:
        """The lowest and highest currency the stored amounts are in: one when they agree, none without amounts."""
        rows = await self.db.fetch("SELECT (SELECT min(currency) FROM events), (SELECT max(currency) FROM events)")
        return sorted({currency for currency in rows[0] if currency is not None})

    async def counts(self) -> list[tuple[str, str, int]]:
        """(status, type, number of events) for every status and type present."""
        rows = await self.db.fetch(
            "SELECT status, type, CAST(sum(n) AS BIGINT) FROM event_counts "
            "GROUP BY status, type HAVING sum(n) > 0 ORDER BY type"
        )
        return [(row[0], row[1], row[2]) for row in rows]

    async def oldest_pending(self) -> float | None:
        """When the oldest pending event was received."""
        rows = await self.db.fetch("SELECT received_at FROM events WHERE status = 'pending' ORDER BY seq LIMIT 1")
        return rows[0][0] if rows else None

    async def received_per_hour(self, since: float, until: float = math.inf) -> dict[int, int]:
        """How many events were first received in each hour from `since` to `until`, keyed by hours since the
        epoch. Whole seconds divided as integers read the same on both databases (a float CAST rounds in
        PostgreSQL but truncates in SQLite)."""
        rows = await self.db.fetch(
            "SELECT CAST(received_at AS BIGINT) / 3600 AS hour, count(*) FROM events "
            "WHERE received_at >= ? AND received_at < ? GROUP BY hour",
            since,
            until,
        )
        return {int(row[0]): int(row[1]) for row in rows}

    async def audit_trail(self, event_id: str) -> list[AuditEntry]:
        rows = await self.db.fetch(f"{AUDIT_SELECT} WHERE event_id = ? ORDER BY id", event_id)
        return [audit_entry(row) for row in rows]

    async def ack(
        self, event_id: str, outcome: Outcome, note: str | None, at: float, audit: Audit, holder: str | None = None
    ) -> tuple[StoredEvent, bool]:
        """Ack a pending event; an acked event is returned unchanged. True when this call acked it.
        With a `holder` (an agent), an event another agent holds a live claim on is refused (Claimed);
        without one (an operator) the ack goes through."""
        async with self.changes.write() as tx:
            event = await read_event(tx, event_id, lock=self.db.dialect.lock_row)
            if event.status == "acked":
                return event, False
            event.check_claim(holder, at)
            (row,) = await tx.fetch(
                "UPDATE events SET status = 'acked', outcome = ?, note = ?, acked_at = ? WHERE id = ? "
                f"RETURNING {EVENT_COLUMNS}",
                outcome,
                note,
                at,
                event_id,
            )
            await record_audit(tx, at, audit, event_id, {"status": "acked", "outcome": outcome})
            return stored_event(row), True

    async def claim_events(self, holder: str, limit: int, lease_seconds: float, now: float) -> list[StoredEvent]:
        """Lease up to `limit` pending events, oldest first, that no agent holds a live claim on, to
        `holder` until now + lease_seconds. Two callers never get the same event; a lapsed lease frees it."""
        claimable = (
            "SELECT seq FROM events WHERE status = 'pending' AND (claim_expires_at IS NULL OR claim_expires_at < ?) "
            f"ORDER BY seq LIMIT ?{self.db.dialect.skip_locked}"
        )
        async with self.changes.write() as tx:
            rows = await tx.fetch(
                f"WITH chosen AS ({claimable}) UPDATE events SET claimed_by = ?, claim_expires_at = ? "
                f"WHERE seq IN (SELECT seq FROM chosen) RETURNING {EVENT_COLUMNS}",
                now,
                limit,
                holder,
                now + lease_seconds,
            )
            claimed = sorted((stored_event(row) for row in rows), key=lambda event: event.seq)
            for event in claimed:
                await record_audit(
                    tx, now, Audit(holder, "claim_events", {"lease_seconds": lease_seconds}), event.id, {}
                )
        return claimed

    async def set_classification(self, event_id: str, classification: Classification, at: float, audit: Audit) -> None:
        async with self.changes.write() as tx:
            updated = await tx.fetch(
                "UPDATE events SET classification = ? WHERE id = ? RETURNING id",
                classification.model_dump_json(),
                event_id,
            )
            if not updated:
                raise NotFound.event(event_id)
            result = {"category": classification.category, "priority": classification.priority}
            await record_audit(tx, at, audit, event_id, result)

    async def add_audit(self, event_id: str, at: float, audit: Audit) -> None:
        """An audit entry for something done with an event that changes nothing else (e.g. a reveal)."""
        async with self.changes.write() as tx:
            await read_event(tx, event_id)
            await record_audit(tx, at, audit, event_id, {})

    async def prune(self, acked_before: float, audit: Audit | None = None) -> int:
        doomed = "SELECT id FROM events WHERE status = 'acked' AND acked_at < ?"
        async with self.changes.write() as tx:
            (count,) = await tx.fetch(f"SELECT count(*) FROM ({doomed}) AS doomed", acked_before)
            if audit is not None:
                await record_audit(tx, time.time(), audit, None, {"deleted": int(count[0])})
            await tx.execute(f"INSERT INTO changes (event_id) {doomed}", acked_before)
            await tx.execute(PRUNED_THROUGH, PRUNED_KEY, acked_before)
            for table in ("deliveries", "tickets", "notifications", "audit"):
                await tx.execute(f"DELETE FROM {table} WHERE event_id IN ({doomed})", acked_before)
            await tx.execute("DELETE FROM events WHERE status = 'acked' AND acked_at < ?", acked_before)
        return int(count[0])

    async def events_created(
        self, since: int, until: int | None, event_type: str | None, after: int, limit: int
    ) -> list[tuple[int, str]]:
        """(seq, id) of the events Stripe created in [since, until), of `event_type` if given, after seq `after`,
        in arrival order."""
        where, parameters = _created(since, until, event_type)
        rows = await self.db.fetch(
            f"SELECT seq, id FROM events WHERE seq > ? AND {where} ORDER BY seq LIMIT ?", after, *parameters, limit
        )
        return [(row[0], row[1]) for row in rows]

    async def count_created(self, since: int, until: int | None, event_type: str | None) -> int:
        where, parameters = _created(since, until, event_type)
        (row,) = await self.db.fetch(f"SELECT count(*) FROM events WHERE {where}", *parameters)
        return int(row[0])


def _where(query: EventQuery, dialect: Dialect, scan: bool = False) -> tuple[list[str], list[Any]]:
    """The WHERE clauses of `query`: each filter's own, where it is given, and full text (search_where)."""
    where: list[str] = []
    parameters: list[Any] = []
    for each in CLAUSES:
        value = getattr(query, each.store_key)
        if value is not None:
            where.append(each.sql)
            parameters.append(value)
    searched, values = search_where(query, dialect, scan)
    return where + searched, parameters + values


def _fact(event: StoredEvent) -> Fact:
    return Fact(event.id, event.type, event.object_id, event.object_status, event.created, event.seq)


def _sql_where(where: list[str]) -> str:
    return f"WHERE {' AND '.join(where)}" if where else ""


def _created(since: int, until: int | None, event_type: str | None) -> tuple[str, list[Any]]:
    where, parameters = ["created >= ?"], [since]
    if until is not None:
        where.append("created < ?")
        parameters.append(until)
    if event_type:
        where.append("type = ?")
        parameters.append(event_type)
    return " AND ".join(where), parameters
