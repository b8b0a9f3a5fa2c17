"""Which subscriptions each scanned event goes to, without testing every subscription's selector against every
event: equal selectors (the same event type and canonical arguments) are tested once for all their subscriptions,
and selectors that name a customer only against that customer's events (the common shape of a per-customer agent,
and the one that makes a thousand subscriptions many)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

from ..event_feed import Entry, Occurrence, Selector


class Matcher:
    def __init__(self, selectors: Mapping[str, Selector]) -> None:
        """`selectors`: each subscription's, by subscription id."""
        self._selectors: dict[str, Selector] = {}
        self._subscribers: dict[str, list[str]] = defaultdict(list)
        by_customer: dict[str, list[str]] = defaultdict(list)
        everyone: list[str] = []
        for subscription_id, chosen in selectors.items():
            key = chosen.key
            if key not in self._selectors:
                self._selectors[key] = chosen
                customer = chosen.arguments.get("customer")
                (by_customer[customer] if isinstance(customer, str) else everyone).append(key)
            self._subscribers[key].append(subscription_id)
        self._by_customer = dict(by_customer)
        self._everyone = everyone

    def occurrences(self, entries: Sequence[Entry]) -> dict[str, list[Occurrence]]:
        """What each subscription is sent of `entries`, in their order; only subscriptions with something."""
        found: dict[str, list[Occurrence]] = defaultdict(list)
        for entry in entries:
            for key in self._candidates(entry):
                occurrence = self._selectors[key].occurrence(entry)
                if occurrence is not None:
                    for subscription_id in self._subscribers[key]:
                        found[subscription_id].append(occurrence)
        return found

    def _candidates(self, entry: Entry) -> Iterable[str]:
        stored = getattr(entry, "stored", None)
        customer = getattr(stored, "customer", None)
        named = self._by_customer.get(customer, ()) if customer is not None else ()
        return [*self._everyone, *named] if named else self._everyone
