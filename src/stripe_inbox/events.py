"""What the inbox knows about a Stripe event: the parsed envelope, its key facts, and the type filter."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

import orjson

from .errors import DeliveryRejected
from .event_facts import with_facts

# Amount fields in the order that best describes what the event's object is about: a checkout's total,
# an invoice's amount due, and otherwise the object's own amount (a charge's, not what was refunded).
AMOUNT_FIELDS = ("amount_total", "amount_due", "amount")
# Nesting of objects and arrays an event may have. Stripe's deepest events nest about a dozen levels; every reader
# (redaction, the prompts, the dashboard's templates) walks an event recursively, so a deeper one is refused.
MAX_DEPTH = 64
TOO_DEEP = f"[nested deeper than {MAX_DEPTH} levels: omitted here; the stored payload keeps it]"
# What the depth check reads: JSON's structure (brackets, string quotes), and besides it the backslash and every
# character a backslash may escape, so that escapes can be told apart.
_NOT_STRUCTURE = bytes(sorted(set(range(256)) - set(b'{}[]"')))
_NOT_MARK = bytes(sorted(set(range(256)) - set(b'{}[]"\\/bfnrtu')))
_INNERMOST = re.compile(rb"\{\}|\[\]")
# The shape of Stripe's object ids: a lower-case prefix and word parts, `evt_1NG8…`, `evt_test_65R9…`, `cus_…`.
STRIPE_ID = re.compile(r"[a-z][a-z0-9]*(?:_[A-Za-z0-9]+)+")
MAX_ID_LENGTH = 255


def is_stripe_id(value: str) -> bool:
    return len(value) <= MAX_ID_LENGTH and STRIPE_ID.fullmatch(value) is not None


@with_facts(defaults=True)
class IncomingEvent:
    """A verified delivery, parsed once: its fields are the facts of event_facts.py; `payload` keeps the exact
    bytes Stripe sent."""

    @classmethod
    def parse(cls, payload: bytes) -> IncomingEvent:
        try:
            event = orjson.loads(payload)
        except ValueError:
            raise DeliveryRejected("invalid_payload", "the body is not valid JSON") from None
        if nests_deeper(payload, MAX_DEPTH):
            raise DeliveryRejected("invalid_payload", f"the event nests objects or arrays over {MAX_DEPTH} levels deep")
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
        if not is_stripe_id(event_id):  # the full event is fetched from Stripe by this id
            raise DeliveryRejected("invalid_payload", "the thin event's 'id' is not a Stripe id such as evt_…")
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
            related_object=None if related is None else json.dumps(related),
        )


def nests_deeper(payload: bytes, limit: int) -> bool:
    """Whether valid JSON `payload` nests objects and arrays deeper than `limit` levels, read from its brackets
    with bytes operations that run in C: the ingress pays microseconds, not a walk over the parsed event."""
    marks = payload.translate(None, _NOT_MARK)
    if marks.count(b"{") + marks.count(b"[") <= limit:
        return False
    if b"\\" in marks:  # each escape's backslash is still followed by what it escapes: take out \\ and \"
        marks = marks.replace(b"\\\\", b"").replace(b'\\"', b"")
    # Every quote left opens or closes a string, whose brackets are text, not structure. A pair of adjacent
    # quotes encloses no bracket, so dropping those first leaves few strings (usually none) to take out.
    skeleton = marks.translate(None, _NOT_STRUCTURE).replace(b'""', b"")
    if b'"' in skeleton:
        skeleton = b"".join(skeleton.split(b'"')[::2])
    for passes in range(limit):
        if len(skeleton) <= 2 * (limit - passes):  # too short to hold what would be too deep
            return False
        skeleton = _INNERMOST.sub(b"", skeleton)  # each pass removes exactly one level, the innermost
    return bool(skeleton)


def read_stored(payload: bytes, event_id: str, event_type: str) -> dict[str, Any]:
    """A stored event as every reader can walk it. An older release stored what the ingress now refuses: what
    nests deeper than MAX_DEPTH is cut off with a note, and what does not parse is replaced by a note."""
    try:
        event = orjson.loads(payload)
    except ValueError as error:
        return _unreadable(event_id, event_type, f"the stored payload does not parse ({error})")
    if not isinstance(event, dict):
        return _unreadable(event_id, event_type, "the stored payload is not a JSON object")
    return _pruned(event, MAX_DEPTH) if nests_deeper(payload, MAX_DEPTH) else event


def _pruned(value: Any, levels: int) -> Any:
    """`value` with the containers below `levels` more levels replaced by TOO_DEEP; recurses at most `levels`."""
    if isinstance(value, dict | list) and levels == 0:
        return TOO_DEEP
    if isinstance(value, dict):
        return {key: _pruned(item, levels - 1) for key, item in value.items()}
    if isinstance(value, list):
        return [_pruned(item, levels - 1) for item in value]
    return value


def _unreadable(event_id: str, event_type: str, why: str) -> dict[str, Any]:
    return {"id": event_id, "object": "event", "type": event_type, "unreadable": why}


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
