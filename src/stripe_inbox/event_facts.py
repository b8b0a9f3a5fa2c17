"""The facts the inbox keeps of each event, declared once: name, type, SQL column type and where in the payload it
comes from. IncomingEvent's fields and StoredEvent's first ones are derived from them (`with_facts`), and so are
the insert's columns, placeholders and bulk row types and the row an event becomes (stores/ingest.py), the columns
the store reads and how a read row becomes a StoredEvent (stores/rows.py).

A new fact is one line here, its reading in IncomingEvent.parse, and its column in each database's migrations."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

EventKind = Literal["snapshot", "thin"]
Class = TypeVar("Class", bound=type)
REQUIRED: Any = object()  # a fact every event has: IncomingEvent takes it without a default


@dataclass(frozen=True, slots=True)
class EventFact:
    name: str  # the field of IncomingEvent and StoredEvent, and the events table's column
    type: Any  # what both hold
    column: str  # the column's SQL type, as a bulk insert casts its values (PostgreSQL's names)
    source: str  # where IncomingEvent.parse reads it
    default: Any = REQUIRED  # what IncomingEvent holds when parse does not say (the facts of only some events)
    loaded: Callable[[Any], Any] | None = None  # a read value as `type`, where a database stores it otherwise


FACTS: tuple[EventFact, ...] = (
    EventFact("id", str, "text", "id"),  # first: the insert's rows are sorted and the change log written by it
    EventFact("type", str, "text", "type"),
    EventFact("created", int, "bigint", "created, epoch seconds"),
    EventFact("livemode", bool, "boolean", "livemode", loaded=bool),  # SQLite stores 0 or 1
    EventFact("customer", str | None, "text", "data.object's customer, or the object itself when it is one"),
    EventFact("account", str | None, "text", "account; a thin event's context"),
    EventFact("object_id", str | None, "text", "data.object.id; a thin event's related_object.id"),
    EventFact("amount", int | None, "bigint", "data.object's amount_total, amount_due or amount, in minor units"),
    EventFact("currency", str | None, "text", "data.object.currency, lower case"),
    EventFact("payload", bytes, "bytea", "the exact bytes Stripe sent"),
    EventFact("kind", EventKind, "text", "object: a v2.core.event is thin", default="snapshot"),
    EventFact("related_object", str | None, "text", "a thin event's related_object, as JSON text", default=None),
    EventFact("object_status", str | None, "text", "data.object.status: what resolution reads", default=None),
)
FACT_NAMES: tuple[str, ...] = tuple(fact.name for fact in FACTS)


def with_facts(defaults: bool) -> Callable[[Class], Class]:
    """The class as a frozen dataclass whose fields are the facts, then its own; with `defaults`, a fact that
    declares one may be left out."""

    def derive(cls: Class) -> Class:
        own = inspect.get_annotations(cls)
        cls.__annotations__ = {**{fact.name: fact.type for fact in FACTS}, **own}
        for fact in FACTS:
            if defaults and fact.default is not REQUIRED:
                setattr(cls, fact.name, fact.default)
        return dataclass(frozen=True, slots=True)(cls)

    return derive
