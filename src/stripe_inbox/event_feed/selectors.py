"""A subscriber's choice of events: an event type's arguments checked, in a canonical form (the same choice gives
the same JSON, whatever order or defaults it was given in: stable for hashing and storing), and the test of each
feed entry against it, in memory, so one read of the feed serves any number of subscribers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ..events import EventFilter
from ..filters import AMOUNTS, CURRENCY, Filter, minor_units
from ..models import PRIORITIES
from .entries import AlertEntry, Occurrence, StripeEntry

Entry = StripeEntry | AlertEntry


@dataclass(frozen=True, slots=True)
class Selector:
    name: str
    arguments: dict[str, Any]  # canonical: only what narrows the choice or asks for more, JSON-able

    @property
    def key(self) -> str:
        """The canonical JSON of the event type and its arguments: equal for equal choices."""
        return json.dumps({"name": self.name, "arguments": self.arguments}, sort_keys=True, separators=(",", ":"))

    def matches(self, entry: Entry) -> bool:
        raise NotImplementedError

    def occurrence(self, entry: Entry) -> Occurrence | None:
        """What this subscriber is sent of `entry`, or None when it does not match."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class StripeEventSelector(Selector):
    """stripe.event: its arguments as catalog.py checked them; `watched` maps a filters.py filter to its value as
    the filter's own check turned it (an amount in major units as a Decimal, a currency in lower case)."""

    watched: tuple[tuple[Filter, Any], ...] = ()
    types: EventFilter | None = None
    min_priority: str | None = None
    include_payload: bool = False

    def matches(self, entry: Entry) -> bool:
        if not isinstance(entry, StripeEntry):
            return False
        stored = entry.stored
        if self.types is not None and not self.types.accepts(stored.type):
            return False
        if self.min_priority is not None and PRIORITIES.index(entry.priority) < PRIORITIES.index(self.min_priority):
            return False
        currency = dict(self.watched).get(CURRENCY)
        return all(_holds(each, value, entry, currency) for each, value in self.watched)

    def occurrence(self, entry: Entry) -> Occurrence | None:
        if not isinstance(entry, StripeEntry) or not self.matches(entry):
            return None
        return entry.occurrence(self.include_payload)


def _holds(each: Filter, value: Any, entry: StripeEntry, currency: str | None) -> bool:
    """Whether the stored event meets one filter, as list_events would find it by that filter."""
    stored = entry.stored
    if each is CURRENCY:
        return stored.currency is not None and stored.currency.lower() == value
    if each in AMOUNTS:
        if stored.amount is None or stored.currency is None or currency is None:
            return False
        bound = minor_units(Decimal(value), currency, bool(each.round_up))
        return stored.amount >= bound if each.round_up else stored.amount <= bound
    if each.store_key == "object_id":
        return value in entry.related_ids
    return bool(getattr(stored, each.store_key) == value)


@dataclass(frozen=True, slots=True)
class AlertSelector(Selector):
    """inbox.alert: every incident, or those named."""

    incidents: frozenset[str] | None = None

    def matches(self, entry: Entry) -> bool:
        return isinstance(entry, AlertEntry) and (self.incidents is None or entry.incident in self.incidents)

    def occurrence(self, entry: Entry) -> Occurrence | None:
        return entry.occurrence() if isinstance(entry, AlertEntry) and self.matches(entry) else None
