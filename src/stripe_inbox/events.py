"""What the inbox knows about a Stripe event: the parsed envelope, its key facts, and the type filter."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import orjson

from .errors import DeliveryRejected

# Amount fields in the order that best describes what the event's object is about: a checkout's total,
# an invoice's amount due, and otherwise the object's own amount (a charge's, not what was refunded).
AMOUNT_FIELDS = ("amount_total", "amount_due", "amount")


@dataclass(frozen=True, slots=True)
class IncomingEvent:
    """A verified delivery, parsed once; `payload` keeps the exact bytes Stripe sent."""

    id: str
    type: str
    created: int
    livemode: bool
    customer: str | None
    account: str | None
    object_id: str | None
    amount: int | None
    currency: str | None
    payload: bytes
    kind: Literal["snapshot", "thin"] = "snapshot"
    related_object: dict[str, Any] | None = None  # what a thin event is about
    object_status: str | None = None  # data.object.status: what resolution reads of a generic `.updated`

    @classmethod
    def parse(cls, payload: bytes) -> IncomingEvent:
        try:
            event = orjson.loads(payload)
        except ValueError:
            raise DeliveryRejected("invalid_payload", "the body is not valid JSON") from None
        if not isinstance(event, dict):
            raise DeliveryRejected("invalid_payload", "the body is not a JSON object")
        event_id, event_type = event.get("id"), event.get("type")
        if not isinstance(event_id, str) or not event_id:
            raise DeliveryRejected("invalid_payload", "the event has no string 'id'")
        if not isinstance(event_type, str) or not event_type:
            raise DeliveryRejected("invalid_payload", "the event has no string 'type'")
        if event.get("object") == "v2.core.event":
            return cls._thin(event, event_id, event_type, payload)
        created = event.get("created")
        obj = data_object(event)
        _, amount, currency = amount_of(obj) or (None, None, None)
        account = event.get("account") if isinstance(event.get("account"), str) else None
        status = obj.get("status")
        return cls(
            id=event_id,
            type=event_type,
            created=_epoch(created),
            livemode=bool(event.get("livemode")),
            customer=customer_of(obj),
            account=account,
            object_id=obj.get("id") if isinstance(obj.get("id"), str) else None,
            amount=amount,
            currency=currency.lower() if currency else None,
            payload=payload,
            object_status=status if isinstance(status, str) else None,
        )

    @classmethod
    def _thin(cls, event: dict[str, Any], event_id: str, event_type: str, payload: bytes) -> IncomingEvent:
        related = event.get("related_object")
        if related is not None and not (isinstance(related, dict) and isinstance(related.get("id"), str)):
            raise DeliveryRejected("invalid_payload", "the thin event's related_object has no string 'id'")
        context = event.get("context")
        account = context if isinstance(context, str) and context.startswith("acct_") else None
        return cls(
            id=event_id,
            type=event_type,
            created=_epoch(event.get("created")),
            livemode=bool(event.get("livemode")),
            customer=None,
            account=account,
            object_id=related["id"] if related else None,
            amount=None,
            currency=None,
            payload=payload,
            kind="thin",
            related_object=related,
        )


def _epoch(value: Any) -> int:
    """Stripe's v1 events give Unix seconds; v2 events an ISO 8601 time."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())
        except ValueError:
            pass
    return 0


def data_object(event: dict[str, Any]) -> dict[str, Any]:
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    return obj if isinstance(obj, dict) else {}


def customer_of(obj: dict[str, Any]) -> str | None:
    candidate = obj.get("id") if obj.get("object") == "customer" else obj.get("customer")
    if isinstance(candidate, dict):  # an expanded customer
        candidate = candidate.get("id")
    return candidate if isinstance(candidate, str) and candidate else None


def amount_of(obj: dict[str, Any]) -> tuple[str, int, str] | None:
    """The field, amount (in minor units) and currency the event's object is about, if it has one."""
    currency = obj.get("currency")
    if not isinstance(currency, str):
        return None
    for field in AMOUNT_FIELDS:
        value = obj.get(field)
        if isinstance(value, int) and not isinstance(value, bool):
            return field, value, currency
    return None


ZERO_DECIMAL_CURRENCIES = frozenset(
    ["bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"]
)


def major_units(minor: int, currency: str) -> float:
    """49.0 from Stripe's 4900 minor units, honouring zero-decimal currencies."""
    return float(minor) if currency.lower() in ZERO_DECIMAL_CURRENCIES else minor / 100


def format_amount(minor: int, currency: str) -> str:
    """'USD 49.00' from Stripe's minor units."""
    if currency.lower() in ZERO_DECIMAL_CURRENCIES:
        return f"{currency.upper()} {minor:,}"
    return f"{currency.upper()} {major_units(minor, currency):,.2f}"


PATTERN = re.compile(r"\*|[a-z0-9_]+(\.[a-z0-9_]+)*(\.\*)?")


def check_patterns(patterns: list[str]) -> list[str]:
    """Event type patterns, as the config and `register` take them; a malformed one is a ValueError."""
    for pattern in patterns:
        if not PATTERN.fullmatch(pattern):
            raise ValueError(
                f"{pattern!r} is not an event type pattern: use '*', an exact type such as "
                "'invoice.paid', or a prefix such as 'invoice.*'"
            )
    return patterns


class EventFilter:
    """Which event types the inbox keeps: '*', exact names, and 'prefix.*' patterns."""

    def __init__(self, patterns: list[str]) -> None:
        self.everything = "*" in patterns
        self.exact = frozenset(p for p in patterns if not p.endswith(".*") and p != "*")
        self.prefixes = tuple(p[:-1] for p in patterns if p.endswith(".*"))

    def accepts(self, event_type: str) -> bool:
        return self.everything or event_type in self.exact or event_type.startswith(self.prefixes)
