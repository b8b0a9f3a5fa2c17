"""The search filters as callers give them (major units, ISO 8601 times, free text), checked and turned into
what the store compares: minor units, epoch seconds, search terms. A bad value names its argument."""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation

from .errors import InvalidArgument
from .events import ZERO_DECIMAL_CURRENCIES
from .indexing import words

MAX_QUERY_WORDS = 16
CURRENCY = re.compile(r"[a-z]{3}")


def query_words(query: str | None) -> tuple[str, ...]:
    if query is None or not query.strip():
        return ()
    found = tuple(dict.fromkeys(words(query)))
    if not found:
        raise InvalidArgument(f"query {query!r} has no words to search for: give ids, e-mails, names or words")
    if len(found) > MAX_QUERY_WORDS:
        raise InvalidArgument(f"query has {len(found)} words; at most {MAX_QUERY_WORDS}")
    return found


def currency_code(currency: str | None) -> str | None:
    if currency is None or not currency.strip():
        return None
    code = currency.strip().lower()
    if not CURRENCY.fullmatch(code):
        raise InvalidArgument(f"currency {currency!r} is not a three-letter ISO currency code such as usd")
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
