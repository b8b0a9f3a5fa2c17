"""The filters of an event list, each declared once: its name, the type and default a caller gives it and MCP
publishes, its `events list` flag, its dashboard field, and how its value is checked and turned into what the store
compares (minor units, epoch seconds, search terms) under EventQuery's field of that name. MCP's list_events,
the CLI, the dashboard's form and Inbox.list_events are derived from these; a bad value names its argument."""

from __future__ import annotations

import functools
import inspect
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Generic, Literal, TypeVar, get_args

from pydantic import Field

from .errors import InvalidArgument
from .events import ZERO_DECIMAL_CURRENCIES
from .indexing import words

MAX_PAGE = 100
MAX_QUERY_WORDS = 16
CURRENCY_CODE = re.compile(r"[a-z]{3}")
Status = Literal["pending", "acked", "all"]
Check = Callable[[str, Any], Any]
Owner = TypeVar("Owner")
Result = TypeVar("Result")


# -- turning a caller's value into the store's ---------------------------------------------------------------


def query_words(name: str, query: str | None) -> tuple[str, ...]:
    if query is None or not query.strip():
        return ()
    found = tuple(dict.fromkeys(words(query)))
    if not found:
        raise InvalidArgument(f"{name} {query!r} has no words to search for: give ids, e-mails, names or words")
    if len(found) > MAX_QUERY_WORDS:
        raise InvalidArgument(f"{name} has {len(found)} words; at most {MAX_QUERY_WORDS}")
    return found


def currency_code(name: str, currency: str | None) -> str | None:
    if currency is None or not currency.strip():
        return None
    code = currency.strip().lower()
    if not CURRENCY_CODE.fullmatch(code):
        raise InvalidArgument(f"{name} {currency!r} is not a three-letter ISO currency code such as usd")
    return code


def check_amount(name: str, major: float | None) -> Decimal | None:
    if major is None:
        return None
    if isinstance(major, bool) or not math.isfinite(major) or major < 0:
        raise InvalidArgument(f"{name} must be an amount of 0 or more in major units (49.99), not {major!r}")
    try:
        return Decimal(str(major))
    except InvalidOperation:
        raise InvalidArgument(f"{name} {major!r} is not an amount") from None


def minor_units(major: Decimal, currency: str, round_up: bool) -> int:
    """Stripe's minor units of a major amount; a bound between two of them rounds inward."""
    exact = major if currency in ZERO_DECIMAL_CURRENCIES else major * 100
    return math.ceil(exact) if round_up else math.floor(exact)


def epoch(name: str, value: str | None) -> int | None:
    """Epoch seconds of an ISO 8601 date (its midnight) or date-time, UTC where it names no offset; a bound
    that falls within a second rounds up, as `created` counts whole seconds."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        if len(text) == 10:
            moment = datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InvalidArgument(
            f"{name} {value!r} is not an ISO 8601 date or date-time, e.g. 2026-01-31 or 2026-01-31T14:00:00Z"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return math.ceil(moment.timestamp())


def status_term(name: str, status: str) -> str | None:
    if status not in get_args(Status):
        raise InvalidArgument(f"{name} must be 'pending', 'acked' or 'all', not {status!r}")
    return None if status == "all" else status


def page_term(name: str, limit: int) -> int:
    return limit + 1  # the store reads one event past the page: whether another page follows


def cursor_term(name: str, cursor: str | None) -> int | None:
    if cursor is not None and not cursor.isdigit():
        raise InvalidArgument(f"{name} {cursor!r} is not one that list_events returned")
    return None if cursor is None else int(cursor)


def id_term(name: str, value: str | None) -> str | None:
    return value.strip() if value and value.strip() else None


def email_term(name: str, value: str | None) -> str | None:
    return value.strip().lower() if value and value.strip() else None


def given_or_none(name: str, value: Any) -> Any:
    return value or None


def as_given(name: str, value: Any) -> Any:
    return value


# -- the declarations -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Flag:
    """How `events list` takes a filter: `--` and its name with dashes unless `flag` says otherwise; its parsing
    follows the filter's type."""

    flag: str | None = None
    metavar: str | None = None
    help: str | None = None


@dataclass(frozen=True, slots=True)
class Widget:
    """The filter's field in the dashboard's form; a select's choices follow the filter's type."""

    label: str
    input: Literal["text", "select", "number", "date"] = "text"
    placeholder: str = ""
    lead: bool = False  # shown before the others (the status and the search box)


@dataclass(frozen=True, slots=True)
class Filter:
    name: str  # list_events' argument (MCP and Inbox) and the dashboard's query-string key
    type: Any  # what a caller gives: MCP's schema, the flag's and the form's parsing follow it
    default: Any = None
    description: str | None = None  # MCP's
    bounds: tuple[int, int] | None = None  # the least and most a number may be
    term: Check = given_or_none  # the value as the store compares it, or InvalidArgument naming the filter
    key: str | None = None  # EventQuery's field for the term: the filter's name unless told
    flag: Flag | None = Flag()  # None: no `events list` flag
    widget: Widget | None = None  # None: not in the form
    round_up: bool | None = None  # an amount in major units: its minor units round up (a least) or down

    @property
    def store_key(self) -> str:
        return self.key or self.name

    def store_term(self, value: Any) -> Any:
        if self.bounds is not None and not self.bounds[0] <= value <= self.bounds[1]:
            raise InvalidArgument(f"{self.name} must be between {self.bounds[0]} and {self.bounds[1]}, not {value}")
        return self.term(self.name, value)


# The work queue and its pages: what list_events took before search came, which may be given by position.
SELECTION: tuple[Filter, ...] = (
    Filter("status", Status, "pending", term=status_term, widget=Widget("Status", "select", lead=True)),
    Filter(
        "type",
        str | None,
        description="exact event type, e.g. invoice.payment_failed",
        widget=Widget("Type", placeholder="invoice.payment_failed"),
    ),
    Filter("customer", str | None, description="cus_...", widget=Widget("Customer", placeholder="cus_…")),
    Filter(
        "account",
        str | None,
        description="Connect account, acct_...",
        flag=Flag(help="a Connect account, acct_…"),
        widget=Widget("Account", placeholder="acct_…"),
    ),
    Filter("limit", int, 20, bounds=(1, MAX_PAGE), term=page_term),
    Filter(
        "cursor", str | None, description="next_cursor of the previous page", term=cursor_term, key="after", flag=None
    ),
)
CURRENCY = Filter(
    "currency",
    str | None,
    description="e.g. usd; needed if several",
    term=currency_code,
    flag=Flag(help="e.g. usd (needed with an amount when the events hold several)"),
    widget=Widget("Currency", placeholder="usd"),
)
# DESIGN §8's search filters, given by name.
SEARCH: tuple[Filter, ...] = (
    Filter(
        "query",
        str | None,
        description="words, ids (or their ends), e-mails, names, messages",
        term=query_words,
        key="words",
        flag=Flag(help="full text: ids (or their ends), e-mails, names, descriptions, messages"),
        widget=Widget("Search", placeholder="ids, e-mails, names, messages…", lead=True),
    ),
    Filter(
        "object_id",
        str | None,
        description="any id it is about: in_, pi_, ch_, sub_, du_...",
        term=id_term,
        flag=Flag("--object", "ID", "any Stripe id the event is about: in_…, pi_…, ch_…, sub_…"),
        widget=Widget("Object", placeholder="in_…, pi_…, ch_…"),
    ),
    Filter("email", str | None, term=email_term, widget=Widget("E-mail")),
    Filter(
        "amount_gte",
        float | None,
        description="major units",
        term=check_amount,
        round_up=True,
        flag=Flag(metavar="AMOUNT", help="in major units, e.g. 500"),
        widget=Widget("Amount ≥", "number"),
    ),
    Filter(
        "amount_lte",
        float | None,
        term=check_amount,
        round_up=False,
        flag=Flag(metavar="AMOUNT"),
        widget=Widget("Amount ≤", "number"),
    ),
    CURRENCY,
    Filter(
        "created_after",
        str | None,
        description="ISO 8601, UTC if no offset",
        term=epoch,
        flag=Flag(metavar="WHEN", help="ISO 8601 date or date-time (UTC if no offset)"),
        widget=Widget("Created after", "date"),
    ),
    Filter(
        "created_before", str | None, term=epoch, flag=Flag(metavar="WHEN"), widget=Widget("Created before", "date")
    ),
    Filter(
        "livemode",
        bool | None,
        term=as_given,
        flag=Flag(help="live events only, or test (false)"),
        widget=Widget("Mode", "select"),
    ),
)
FILTERS: tuple[Filter, ...] = SELECTION + SEARCH
BY_NAME: dict[str, Filter] = {each.name: each for each in FILTERS}


AMOUNTS: tuple[Filter, ...] = tuple(each for each in FILTERS if each.round_up is not None)
# The filters MCP Events' stripe.event also takes (event_feed/catalog.py), by their names, types and checks here.
WATCHED: tuple[Filter, ...] = tuple(
    BY_NAME[name] for name in ("customer", "object_id", "account", "livemode", "amount_gte", "currency")
)


@dataclass(frozen=True, slots=True)
class Range:
    """Two filters that bound one value: the least must come before the most."""

    least: str
    most: str
    wording: str
    strict: bool  # the least must be below the most, not equal to it


RANGES = (
    Range("created_after", "created_before", "must be before", strict=True),
    Range("amount_gte", "amount_lte", "must not be more than", strict=False),
)


# -- what the store is asked ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Terms:
    """The filters as the store compares them, keyed as EventQuery takes them; an amount waits in major units for
    its currency (`priced`)."""

    values: dict[str, Any]

    @classmethod
    def of(cls, given: Mapping[str, Any]) -> Terms:
        """Each filter's value checked and turned, the ones missing from `given` at their defaults."""
        values = {each.store_key: each.store_term(given.get(each.name, each.default)) for each in FILTERS}
        for bound in RANGES:
            least, most = (values[BY_NAME[name].store_key] for name in (bound.least, bound.most))
            if least is not None and most is not None and (least >= most if bound.strict else least > most):
                shown = f"{given[bound.least]!r} {bound.wording} {bound.most} {given[bound.most]!r}"
                raise InvalidArgument(f"{bound.least} {shown}")
        return cls(values)

    def amount_without_currency(self) -> str | None:
        """The first amount filter given when no currency is: the events then say which currency it is in."""
        if self.values[CURRENCY.store_key] is not None:
            return None
        return next((each.name for each in AMOUNTS if self.values[each.store_key] is not None), None)

    def priced(self, held: str | None = None) -> dict[str, Any]:
        """The terms with each amount in minor units of the currency given, else of `held` (the only one the events
        hold). Without a currency no event holds an amount: the bound matches nothing, whatever its units."""
        currency = self.values[CURRENCY.store_key] or held
        priced = {
            each.store_key: minor_units(major, currency or "usd", bool(each.round_up))
            for each in AMOUNTS
            if (major := self.values[each.store_key]) is not None
        }
        return {**self.values, CURRENCY.store_key: currency, **priced}


# -- the signature list_events has everywhere -------------------------------------------------------------------


def _parameter(each: Filter, by_name_only: bool) -> inspect.Parameter:
    low, high = each.bounds or (None, None)
    described = {"description": each.description, "ge": low, "le": high}
    schema = {key: value for key, value in described.items() if value is not None}
    annotation = Annotated[each.type, Field(**schema)] if schema else each.type
    kind = inspect.Parameter.KEYWORD_ONLY if by_name_only else inspect.Parameter.POSITIONAL_OR_KEYWORD
    return inspect.Parameter(each.name, kind, default=each.default, annotation=annotation)


PARAMETERS = [
    *(_parameter(each, by_name_only=False) for each in SELECTION),
    *(_parameter(each, by_name_only=True) for each in SEARCH),
]
ARGUMENTS = inspect.Signature(PARAMETERS)


class taking_filters(Generic[Owner, Result]):  # lower case: a decorator, like functools.cached_property
    """`method(self, given)` as a method that takes the filters as its arguments (the selection's also by position)
    and has their signature, which MCP publishes; `given` holds every filter's value, its default where not given."""

    def __init__(self, method: Callable[[Owner, dict[str, Any]], Awaitable[Result]]) -> None:
        self.method = method
        functools.update_wrapper(self, method)
        returns = inspect.signature(method, eval_str=True).return_annotation
        self.bound_signature = ARGUMENTS.replace(return_annotation=returns)

    def __get__(self, owner: Owner | None, kind: type | None = None) -> Any:
        if owner is None:
            return self

        async def with_filters(*args: Any, **kwargs: Any) -> Result:
            given = ARGUMENTS.bind(*args, **kwargs)
            given.apply_defaults()
            return await self.method(owner, given.arguments)

        functools.update_wrapper(with_filters, self.method)
        with_filters.__signature__ = self.bound_signature  # type: ignore[attr-defined]
        return with_filters
