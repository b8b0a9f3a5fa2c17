"""The inbox as MCP resources: JSON documents a client reads, and may subscribe to."""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import MCPServer

from ..inbox import MAX_PAGE, Inbox
from ..models import EventDetail, Stats, Timeline
from .boundary import Boundary

PENDING_URI = "stripe://events/pending"
STATS_URI = "stripe://stats"
JSON = "application/json"


def event_uri(event_id: str) -> str:
    return f"stripe://events/{event_id}"


def register_resources(server: MCPServer, inbox: Inbox, boundary: Boundary) -> None:
    @server.resource(
        PENDING_URI,
        name="pending_events",
        title="Pending events",
        mime_type=JSON,
        description=f"Oldest first: up to {MAX_PAGE} pending events and how many are pending in all.",
    )
    @boundary.resource
    async def pending_events() -> dict[str, Any]:
        page = await inbox.list_events(status="pending", limit=MAX_PAGE)
        return page.model_dump(mode="json", exclude={"next_cursor", "total_exact", "unindexed"})

    @server.resource(
        event_uri("{event_id}"),
        name="event",
        title="Event",
        mime_type=JSON,
        description="The full Stripe event with its state, classification, tickets, notifications and audit trail.",
    )
    @boundary.resource
    async def event(event_id: str) -> EventDetail:
        return await inbox.get_event(event_id)

    @server.resource(
        "stripe://customers/{customer_id}/events",
        name="customer_events",
        title="A customer's events",
        mime_type=JSON,
        description="A customer's events, newest first.",
    )
    @boundary.resource
    async def customer_events(customer_id: str) -> dict[str, Any]:
        page = await inbox.list_events(status="all", customer=customer_id, limit=MAX_PAGE)
        return {"customer": customer_id, **page.model_dump(mode="json")}

    @server.resource(
        STATS_URI,
        name="stats",
        title="Inbox statistics",
        mime_type=JSON,
        description="Counts by status and type, and the age of the oldest pending event.",
    )
    @boundary.resource
    async def stats() -> Stats:
        return await inbox.stats()

    @server.resource(
        "stripe://objects/{object_id}/events",
        name="object_events",
        title="A Stripe object's timeline",
        mime_type=JSON,
        description="Every event about an object (in_, pi_, ch_, sub_, du_…) and those referring to it, oldest first.",
    )
    @boundary.resource
    async def object_events(object_id: str) -> Timeline:
        return await inbox.timeline(object_id)
