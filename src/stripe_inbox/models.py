"""The shapes the inbox hands out: to MCP tools as structured output, and to `--json` on the CLI."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

Status = Literal["pending", "acked"]
Outcome = Literal["handled", "ignored", "escalated"]
Priority = Literal["low", "normal", "high", "urgent"]

STATUSES: tuple[Status, ...] = ("pending", "acked")
OUTCOMES: tuple[Outcome, ...] = ("handled", "ignored", "escalated")
PRIORITIES: tuple[Priority, ...] = ("low", "normal", "high", "urgent")


def utc(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


class EventSummary(BaseModel):
    id: str
    type: str
    status: Status
    created: datetime
    received_at: datetime = Field(description="first delivery to this inbox")
    deliveries: int
    livemode: bool
    customer: str | None = None
    account: str | None = Field(default=None, description="Connect account")
    object_id: str | None = Field(default=None, description="id of data.object")
    amount: str | None = Field(default=None, description="e.g. 'USD 49.00'")
    superseded_by: str | None = Field(default=None, description="a later event that resolved this one")
    stale: bool = Field(default=False, description="arrived after a newer event about its object")


class EventState(BaseModel):
    status: Status
    received_at: datetime
    last_delivery_at: datetime
    deliveries: int
    acked_at: datetime | None = None
    outcome: Outcome | None = None
    note: str | None = None
    claimed_by: str | None = Field(default=None, description="the agent holding a live claim on this event")
    claimed_until: datetime | None = Field(default=None, description="when that claim lapses")


class Signal(BaseModel):
    name: str
    value: Any
    field: str = Field(description="where in the Stripe event the value came from")


class SuggestedAction(BaseModel):
    tool: str
    arguments: dict[str, Any]


class Classification(BaseModel):
    category: str
    priority: Priority
    summary: str
    signals: list[Signal]
    suggested_actions: list[SuggestedAction]


# awaiting_approval: on a `confirm = true` channel or tracker, until a person approves it (then queued) or not
# (rejected: declined when asked, rejected, or lapsed).
DeliveryStatus = Literal["queued", "sending", "sent", "failed", "awaiting_approval", "rejected"]


class DeliveryState(BaseModel):
    """Where an outgoing action stands in the outbox."""

    status: DeliveryStatus
    attempts: int
    reason: str | None = Field(default=None, description="why the last attempt did not succeed")
    next_attempt_at: datetime | None = None
    finished_at: datetime | None = None


class Ticket(BaseModel):
    id: int
    event_id: str
    title: str
    body: str
    priority: Priority
    created_at: datetime
    tracker: str | None = Field(default=None, description="the tracker it is forwarded to, if one is configured")
    tracker_id: str | None = None
    tracker_url: str | None = None
    delivery: DeliveryState | None = Field(default=None, description="forwarding to the tracker")


class TicketResult(BaseModel):
    ticket: Ticket
    created: bool = Field(description="false when this event already had a ticket with this title")


class Notification(BaseModel):
    id: int
    channel: str
    message: str
    subject: str | None = None
    recipient: str | None = None
    event_id: str | None = None
    created_at: datetime
    delivery: DeliveryState


class NotifyResult(BaseModel):
    status: DeliveryStatus
    reason: str | None = Field(default=None, description="why it is queued or failed")
    duplicate: bool = Field(description="made before, so not sent again")
    notification: Notification


class Forward(BaseModel):
    """One delivery of an event to a [[forward]] destination."""

    id: int
    destination: str
    status: DeliveryStatus
    attempts: int
    status_code: int | None = Field(default=None, description="the destination's answer to the last attempt")
    latency_ms: float | None = Field(default=None, description="of the last attempt")
    error: str | None = Field(default=None, description="why the last attempt failed")
    replay: bool = False
    created_at: datetime
    next_attempt_at: datetime | None = None
    finished_at: datetime | None = None


class AuditEntry(BaseModel):
    id: int
    at: datetime
    actor: str = Field(description="'mcp' or 'cli'")
    action: str = Field(description="the tool or command")
    event_id: str | None = None
    arguments: dict[str, Any]
    result: dict[str, Any]


class EventDetail(BaseModel):
    id: str
    type: str
    kind: Literal["snapshot", "thin"] = Field(description="thin: Stripe's v2 notification, a reference only")
    account: str | None = Field(default=None, description="Connect account")
    related_object: dict[str, Any] | None = Field(default=None, description="what a thin event is about")
    full_event: dict[str, Any] | None = Field(default=None, description="a thin event, fetched from Stripe")
    full_event_note: str | None = Field(default=None, description="why a thin event's full event is missing")
    state: EventState
    event: dict[str, Any] = Field(description="the Stripe event exactly as delivered")
    classification: Classification | None = None
    tickets: list[Ticket] = Field(default_factory=list)
    notifications: list[Notification] = Field(default_factory=list)
    audit: list[AuditEntry] = Field(default_factory=list)
    forwards: list[Forward] = Field(default_factory=list)


UNINDEXED = "events a search cannot find yet: the index takes them within seconds"


class EventPage(BaseModel):
    events: list[EventSummary]
    total: int = Field(description="how many events match, across all pages")
    total_exact: bool = Field(
        default=True,
        description="false: a search matched more than total (1000 for words, 10000 otherwise)",
    )
    next_cursor: str | None = Field(default=None, description="pass as cursor for the next page")
    unindexed: int = Field(default=0, description=UNINDEXED)


class Timeline(BaseModel):
    object_id: str
    events: list[EventSummary] = Field(description="oldest first")
    truncated: bool = Field(default=False, description="more than 1000 events: the first 1000")
    unindexed: int = Field(default=0, description=UNINDEXED)


class AckResult(BaseModel):
    event_id: str
    status: Status
    outcome: Outcome
    note: str | None = None
    acked_at: datetime
    already_acked: bool


class ClaimResult(BaseModel):
    events: list[EventSummary]
    lease_expires_at: datetime
    pending: int = Field(description="pending events in all, claimed or not")


class WaitResult(BaseModel):
    events: list[EventSummary]
    timed_out: bool


class Stats(BaseModel):
    total: int
    by_status: dict[str, int]
    by_type: dict[str, int]
    oldest_pending_age_seconds: float | None
    actions: dict[str, int] = Field(description="notifications and forwarded tickets by delivery state")
    forwards: dict[str, int] = Field(default_factory=dict, description="forwards to destinations by delivery state")
    unindexed: int = Field(default=0, description=UNINDEXED)
    subscriptions: dict[str, int] = Field(
        default_factory=dict,
        description="MCP Events webhook subscriptions by state (active, ended; failing: active, last POST failed)",
    )


class Approval(BaseModel):
    """An outgoing action waiting for a person: approve it and it is sent, reject it (or let it lapse) and it
    never is."""

    id: int = Field(description="pass to `stripe-inbox approvals approve|reject`")
    kind: Literal["notification", "ticket"]
    target: str = Field(description="the channel or tracker")
    event_id: str | None = None
    created_at: datetime
    lapses_at: datetime
    status: DeliveryStatus
    reason: str | None = None
    notification: Notification | None = None
    ticket: Ticket | None = None
