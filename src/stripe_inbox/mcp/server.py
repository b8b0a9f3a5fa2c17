"""The MCP face of the inbox: resources, tools and prompts, and change notifications for both protocol eras."""

from __future__ import annotations

import hmac
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Annotated, Any, Literal

import anyio
import mcp.types as types
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError
from mcp.server.session import ServerSession
from mcp.server.subscriptions import InMemorySubscriptionBus, ResourceUpdated
from mcp.shared.exceptions import MCPError
from pydantic import Field

from ..errors import InboxError, NotFound
from ..inbox import MAX_LEASE_SECONDS, MAX_PAGE, MIN_LEASE_SECONDS, Inbox
from ..metrics import Metrics
from ..models import (
    AckResult,
    ClaimResult,
    Classification,
    EventDetail,
    EventPage,
    NotifyResult,
    Outcome,
    Priority,
    Stats,
    TicketResult,
    WaitResult,
)
from ..redact import Redactor
from ..stripe.api import StripeAPI
from ..stripe.backfill import BackfillResult, backfill, start_of

PENDING_URI = "stripe://events/pending"
TRIAGE_PREVIEW = 20
STATS_URI = "stripe://stats"
ACTOR = "mcp"
AGENT_HELP = "a name for this agent, different for each agent sharing the inbox, e.g. billing-agent-1"


def event_uri(event_id: str) -> str:
    return f"stripe://events/{event_id}"


class ChangeNotifier:
    """Tells subscribed clients a resource changed: `subscriptions/listen` streams (2026-07-28) through
    the SDK's bus, and `resources/subscribe` sessions (the 2025 handshake era) directly."""

    def __init__(self) -> None:
        self.bus = InMemorySubscriptionBus()
        self._legacy: dict[ServerSession, set[str]] = {}

    async def subscribe(
        self, ctx: ServerRequestContext[Any], params: types.SubscribeRequestParams
    ) -> types.EmptyResult:
        self._legacy.setdefault(ctx.session, set()).add(str(params.uri))
        return types.EmptyResult()

    async def unsubscribe(
        self, ctx: ServerRequestContext[Any], params: types.UnsubscribeRequestParams
    ) -> types.EmptyResult:
        self._legacy.get(ctx.session, set()).discard(str(params.uri))
        return types.EmptyResult()

    async def updated(self, *uris: str) -> None:
        for uri in uris:
            await self.bus.publish(ResourceUpdated(uri=uri))
        for session, subscribed in list(self._legacy.items()):
            for uri in [uri for uri in uris if uri in subscribed]:  # in the order given: the queue first
                try:
                    await session.send_resource_updated(uri)
                except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                    self._legacy.pop(session, None)
                    break


class StaticTokenVerifier:
    """Accepts exactly the configured STRIPE_INBOX_MCP_TOKEN, compared in constant time."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    async def verify_token(self, token: str) -> AccessToken | None:
        if hmac.compare_digest(token.encode(), self._token):
            return AccessToken(token=token, client_id="stripe-inbox", scopes=[])
        return None


class InboxServer(MCPServer):
    """An MCPServer over one inbox; `running()` must be open while it serves clients."""

    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox
        self.notifier = ChangeNotifier()
        token = inbox.settings.mcp_token
        super().__init__(
            "stripe-inbox",
            title="Stripe event inbox",
            instructions=inbox.settings.policy.instructions,
            subscriptions=self.notifier.bus,
            token_verifier=StaticTokenVerifier(token) if token else None,
            # No OAuth server here: one shared bearer token; the issuer is a required placeholder.
            auth=AuthSettings(issuer_url="http://127.0.0.1", resource_server_url=None) if token else None,
        )

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Follow the inbox's changes, made here or by any other process, and tell subscribed clients which
        resources changed; deliver the outbox."""

        async def publish() -> None:
            async for changed in self.inbox.changes():
                await self.notifier.updated(PENDING_URI, STATS_URI, *map(event_uri, sorted(changed)))

        async with anyio.create_task_group() as group:
            group.start_soon(self.inbox.follow_changes)
            group.start_soon(publish)
            group.start_soon(self.inbox.outbox.run)
            yield
            group.cancel_scope.cancel()


def create_mcp_server(inbox: Inbox, metrics: Metrics | None = None) -> InboxServer:
    server = InboxServer(inbox)
    notifier = server.notifier
    lowlevel = server._lowlevel_server
    lowlevel.add_request_handler("resources/subscribe", types.SubscribeRequestParams, notifier.subscribe)
    lowlevel.add_request_handler("resources/unsubscribe", types.UnsubscribeRequestParams, notifier.unsubscribe)
    if metrics is not None:
        server.middleware.append(_count_tool_calls(metrics))
    present = Redactor(inbox.settings.redact)

    # -- resources -------------------------------------------------------------------------------

    @server.resource(
        PENDING_URI,
        name="pending_events",
        mime_type="application/json",
        description=f"Oldest first: up to {MAX_PAGE} pending events and how many are pending in all.",
    )
    async def pending_events() -> str:
        with _resource_errors():
            page = await inbox.list_events(status="pending", limit=MAX_PAGE)
        return present.model(page).model_dump_json(exclude={"next_cursor"})

    @server.resource(
        "stripe://events/{event_id}",
        name="event",
        mime_type="application/json",
        description="The full Stripe event with its state, classification, tickets, notifications and audit trail.",
    )
    async def event_resource(event_id: str) -> str:
        with _resource_errors():
            detail = await inbox.get_event(event_id)
        return present.model(detail).model_dump_json()

    @server.resource(
        "stripe://customers/{customer_id}/events",
        name="customer_events",
        mime_type="application/json",
        description="A customer's events, newest first.",
    )
    async def customer_events(customer_id: str) -> str:
        with _resource_errors():
            page = await inbox.list_events(status="all", customer=customer_id, limit=MAX_PAGE)
        return json.dumps({"customer": customer_id, **present.model(page).model_dump(mode="json")})

    @server.resource(
        STATS_URI,
        name="stats",
        mime_type="application/json",
        description="Counts by status and type, and the age of the oldest pending event.",
    )
    async def stats_resource() -> str:
        with _resource_errors():
            stats = await inbox.stats()
        return stats.model_dump_json()

    # -- tools -----------------------------------------------------------------------------------

    @server.tool()
    async def list_events(
        status: Literal["pending", "acked", "all"] = "pending",
        type: Annotated[str | None, Field(description="exact event type, e.g. invoice.payment_failed")] = None,
        customer: Annotated[str | None, Field(description="a customer id, cus_…")] = None,
        account: Annotated[str | None, Field(description="a Connect account id, acct_…")] = None,
        limit: Annotated[int, Field(ge=1, le=MAX_PAGE)] = 20,
        cursor: Annotated[str | None, Field(description="next_cursor from the previous page")] = None,
    ) -> EventPage:
        """List events in the inbox: pending ones oldest first (the work queue), others newest first."""
        with _tool_errors():
            page = await inbox.list_events(status, type, customer, account, limit, cursor)
        return present.model(page)

    @server.tool()
    async def get_event(event_id: str) -> EventDetail:
        """The full Stripe event with its inbox state, classification, tickets, notifications and audit trail."""
        with _tool_errors():
            return present.model(await inbox.get_event(event_id))

    @server.tool()
    async def get_stats() -> Stats:
        """Counts by status and by type, and the age of the oldest pending event (as stripe://stats)."""
        with _tool_errors():
            return await inbox.stats()

    @server.tool()
    async def wait_for_events(
        timeout_seconds: Annotated[float, Field(ge=0, le=300)] = 30,
        type: Annotated[str | None, Field(description="only wake for this event type")] = None,
    ) -> WaitResult:
        """Return as soon as matching pending events exist, or empty after the timeout (for clients
        without resource subscriptions)."""
        with _tool_errors():
            return present.model(await inbox.wait_for_events(timeout_seconds, type))

    @server.tool()
    async def classify(event_id: str) -> Classification:
        """Category, priority, one-line summary, signals (each with its source field) and suggested tool
        calls for an event, by deterministic rules; stored on the event."""
        with _tool_errors():
            result = await inbox.classify(event_id, ACTOR)
        await notifier.updated(event_uri(event_id))
        return present.model(result)

    @server.tool()
    async def create_ticket(event_id: str, title: str, body: str = "", priority: Priority = "normal") -> TicketResult:
        """Open a ticket for an event. Idempotent per event and title: a repeat returns the same ticket."""
        with _tool_errors():
            result = await inbox.create_ticket(event_id, title, body, priority, ACTOR)
        await notifier.updated(event_uri(event_id))
        return present.model(result)

    channels = ", ".join(inbox.settings.all_channels)

    @server.tool(
        description=(
            f"Send a notification through a configured channel ({channels}), optionally about an event. "
            "Answers at once: sent, queued (retried in the background, with the reason) or failed. "
            "The same call repeated, or the same idempotency_key, sends once."
        )
    )
    async def notify(
        channel: Annotated[str, Field(description="a configured channel; the tool description lists them")],
        message: str,
        event_id: str | None = None,
        subject: str | None = None,
        idempotency_key: str | None = None,
    ) -> NotifyResult:
        with _tool_errors():
            result = await inbox.notify(channel, message, event_id, subject, ACTOR, idempotency_key)
        if event_id:
            await notifier.updated(event_uri(event_id))
        return present.model(result)

    @server.tool()
    async def claim_events(
        agent: Annotated[str, Field(min_length=1, max_length=100, description=AGENT_HELP)],
        limit: Annotated[int, Field(ge=1, le=MAX_PAGE)] = 10,
        lease_seconds: Annotated[float, Field(ge=MIN_LEASE_SECONDS, le=MAX_LEASE_SECONDS)] = 300,
    ) -> ClaimResult:
        """Take pending events, oldest first, that no other agent holds: they are yours until the lease
        lapses (then they return to the pool). For several agents sharing one inbox; ack_event each one
        with the same agent name when done."""
        with _tool_errors():
            return present.model(await inbox.claim(agent, limit, lease_seconds))

    @server.tool()
    async def ack_event(
        event_id: str,
        outcome: Outcome = "handled",
        note: str | None = None,
        agent: Annotated[str | None, Field(description="the name you claimed the event with, if you did")] = None,
    ) -> AckResult:
        """Mark an event dealt with, removing it from pending. Idempotent: acking twice changes nothing.
        An event another agent has claimed cannot be acked until its lease lapses."""
        with _tool_errors():
            result = await inbox.ack(event_id, outcome, note, ACTOR, holder=agent or "")
        await notifier.updated(event_uri(event_id))
        return result

    @server.tool()
    async def backfill_events(
        days: Annotated[float | None, Field(gt=0, le=30, description="look back this many days")] = None,
        since: Annotated[str | None, Field(description="or from this date, YYYY-MM-DD")] = None,
        undelivered_only: Annotated[bool, Field(description="only events Stripe could not deliver")] = False,
    ) -> BackfillResult:
        """Fetch events from Stripe's Events API that the inbox missed (while it was down, say) and add
        them as pending. With no days or since, continues from where the last backfill ended. Needs
        STRIPE_API_KEY."""
        with _tool_errors():
            api = StripeAPI(inbox.settings.api_key, inbox.settings.api_base)
            return await backfill(inbox, api, start_of(since, days), undelivered_only)

    # -- prompts ---------------------------------------------------------------------------------

    @server.prompt()
    async def triage_inbox() -> str:
        """Work through the pending events under the configured policy."""
        page = await inbox.list_events(status="pending", limit=TRIAGE_PREVIEW)
        lines = []
        for summary in page.events:
            stored = await inbox.event(summary.id)
            triage = stored.stored_classification() or inbox.triage(stored)
            suggested = ", ".join(action.tool for action in triage.suggested_actions)
            lines.append(f"- {summary.id} {summary.type}: [{triage.priority}] {triage.summary} -> {suggested}")
        more = f"\n(and {page.total - len(lines)} more)" if page.total > len(lines) else ""
        queue = "\n".join(lines) + more if lines else "(none: call wait_for_events to wait for new ones)"
        return present.value(
            f"{inbox.settings.policy.instructions}\n\n"
            f"There are {page.total} pending events, oldest first, with their triage:\n{queue}\n\n"
            "For each one: get_event for the details if you need them; classify it (this stores the "
            "classification and its suggested_actions, with ready arguments); follow the suggested actions "
            "where they fit the policy: create_ticket for anything a person must follow up, notify where a "
            "team should know; then ack_event with the outcome (handled, ignored or escalated) and a short "
            "note. When none are left, call wait_for_events to wait for new ones, or stop and report what you did. "
            "If other agents work this inbox too, take events with claim_events (under a name of your own) "
            "instead, and pass that name as agent to ack_event."
        )

    @server.prompt()
    async def draft_customer_email(event_id: str) -> str:
        """Draft an email to the customer an event concerns."""
        try:
            stored = await inbox.event(event_id)
        except NotFound as error:
            raise MCPError(code=types.INVALID_PARAMS, message=str(error)) from None
        classification = stored.stored_classification() or await inbox.classify(event_id, ACTOR)
        return (
            "Draft a short, friendly email to the customer about this Stripe event. Say what happened, what "
            "it means for them and what (if anything) they should do. Do not invent amounts, dates or "
            "links that are not in the event.\n\n"
            f"Summary: {present.value(classification.summary)}\n"
            f"Category: {classification.category} (priority {classification.priority})\n"
            f"Signals: {json.dumps(present.value({s.name: s.value for s in classification.signals}))}\n\n"
            f"The event:\n{json.dumps(present.value(stored.body()), indent=2)}"
        )

    return server


async def serve_stdio(inbox: Inbox) -> None:
    server = create_mcp_server(inbox)
    async with server.running():
        await server.run_stdio_async()


@contextmanager
def _tool_errors() -> Iterator[None]:
    try:
        yield
    except InboxError as error:
        raise ToolError(str(error)) from None


@contextmanager
def _resource_errors() -> Iterator[None]:
    try:
        yield
    except NotFound as error:
        raise ResourceNotFoundError(str(error)) from None


def _count_tool_calls(metrics: Metrics) -> Any:
    async def middleware(ctx: ServerRequestContext[Any], call_next: CallNext) -> HandlerResult:
        result = await call_next(ctx)
        if ctx.method == "tools/call" and ctx.params:
            failed = isinstance(result, types.CallToolResult) and bool(result.is_error)
            metrics.record_tool_call(str(ctx.params.get("name")), failed)
        return result

    return middleware
