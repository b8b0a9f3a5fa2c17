"""What any face (MCP, the dashboard, the CLI) shows of an event: its personal data masked as the `redact`
setting asks unless an operator chose to reveal it, the triage the policy suggests where none is stored, and
what resolved it (`superseded_by`, `stale`). The faces read through the inbox and show what this decides, so
an event looks the same wherever it is seen."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from pydantic import BaseModel

from .models import Classification, EventDetail, EventSummary
from .redact import Kind, Redactor
from .stores.interface import StoredEvent

Shown = TypeVar("Shown")
Triage = Callable[[StoredEvent, str | None], Classification]  # the policy's classification, not stored


@dataclass(frozen=True, slots=True)
class Row:
    """One event in a list: its summary and its classification, stored or (not yet stored) as the policy would
    make it."""

    summary: EventSummary
    classification: Classification | None
    classified: bool  # the classification is stored, not the policy's suggestion
    superseded_by: str | None = None  # a later event that resolves this one
    stale: bool = False  # a newer event about the same object was already stored when this one arrived


@dataclass(frozen=True, slots=True)
class EventView:
    """One event as a page shows it: every part masked alike, or all revealed."""

    detail: EventDetail
    summary: EventSummary
    suggestion: Classification | None  # the policy's triage where no classification is stored
    timeline: list[EventSummary] | None  # every event about its object; None when it is about none
    masked: bool  # personal data was masked
    revealed: bool


class Presenter:
    def __init__(self, redact: Sequence[Kind], triage: Triage) -> None:
        self.redactor = Redactor(list(redact))
        self._triage = triage

    @property
    def masks(self) -> bool:
        """Whether the policy masks any personal data."""
        return bool(self.redactor.kinds)

    def shown(self, value: Shown, reveal: bool = False) -> Shown:
        """`value` (a model, or JSON-able data) as it may be shown: a model stays a model of its own type."""
        if reveal or not self.masks:
            return value
        if isinstance(value, BaseModel):
            return self.redactor.model(value)  # type: ignore[return-value]
        return self.redactor.value(value)  # type: ignore[no-any-return]

    def triage(self, stored: StoredEvent, superseded_by: str | None) -> tuple[Classification, bool]:
        """The event's stored classification, else what the policy suggests given what resolved it; and whether
        it is the stored one."""
        classification = stored.stored_classification()
        if classification is not None:
            return classification, True
        return self._triage(stored, superseded_by), False

    def row(self, summary: EventSummary, stored: StoredEvent | None) -> Row:
        """A list's line for `summary` (which carries its resolution); `stored` is None when the event is gone."""
        classification, classified = self.triage(stored, summary.superseded_by) if stored else (None, False)
        return Row(
            self.shown(summary),
            classification and self.shown(classification),
            classified,
            superseded_by=summary.superseded_by,
            stale=summary.stale,
        )

    def event(
        self,
        detail: EventDetail,
        stored: StoredEvent,
        summary: EventSummary,
        timeline: list[EventSummary] | None,
        reveal: bool = False,
    ) -> EventView:
        """The event's page from what was read of it: `summary` carries its resolution."""
        classification, classified = self.triage(stored, summary.superseded_by)
        suggestion = None if classified else classification
        return EventView(
            detail=self.shown(detail, reveal),
            summary=self.shown(summary, reveal),
            suggestion=suggestion and self.shown(suggestion, reveal),
            timeline=timeline and [self.shown(entry, reveal) for entry in timeline],
            masked=self.masks and not reveal,
            revealed=reveal,
        )


def resolution_note(summary: EventSummary) -> str:
    """What resolved the event and whether it came late, in words ('' when neither)."""
    notes = [f"resolved by {summary.superseded_by}"] if summary.superseded_by else []
    return ", ".join(notes + (["arrived late"] if summary.stale else []))
