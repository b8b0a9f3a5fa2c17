"""The dashboard's Jinja environment, and the filters its templates format times, durations and form widgets
with."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.templating import Jinja2Templates

from ..filters import FilterField

TEMPLATES = Path(__file__).parent.parent / "templates"


def dashboard_templates(prefix: str) -> Jinja2Templates:
    environment = Environment(
        loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined, auto_reload=False
    )
    environment.globals["ui"] = prefix
    environment.filters.update(
        ago=ago, clock=clock, epoch_clock=epoch_clock, duration=duration, field_input=field_input
    )
    return Jinja2Templates(env=environment)


def field_input(field: FilterField) -> str:
    return {"number": "number", "date": "date"}.get(field.input, "text")


def clock(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def epoch_clock(at: float) -> str:
    return clock(datetime.fromtimestamp(at, UTC))


def ago(moment: datetime | None) -> str:
    return "" if moment is None else f"{duration(time.time() - moment.timestamp())} ago"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = max(seconds, 0)
    if seconds < 60:
        return f"{int(seconds)} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"
    return f"{int(seconds // 86400)} d {int(seconds % 86400 // 3600)} h"
