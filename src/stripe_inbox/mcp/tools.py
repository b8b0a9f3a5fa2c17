"""The tools an agent works the inbox with: each method of InboxTools is one tool, named as the method."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

from mcp.server.elicitation import ElicitationResult
from mcp.server.mcpserver import Resolve
from mcp.server.mcpserver.tools import Tool
from mcp.types import ToolAnnotations
from pydantic import Field

from ..auth.agents import bound_agent
from ..filters import taking_filters
from ..inbox import MAX_LEASE_SECONDS, MAX_PAGE, MAX_WAIT_SECONDS, MIN_LEASE_SECONDS, Inbox
from ..models import (
    AckResult,
    ClaimResult,
    Classification,
    EventDetail,
    EventPage,
    Forward,
    NotifyResult,
    Outcome,
    Priority,
    Stats,
    TicketResult,
    Timeline,
    WaitResult,
)
from ..stripe.api import StripeAPI
from ..stripe.backfill import RETENTION_DAYS, BackfillResult, backfill, start_of
from .boundary import Boundary
from .confirm import Agreement, ask_first, consent_of
from .schemas import for_output, lean, outline

ACTOR = "mcp"
Method = TypeVar("Method", bound=Callable[..., Awaitable[Any]])


@dataclass(frozen=True)
class ToolInfo:
    title: str
    annotations: ToolAnnotations
    # Output fields described in words rather than in full: another tool's output schema spells them out.
    outlined: Mapping[str, str] = field(default_factory=dict)


def hints(*, read_only: bool, open_world: bool, idempotent: bool = True, destructive: bool = False) -> ToolAnnotations:
    return ToolAnnotations(
        read_only_hint=read_only,
        destructive_hint=destructive,
        idempotent_hint=idempotent,
        open_world_hint=open_world,
    )


READS_THE_INBOX = hints(read_only=True, open_world=False)
TOOL_INFO: dict[str, ToolInfo] = {}


def tool(
    title: str, annotations: ToolAnnotations, outlined: Mapping[str, str] | None = None
) -> Callable[[Method], Method]:
    def register(method: Method) -> Method:
        TOOL_INFO[method.__name__] = ToolInfo(title, annotations, outlined or {})
        return method

    return register


class InboxTools:
    """A docstring is its tool's description; `{channels}` in it names the configured channels."""

    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox

    @tool("List events", READS_THE_INBOX)
    @taking_filters
    async def list_events(self, given: dict[str, Any]) -> EventPage:
        """Events in the inbox: pending ones oldest first (the work queue), others newest first. Filters combine."""
        return await self.inbox.list_events(**given)

    # A thin event's full event is fetched from Stripe's API.
    @tool(
        "Get event",
        hints(read_only=True, open_world=True),
        outlined={
            "classification": "as classify returns it, once classified",
            "tickets": "each as create_ticket returns it under ticket",
            "notifications": "each as notify returns it under notification",
            "forwards": "each as replay_event returns it",
        },
    )
    async def get_event(self, event_id: str) -> EventDetail:
        """The Stripe event as delivered, with its inbox state, classification, tickets, notifications, audit
        trail and forwards."""
        return await self.inbox.get_event(event_id)

    @tool("Inbox statistics", READS_THE_INBOX)
    async def get_stats(self) -> Stats:
        """Counts by status and type, and the age of the oldest pending event (as stripe://stats)."""
        return await self.inbox.stats()

    @tool("Wait for events", READS_THE_INBOX, outlined={"events": "as list_events returns them"})
    async def wait_for_events(
        self,
        timeout_seconds: Annotated[float, Field(ge=0, le=MAX_WAIT_SECONDS)] = 30,
        type: Annotated[str | None, Field(description="only this event type")] = None,
    ) -> WaitResult:
        """Pending events as soon as there are any, or none after the timeout: for clients without resource
        subscriptions."""
        return await self.inbox.wait_for_events(timeout_seconds, type)

    # Stores its result on the event, replacing one from an earlier call: the rules are deterministic.
    @tool("Classify event", hints(read_only=False, open_world=False))
    async def classify(self, event_id: str) -> Classification:
        """Category, priority, one-line summary, signals (each with its source field) and suggested tool calls,
        by deterministic rules; stored on the event."""
        result = await self.inbox.classify(event_id, ACTOR)
        return result

    # Forwarded to the configured tracker (GitHub, Linear, …), if there is one.
    @tool(
        "Create ticket",
        hints(read_only=False, open_world=True),
        outlined={"ticket.delivery": "forwarding to the tracker, as notify returns notification.delivery"},
    )
    async def create_ticket(
        self, event_id: str, title: str, body: str = "", priority: Priority = "normal"
    ) -> TicketResult:
        """Open a ticket for an event. Idempotent per event and title: a repeat returns the same ticket."""
        result = await self.inbox.create_ticket(event_id, title, body, priority, ACTOR)
        return result

    @tool("Send notification", hints(read_only=False, open_world=True))
    async def notify(
        self,
        channel: str,
        message: str,
        asked: Annotated[ElicitationResult[Agreement], Resolve(ask_first)],
        event_id: str | None = None,
        subject: str | None = None,
        idempotency_key: str | None = None,
    ) -> NotifyResult:
        """Send a message through a configured channel ({channels}), optionally about an event. Answers at once:
        sent, queued (retried in the background) or failed; on a channel that needs a person's confirmation,
        rejected or awaiting_approval. The same call, or idempotency_key, sends once."""
        consent = consent_of(asked)
        return await self.inbox.notify(channel, message, event_id, subject, ACTOR, idempotency_key, consent)

    # Each call leases more events.
    @tool(
        "Claim events",
        hints(read_only=False, open_world=False, idempotent=False),
        outlined={"events": "as list_events returns them; yours until lease_expires_at, ack_event each when done"},
    )
    async def claim_events(
        self,
        agent: Annotated[
            str, Field(min_length=1, max_length=100, description="your name, unique among agents sharing the inbox")
        ],
        limit: Annotated[int, Field(ge=1, le=MAX_PAGE)] = 10,
        lease_seconds: Annotated[float, Field(ge=MIN_LEASE_SECONDS, le=MAX_LEASE_SECONDS)] = 300,
    ) -> ClaimResult:
        """Lease pending events, oldest first, that no other agent holds; they return to the pool when the
        lease lapses. For agents sharing an inbox: ack_event each with the same agent name. Signed in with OAuth,
        the name is your client's: other clients cannot ack what you claimed."""
        return await self.inbox.claim(bound_agent(agent) or agent, limit, lease_seconds)

    @tool("Acknowledge event", hints(read_only=False, open_world=False))
    async def ack_event(
        self,
        event_id: str,
        outcome: Outcome = "handled",
        note: str | None = None,
        agent: Annotated[str | None, Field(description="the name you claimed it with, if you did")] = None,
    ) -> AckResult:
        """Mark an event dealt with, removing it from pending; acking again changes nothing. An event another
        agent has claimed cannot be acked until its lease lapses."""
        result = await self.inbox.ack(event_id, outcome, note, ACTOR, holder=bound_agent(agent) or "")
        return result

    # Stripe's Events API; events already in the inbox are counted, not added again.
    @tool("Backfill from Stripe", hints(read_only=False, open_world=True))
    async def backfill_events(
        self,
        days: Annotated[float | None, Field(gt=0, le=RETENTION_DAYS, description="look back this many days")] = None,
        since: Annotated[str | None, Field(description="or from this date, YYYY-MM-DD")] = None,
        undelivered_only: Annotated[bool, Field(description="only events Stripe could not deliver")] = False,
    ) -> BackfillResult:
        """Add the events Stripe has that the inbox missed (while it was down, say) as pending. With neither
        days nor since, continues where the last backfill ended. Needs STRIPE_API_KEY."""
        api = StripeAPI(self.inbox.settings.api_key, self.inbox.settings.api_base)
        return await backfill(self.inbox, api, start_of(since, days), undelivered_only)

    @tool("Object timeline", READS_THE_INBOX, outlined={"events": "as list_events returns them"})
    async def get_timeline(
        self, object_id: Annotated[str, Field(description="in_, pi_, ch_, sub_, du_, cs_...")]
    ) -> Timeline:
        """Every event about a Stripe object, and those that refer to it, oldest first: what happened to it."""
        return await self.inbox.timeline(object_id)

    # Each call makes one more delivery, to a handler outside the inbox.
    @tool("Replay event", hints(read_only=False, open_world=True, idempotent=False))
    async def replay_event(self, event_id: str, destination: str) -> Forward:
        """Forward an event again to a [[forward]] destination ({destinations}): a new delivery of the exact bytes,
        signed afresh, retried like any forward."""
        (made,) = await self.inbox.replay([event_id], destination, ACTOR)
        return made


def inbox_tools(inbox: Inbox, boundary: Boundary) -> list[Tool]:
    tools = InboxTools(inbox)
    names = {
        "channels": ", ".join(inbox.settings.all_channels),
        "destinations": ", ".join(forward.name for forward in inbox.settings.forward) or "none configured",
    }
    return [_as_tool(boundary.tool(getattr(tools, name)), info, names) for name, info in TOOL_INFO.items()]


def _as_tool(handler: Callable[..., Awaitable[Any]], info: ToolInfo, names: dict[str, str]) -> Tool:
    description = " ".join((inspect.getdoc(handler) or "").split()).format(**names)
    defined = Tool.from_function(handler, title=info.title, description=description, annotations=info.annotations)
    output_schema = defined.fn_metadata.output_schema
    if output_schema is not None:
        output_schema = for_output(outline(lean(output_schema), info.outlined))
    metadata = defined.fn_metadata.model_copy(update={"output_schema": output_schema})
    return defined.model_copy(update={"parameters": lean(defined.parameters), "fn_metadata": metadata})
