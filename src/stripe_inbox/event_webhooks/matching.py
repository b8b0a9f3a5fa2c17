"""Which subscriptions each scanned event goes to, without testing every subscription's selector against every
event: equal selectors (the same event type and canonical arguments) are tested once for all their subscriptions,
and selectors that name a customer only against that customer's events (the common shape of a per-customer agent,
and the one that makes a thousand subscriptions many)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

from ..event_feed import Entry, Occurrence, Selector

Group = tuple[Selector, list[str]]  # one selector and the subscriptions that chose it


class Matcher:
    def __init__(self, selectors: Mapping[str, Selector]) -> None:
        """`selectors`: each subscription's, by subscription id."""
        groups: dict[str, Group] = {}
        by_customer: dict[str, list[Group]] = defaultdict(list)
        everyone: list[Group] = []
        for subscription_id, chosen in selectors.items():
            key = chosen.key
            if key not in groups:
                groups[key] = (chosen, [])
                customer = chosen.arguments.get("customer")
                (by_customer[customer] if isinstance(customer, str) else everyone).append(groups[key])
            groups[key][1].append(subscription_id)
        self._by_customer = dict(by_customer)
        self._everyone = everyone

    def admitted(self, entries: Sequence[Entry]) -> list[Entry]:
        """The entries some selector admits on their stored facts: the only ones to assess (feed.assess)."""
        return [entry for entry in entries if any(chosen.admits(entry) for chosen, _ in self._candidates(entry))]

    def occurrences(self, entries: Sequence[Entry]) -> dict[str, list[Occurrence]]:
        """What each subscription is sent of `entries`, in their order; only subscriptions with something. The
        entries some selector admits must have been assessed."""
        found: dict[str, list[Occurrence]] = defaultdict(list)
        for entry in entries:
            for chosen, subscribers in self._candidates(entry):
                if chosen.matches(entry):  # most do not: the occurrence is made only for those that do
                    occurrence = chosen.occurrence(entry)
                    for subscription_id in subscribers:
                        found[subscription_id].append(occurrence)  # type: ignore[arg-type]
        return found

    def _candidates(self, entry: Entry) -> list[Group]:
        stored = getattr(entry, "stored", None)
        customer = getattr(stored, "customer", None)
        named = self._by_customer.get(customer, ()) if customer is not None else ()
        return [*self._everyone, *named] if named else self._everyone
