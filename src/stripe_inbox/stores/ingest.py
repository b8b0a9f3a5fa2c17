"""The ingest's writes, as the events store hands them to the connector's group commit: each delivery's events
upserted (a new one stored, a known one counted once more), each id's line in the change log, and each new event's
forwards to the destinations that take its type, all in the batch's one transaction."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from ..event_facts import FACT_NAMES, FACTS
from ..events import EventFilter, IncomingEvent
from .connector import Dialect, Transaction
from .interface import AddOutcome

ForwardRoute = tuple[str, tuple[str, ...]]  # a destination, and the event type patterns it takes

# The columns a new event's row fills, in the order of _row, with their types where the database asks for them:
# the event's facts, then when it came and how many copies of it this batch holds.
INSERTED = (
    *((fact.name, fact.column) for fact in FACTS),
    ("received_at", "float8"),
    ("last_delivery_at", "float8"),
    ("deliveries", "integer"),
)
INSERTED_TYPES = tuple(kind for _, kind in INSERTED)
TYPE, RECEIVED_AT = FACT_NAMES.index("type"), len(FACTS)  # where forward_rows finds them in a row
INSERT_EVENTS = f"""
    INSERT INTO events ({", ".join(name for name, _ in INSERTED)}) {{rows}}
    ON CONFLICT (id) DO UPDATE SET deliveries = events.deliveries + excluded.deliveries,
                                   last_delivery_at = excluded.last_delivery_at
    RETURNING id, deliveries
"""
FORWARD_TYPES = ("text", "text", "text", "float8", "float8")
INSERT_FORWARDS = "INSERT INTO deliveries (kind, target, event_id, next_attempt_at, created_at) {rows}"
Delivery = tuple[Sequence[IncomingEvent], float]  # one caller's events and when they arrived


async def write_deliveries(
    tx: Transaction, dialect: Dialect, routes: Sequence[ForwardRoute], deliveries: Sequence[Delivery]
) -> list[list[AddOutcome]]:
    """One batch of deliveries, in `tx`; each caller's outcomes."""
    rows = insert_rows(deliveries)
    if not rows:
        return answers(deliveries, [])
    returned = await tx.fetch(
        INSERT_EVENTS.format(rows=dialect.bulk_rows(INSERTED_TYPES, len(rows))), *dialect.bulk_parameters(rows)
    )
    await tx.execute(
        f"INSERT INTO changes (event_id) {dialect.bulk_rows(('text',), len(rows))}",
        *dialect.bulk_column([row[0] for row in rows]),
    )
    if forwards := forward_rows(rows, returned, routes):
        await tx.execute(
            INSERT_FORWARDS.format(rows=dialect.bulk_rows(FORWARD_TYPES, len(forwards))),
            *dialect.bulk_parameters(forwards),
        )
    return answers(deliveries, returned)


def insert_rows(batch: Sequence[Delivery]) -> list[tuple[Any, ...]]:
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


def answers(batch: Sequence[Delivery], returned: Sequence[Sequence[Any]]) -> list[list[AddOutcome]]:
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


def forward_rows(
    rows: Sequence[Sequence[Any]], returned: Sequence[Sequence[Any]], routes: Sequence[ForwardRoute]
) -> list[tuple[Any, ...]]:
    """A queued forward's row for each event the batch stored (not a duplicate) and each destination whose patterns
    take its type. `rows` are insert_rows' (id first, copies last), `returned` the upsert's (id, deliveries): an
    event is new when its row holds exactly this batch's copies."""
    if not routes:
        return []
    takes = [(destination, EventFilter(list(patterns)).accepts) for destination, patterns in routes]
    deliveries = {row[0]: row[1] for row in returned}
    return [
        ("forward", destination, row[0], row[RECEIVED_AT], row[RECEIVED_AT])  # due when it arrived
        for row in rows
        if deliveries[row[0]] == row[-1]
        for destination, accepts in takes
        if accepts(row[TYPE])
    ]


def _compiled_row() -> Callable[[IncomingEvent, float, float, int], tuple[Any, ...]]:
    """A new event's row in INSERTED's order, `(event.id, event.type, …, received_at, last_delivery_at, copies)`,
    compiled from the facts as dataclasses compiles an __init__: each row is then the plain tuple building it was
    when written by hand (an attrgetter of the facts took three times as long)."""
    facts = "".join(f"event.{name}, " for name in FACT_NAMES)
    arguments = "received_at, last_delivery_at, copies"
    source = f"def _row(event, {arguments}):\n    return ({facts}{arguments})\n"
    namespace: dict[str, Any] = {}
    exec(source, namespace)
    return namespace["_row"]  # type: ignore[no-any-return]


_row = _compiled_row()
