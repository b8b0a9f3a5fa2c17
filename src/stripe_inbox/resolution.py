"""Events that resolve each other, and events that arrive out of order. Stripe does not promise to deliver
in order, and an invoice that failed may be paid an hour later: an agent should see both before it acts.

The table follows the lifecycles Stripe documents for each object: a later event about the same object
(`data.object.id`) of a resolving kind supersedes the earlier one."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Step:
    """An event type, and for a generic `.updated` the status it reports its object in."""

    type: str
    status: str | None = None


# Types whose meaning lies in the status they report.
STATUS_TYPES = frozenset(["customer.subscription.updated"])
INVOICE_SETTLED = (
    Step("invoice.paid"),
    Step("invoice.payment_succeeded"),
    Step("invoice.voided"),
    Step("invoice.marked_uncollectible"),
)
PAYMENT_INTENT_SETTLED = (Step("payment_intent.succeeded"), Step("payment_intent.canceled"))
SUBSCRIPTION_SETTLED = (Step("customer.subscription.updated", "active"), Step("customer.subscription.deleted"))
# What each step is resolved by.
RESOLVED_BY: dict[Step, tuple[Step, ...]] = {
    Step("invoice.payment_failed"): INVOICE_SETTLED,
    Step("invoice.payment_action_required"): INVOICE_SETTLED,
    Step("payment_intent.payment_failed"): PAYMENT_INTENT_SETTLED,
    Step("payment_intent.requires_action"): PAYMENT_INTENT_SETTLED,
    Step("charge.dispute.created"): (Step("charge.dispute.closed"),),
    Step("charge.dispute.updated"): (Step("charge.dispute.closed"),),
    Step("charge.dispute.funds_withdrawn"): (Step("charge.dispute.closed"),),
    Step("customer.subscription.updated", "past_due"): SUBSCRIPTION_SETTLED,
    Step("customer.subscription.updated", "unpaid"): SUBSCRIPTION_SETTLED,
    Step("checkout.session.async_payment_failed"): (Step("checkout.session.async_payment_succeeded"),),
    Step("setup_intent.setup_failed"): (Step("setup_intent.succeeded"), Step("setup_intent.canceled")),
}
RESOLVABLE_TYPES = frozenset(step.type for step in RESOLVED_BY)


@dataclass(frozen=True, slots=True)
class Resolution:
    superseded_by: str | None = None  # the earliest later event about the same object that resolves this one
    stale: bool = False  # a newer event about the same object was stored before this one arrived


@dataclass(frozen=True, slots=True)
class Fact:
    """An event as resolution reads it."""

    id: str
    type: str
    object_id: str | None
    object_status: str | None
    created: int  # Stripe's time
    seq: int  # arrival order

    @property
    def step(self) -> Step:
        return Step(self.type, self.object_status if self.type in STATUS_TYPES else None)


def resolve(events: Sequence[Fact], neighbours: Sequence[Fact]) -> dict[str, Resolution]:
    """Each of `events`' resolution, from `neighbours`: the stored events about the same objects (at least
    those created no earlier than it)."""
    about: dict[str, list[Fact]] = defaultdict(list)
    for neighbour in neighbours:
        if neighbour.object_id is not None:
            about[neighbour.object_id].append(neighbour)
    resolved = {}
    for event in events:
        others = about.get(event.object_id or "", [])
        stale = any(other.created > event.created and other.seq < event.seq for other in others)
        resolvers = RESOLVED_BY.get(event.step, ())
        later = [
            other
            for other in others
            if other.step in resolvers and (other.created, other.seq) > (event.created, event.seq)
        ]
        first = min(later, key=lambda other: (other.created, other.seq), default=None)
        resolved[event.id] = Resolution(superseded_by=first.id if first else None, stale=stale)
    return resolved
