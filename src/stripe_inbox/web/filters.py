"""The search form of the dashboard's lists: every filter DESIGN §8 names, of which the form shows those that
`Inbox.list_events` takes, so a filter the inbox learns appears on the page without a change here."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import InvalidArgument

InputKind = Literal["text", "select", "number", "date"]
STATUSES = ("pending", "acked", "all")


def _text(raw: str) -> str:
    return raw


def _number(raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise InvalidArgument(f"{raw!r} is not an amount") from None


def _boolean(raw: str) -> bool:
    if raw not in ("true", "false"):
        raise InvalidArgument(f"livemode must be 'true' or 'false', not {raw!r}")
    return raw == "true"


@dataclass(frozen=True, slots=True)
class FilterField:
    name: str  # the list_events argument, and the query-string key
    label: str
    input: InputKind = "text"
    choices: tuple[str, ...] = ()  # for a select; "" (any) comes first unless the field has a default
    placeholder: str = ""
    parse: Callable[[str], Any] = _text


FILTERS: tuple[FilterField, ...] = (
    FilterField("status", "Status", "select", STATUSES),
    FilterField("query", "Search", placeholder="ids, e-mails, names, messages…"),
    FilterField("type", "Type", placeholder="invoice.payment_failed"),
    FilterField("customer", "Customer", placeholder="cus_…"),
    FilterField("account", "Account", placeholder="acct_…"),
    FilterField("object_id", "Object", placeholder="in_…, pi_…, ch_…"),
    FilterField("email", "E-mail"),
    FilterField("amount_gte", "Amount ≥", "number", parse=_number),
    FilterField("amount_lte", "Amount ≤", "number", parse=_number),
    FilterField("currency", "Currency", placeholder="usd"),
    FilterField("created_after", "Created after", "date"),
    FilterField("created_before", "Created before", "date"),
    FilterField("livemode", "Mode", "select", ("", "true", "false"), parse=_boolean),
)


def supported_filters(list_events: Callable[..., Any]) -> tuple[FilterField, ...]:
    """The filters `list_events` accepts, in the form's order."""
    accepted = inspect.signature(list_events).parameters
    return tuple(field for field in FILTERS if field.name in accepted)


@dataclass(frozen=True, slots=True)
class Search:
    """A list's filters as the URL carries them (`values`, raw, for the form and links) and as list_events
    takes them (`arguments`)."""

    values: dict[str, str]
    arguments: dict[str, Any]

    @classmethod
    def from_query(
        cls, fields: tuple[FilterField, ...], query: Mapping[str, str], defaults: Mapping[str, str]
    ) -> Search:
        values: dict[str, str] = {}
        arguments: dict[str, Any] = {}
        for field in fields:
            raw = query.get(field.name, defaults.get(field.name, "")).strip()
            if not raw:
                continue
            values[field.name] = raw
            arguments[field.name] = field.parse(raw)
        status = values.get("status")
        if status is not None and status not in STATUSES:
            raise InvalidArgument(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
        return cls(values, arguments)
