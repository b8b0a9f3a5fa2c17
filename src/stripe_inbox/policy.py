"""The triage policy from the config: instructions for the agent, high-value thresholds, and rules
that set priority and suggested actions for matching events."""

from __future__ import annotations

import operator
import re
import string
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from .events import EventFilter, check_patterns
from .models import OUTCOMES, Priority

DEFAULT_INSTRUCTIONS = (
    "This server is an inbox of verified Stripe webhook events. Work it oldest first: read "
    "stripe://events/pending (or call list_events), classify each event, open a ticket for anything a "
    "person must follow up (failed payments, disputes), notify where a team should know, and ack_event "
    "every event you have dealt with, with an outcome: handled, ignored or escalated. Never ack an event "
    "you did not look at."
)

# What a rule's `when` may test, besides any `data.object.…` path of the event.
FACTS = (
    "type",
    "category",
    "amount",
    "currency",
    "high_value",
    "customer",
    "livemode",
    "account",
    "decline_code",
    "attempt_count",
    "risk_level",
    "risk_score",
    "dispute_reason",
    "cancellation_reason",
)
COMPARISONS = {"gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le}
OPERATORS = ("eq", "ne", "in", "exists", *COMPARISONS)
# What an action's text templates may use, as {name}.
PLACEHOLDERS = ("summary", "event_id", "type", "category", "priority", "customer", "amount")
TOOL_ARGUMENTS = {
    "create_ticket": {"title", "body", "priority"},
    "notify": {"channel", "message", "subject"},
    "ack_event": {"outcome", "note"},
}


class RuleAction(BaseModel):
    """A suggested tool call; text arguments are templates over PLACEHOLDERS."""

    model_config = ConfigDict(extra="allow", frozen=True)

    tool: str

    @model_validator(mode="after")
    def _known_tool_and_arguments(self) -> RuleAction:
        if self.tool not in TOOL_ARGUMENTS:
            raise ValueError(f"unknown tool {self.tool!r}; rules may suggest: {', '.join(TOOL_ARGUMENTS)}")
        arguments = self.arguments
        for name, value in arguments.items():
            if name not in TOOL_ARGUMENTS[self.tool]:
                raise ValueError(f"{self.tool} has no argument {name!r}")
            if not isinstance(value, str):
                raise ValueError(f"{self.tool}.{name} must be text")
            for _, placeholder, _, _ in string.Formatter().parse(value):
                if placeholder is not None and placeholder not in PLACEHOLDERS:
                    raise ValueError(
                        f"{self.tool}.{name} uses {{{placeholder}}}; templates may use "
                        + ", ".join(f"{{{p}}}" for p in PLACEHOLDERS)
                    )
        if self.tool == "notify" and "channel" not in arguments:
            raise ValueError("notify needs a channel")
        if arguments.get("outcome", "handled") not in OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}")
        if arguments.get("priority", "normal") not in ("low", "normal", "high", "urgent"):
            raise ValueError("priority must be low, normal, high or urgent")
        return self

    @property
    def arguments(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class Rule(BaseModel):
    """`[[rules]]`: the first rule whose `match` and `when` fit an event sets its priority and actions."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    match: list[str] = Field(min_length=1)
    when: dict[str, Any] = Field(default_factory=dict)
    priority: Priority | None = None
    actions: list[RuleAction] | None = None
    _types: EventFilter = PrivateAttr()

    def model_post_init(self, context: Any) -> None:
        self._types = EventFilter(self.match)

    @field_validator("match")
    @classmethod
    def _patterns(cls, patterns: list[str]) -> list[str]:
        return check_patterns(patterns)

    @field_validator("when")
    @classmethod
    def _known_fields(cls, when: dict[str, Any]) -> dict[str, Any]:
        for field, condition in when.items():
            if field not in FACTS and not field.startswith(("data.object.", "data.previous_attributes.")):
                raise ValueError(f"unknown field {field!r}; use one of {', '.join(FACTS)} or a data.object.… path")
            if isinstance(condition, dict):
                for name in condition:
                    if name not in OPERATORS:
                        raise ValueError(f"{field}: unknown operator {name!r}; use {', '.join(OPERATORS)}")
        return when

    def applies(self, event_type: str, facts: dict[str, Any], event: dict[str, Any]) -> bool:
        if not self._types.accepts(event_type):
            return False
        return all(_holds(_lookup(field, facts, event), condition) for field, condition in self.when.items())


class Policy(BaseModel):
    """`[policy]`: how the agent should work the inbox."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    instructions: str = DEFAULT_INSTRUCTIONS
    high_value: dict[str, float] = Field(
        default_factory=dict, description="per currency (lower-case ISO code), in major units: usd = 1000"
    )

    @field_validator("high_value")
    @classmethod
    def _currencies(cls, thresholds: dict[str, float]) -> dict[str, float]:
        for currency in thresholds:
            if not re.fullmatch(r"[a-z]{3}", currency):
                raise ValueError(f"{currency!r} is not a lower-case three-letter currency code")
        return thresholds


def _lookup(field: str, facts: dict[str, Any], event: dict[str, Any]) -> Any:
    if field in FACTS:
        return facts.get(field)
    value: Any = event
    for part in field.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _holds(value: Any, condition: Any) -> bool:
    if not isinstance(condition, dict):
        return value in condition if isinstance(condition, list) else value == condition
    for name, expected in condition.items():
        if name == "exists":
            ok = (value is not None) == bool(expected)
        elif name == "in":
            ok = value in expected
        elif name in ("eq", "ne"):
            ok = (value == expected) == (name == "eq")
        else:
            try:
                ok = COMPARISONS[name](value, expected)
            except TypeError:  # the field is absent or not a number
                ok = False
        if not ok:
            return False
    return True
