"""A subscriber's choice of events: an event type's arguments checked, in a canonical form (the same choice gives
the same JSON, whatever order or defaults it was given in: stable for hashing and storing), and the test of each
feed entry against it, in memory, so one read of the feed serves any number of subscribers.

A delivery pass tests every subscriber's selector against every new event, so a selector turns its arguments
into plain values once, when it is made (a type's exact names and prefixes, a rank, amount bounds in minor
units), and `matches` is a few attribute reads and comparisons."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ..events import EventFilter
from ..filters import AMOUNTS, CURRENCY, Filter, minor_units
from ..models import PRIORITIES
from .entries import STRIPE_EVENT, AlertEntry, Occurrence, StripeEntry

Entry = StripeEntry | AlertEntry
RELATED = "object_id"  # the filter whose term is any id the event is about (StripeEntry.related_ids), not a column


@dataclass(frozen=True, slots=True)
class Selector:
    name: str
    arguments: dict[str, Any]  # canonical: only what narrows the choice or asks for more, JSON-able

    @property
    def key(self) -> str:
        """The canonical JSON of the event type and its arguments: equal for equal choices."""
        return json.dumps({"name": self.name, "arguments": self.arguments}, sort_keys=True, separators=(",", ":"))

    def admits(self, entry: Entry) -> bool:
        """Whether `entry` may match, from what the inbox stored of it alone (a Stripe event's triage aside)."""
        raise NotImplementedError

    def matches(self, entry: Entry) -> bool:
        """Whether `entry` matches; a Stripe event this admits must have been assessed (feed.assess)."""
        return self.admits(entry)

    def occurrence(self, entry: Entry) -> Occurrence | None:
        """What this subscriber is sent of `entry`, or None when it does not match."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class StripeEventSelector(Selector):
    """stripe.event, as `compiled` turns its checked arguments; each test holds as list_events would find the
    event by the same filter. None (or empty, or 0) tests nothing."""

    exact_types: frozenset[str] | None = None  # None: every type; else these names or `type_prefixes`
    type_prefixes: tuple[str, ...] = ()
    least_rank: int = 0  # min_priority's place in PRIORITIES
    currency: str | None = None  # lower case, as StripeEntry.currency; an amount bound is in it
    bounded: bool = False  # whether an amount must lie within least_amount and most_amount (minor units)
    least_amount: float = -math.inf
    most_amount: float = math.inf
    equal: tuple[tuple[str, Any], ...] = ()  # a stored event's attribute and the value it must have
    related: str | None = None  # an id the event must be about (object_id)
    include_payload: bool = False

    @classmethod
    def compiled(
        cls,
        arguments: dict[str, Any],
        watched: Iterable[tuple[Filter, Any]],
        patterns: list[str] | None,
        min_priority: str | None,
        include_payload: bool,
    ) -> StripeEventSelector:
        """`watched`: each filters.py filter given and its value as the filter's own check turned it (an amount
        in major units as a Decimal, a currency in lower case); `patterns`: None for every type."""
        terms = dict(watched)
        currency = terms.pop(CURRENCY, None)
        bounds: dict[bool, int] = {}
        for each in AMOUNTS:
            if each in terms:
                if currency is None:
                    raise ValueError(f"{each.name} is in no currency")  # the catalog asks for one first
                bounds[bool(each.round_up)] = minor_units(Decimal(terms.pop(each)), currency, bool(each.round_up))
        related = next((terms.pop(each) for each in list(terms) if each.store_key == RELATED), None)
        types = None if patterns is None else EventFilter(patterns)
        return cls(
            STRIPE_EVENT,
            arguments,
            exact_types=None if types is None else types.exact,
            type_prefixes=() if types is None else types.prefixes,
            least_rank=0 if min_priority is None else PRIORITIES.index(min_priority),  # type: ignore[arg-type]
            currency=currency,
            bounded=bool(bounds),
            least_amount=bounds.get(True, -math.inf),
            most_amount=bounds.get(False, math.inf),
            equal=tuple((each.store_key, value) for each, value in terms.items()),
            related=related,
            include_payload=include_payload,
        )

    def admits(self, entry: Entry) -> bool:
        if not isinstance(entry, StripeEntry):
            return False
        if self.currency is not None:
            if entry.currency != self.currency:
                return False
            if self.bounded and (entry.amount is None or not self.least_amount <= entry.amount <= self.most_amount):
                return False
        kind = entry.type
        if self.exact_types is not None and kind not in self.exact_types and not kind.startswith(self.type_prefixes):
            return False
        if self.equal:
            for attribute, value in self.equal:
                if getattr(entry.stored, attribute) != value:
                    return False
        return self.related is None or self.related in entry.related_ids

    def matches(self, entry: Entry) -> bool:
        return self.admits(entry) and entry.rank >= self.least_rank  # type: ignore[union-attr]

    def occurrence(self, entry: Entry) -> Occurrence | None:
        return entry.occurrence(self.include_payload) if self.matches(entry) else None  # type: ignore[union-attr]


@dataclass(frozen=True, slots=True)
class AlertSelector(Selector):
    """inbox.alert: every incident, or those named."""

    incidents: frozenset[str] | None = None

    def admits(self, entry: Entry) -> bool:
        return isinstance(entry, AlertEntry) and (self.incidents is None or entry.incident in self.incidents)

    def occurrence(self, entry: Entry) -> Occurrence | None:
        return entry.occurrence() if isinstance(entry, AlertEntry) and self.admits(entry) else None
