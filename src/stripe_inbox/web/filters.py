"""The search form of the dashboard's lists: a field for each filter of filters.py that has a widget, the search box
first, each reading its text by the type its filter takes."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

from ..errors import InvalidArgument
from ..filters import FILTERS, Filter, Widget


@dataclass(frozen=True, slots=True)
class FilterField:
    name: str  # the list_events argument, and the query-string key
    label: str
    input: Literal["text", "select", "number", "date"]
    choices: tuple[str, ...]  # for a select; "" (any) comes first unless the filter has a default
    placeholder: str
    parse: Callable[[str], Any]


def _choices(each: Filter) -> tuple[str, ...]:
    if get_origin(each.type) is Literal:
        values: tuple[str, ...] = get_args(each.type)
    elif bool in get_args(each.type):
        values = ("true", "false")
    else:
        return ()
    return values if each.default is not None else ("", *values)


def _read(each: Filter, raw: str) -> Any:
    """The field's text as its filter takes it."""
    if get_origin(each.type) is Literal and raw not in get_args(each.type):
        raise InvalidArgument(f"{each.name} must be one of {', '.join(get_args(each.type))}, not {raw!r}")
    if bool in get_args(each.type):
        if raw not in ("true", "false"):
            raise InvalidArgument(f"{each.name} must be 'true' or 'false', not {raw!r}")
        return raw == "true"
    if float in get_args(each.type):
        try:
            return float(raw)
        except ValueError:
            raise InvalidArgument(f"{each.name} {raw!r} is not an amount") from None
    return raw


def _field(each: Filter, widget: Widget) -> FilterField:
    return FilterField(
        each.name, widget.label, widget.input, _choices(each), widget.placeholder, functools.partial(_read, each)
    )


FORM: tuple[FilterField, ...] = tuple(
    _field(each, each.widget)
    for each in sorted(FILTERS, key=lambda each: not (each.widget and each.widget.lead))
    if each.widget is not None
)


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
        return cls(values, arguments)
