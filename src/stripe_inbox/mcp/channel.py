"""Pushing new events into a Claude Code session (`stripe-inbox mcp --channel`): the experimental capability
`claude/channel` and one `notifications/claude/channel` per new event, so an agent hears of an event without
polling. What arrived is data: Stripe's text fields are quoted as JSON strings, never spliced into the prose."""

from __future__ import annotations

import contextlib
import json
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

import anyio
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.session import ServerSession
from mcp.types import Notification
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from pydantic import BaseModel

from ..events import data_object
from ..inbox import Inbox
from ..models import Classification
from ..presenter import Presenter
from ..settings import PushSettings
from ..stores import EventQuery, StoredEvent
from .untrusted import NOTICE, quote, token

CAPABILITY = "claude/channel"
METHOD = "notifications/claude/channel"
BACKLOG_SCAN = 500  # pending events looked at for the start-up backlog, oldest first
# Stripe's free-text fields an event may carry, quoted for the agent beside the summary.
TEXT_FIELDS = ("description", "statement_descriptor", "customer_name", "customer_email", "failure_message", "reason")


channel_log = logging.getLogger("stripe_inbox.channel")


class ChannelParams(BaseModel):
    content: str
    meta: dict[str, str]


class ChannelNotification(Notification[ChannelParams, Literal["notifications/claude/channel"]]):
    method: Literal["notifications/claude/channel"] = METHOD


@dataclass(frozen=True, slots=True)
class Held:
    """An event the rate limit kept back, for the digest."""

    id: str
    type: str


class ClaudeChannel:
    """Declares `claude/channel` in the handshake (a middleware: MCPServer 2.3 builds the initialize result
    itself), takes the session from the client's first request after it, and from then on announces the
    matching pending backlog once and every new matching event once."""

    def __init__(self, inbox: Inbox, settings: PushSettings, presenter: Presenter) -> None:
        self.inbox = inbox
        self.settings = settings
        self.presenter = presenter
        self._session: ServerSession | None = None
        self._ready = anyio.Event()
        self._incoming: set[str] = set()  # changed event ids not yet looked at
        self._arrived = anyio.Event()
        self._seen: set[str] = set()  # looked at once, announced or not: never again this session
        self._after_seq = 0  # events up to this seq were pending at start: the backlog, not news
        self._window_start = 0.0
        self._sent_in_window = 0
        self._held: list[Held] = []
        self._holding = anyio.Event()  # set once the window holds an event back
        self._backlog_announced = False

    async def __call__(self, ctx: ServerRequestContext[Any], call_next: CallNext) -> HandlerResult:
        result = await call_next(ctx)
        if ctx.method == "initialize" and isinstance(result, dict):
            result.setdefault("capabilities", {}).setdefault("experimental", {})[CAPABILITY] = {}
        elif self._session is None and ctx.protocol_version in HANDSHAKE_PROTOCOL_VERSIONS:
            # The client has sent `notifications/initialized` before this request: it may now hear from us.
            self._session = ctx.session
            self._ready.set()
        return result

    async def run(self) -> None:
        async with anyio.create_task_group() as group:
            # Listening starts at once, long before a client has finished its handshake, so nothing that is
            # stored after the backlog is read can slip by unheard.
            group.start_soon(self._listen)
            await self._ready.wait()
            if not self._backlog_announced:  # once per session, not again when the loop is restarted
                await self._announce_backlog()
                self._backlog_announced = True
            group.start_soon(self._digests)
            while True:
                await self._arrived.wait()
                self._arrived = anyio.Event()
                changed, self._incoming = self._incoming, set()
                for event in await self._new_events(changed):
                    await self._offer(event)

    async def _listen(self) -> None:
        async for changed in self.inbox.changes():
            self._incoming |= changed
            self._arrived.set()

    async def _new_events(self, ids: set[str]) -> list[StoredEvent]:
        found = [await self.inbox.store.get_event(event_id) for event_id in ids - self._seen]
        fresh = [e for e in found if e is not None and e.status == "pending" and e.seq > self._after_seq]
        return sorted(fresh, key=lambda event: event.seq)

    async def _announce_backlog(self) -> None:
        newest = await self.inbox.store.list_events(EventQuery(status=None, limit=1, newest_first=True))
        self._after_seq = newest[0].seq if newest else 0
        scanned = await self.inbox.store.list_events(EventQuery(limit=BACKLOG_SCAN))
        matching = []
        for event, classification in zip(scanned, await self.inbox.assess(scanned), strict=True):
            self._seen.add(event.id)
            if self.settings.matches(event.type, classification.priority):
                matching.append((event, classification))
        for event, classification in matching[: self.settings.backlog]:
            await self._announce(event, classification, "pending since before this session")
        rest = len(matching) - self.settings.backlog
        if rest > 0:
            pending = await self.inbox.store.count_events(EventQuery())
            await self._send(
                f"{rest} more pending events like these are waiting ({pending} pending in all): list_events "
                "shows them, oldest first.",
                {"kind": "backlog", "count": str(rest)},
            )

    async def _offer(self, event: StoredEvent) -> None:
        self._seen.add(event.id)
        (classification,) = await self.inbox.assess([event])  # a failure that arrives resolved is no emergency
        if not self.settings.matches(event.type, classification.priority):
            return
        now = anyio.current_time()
        if now - self._window_start >= self.settings.window_seconds:
            self._window_start, self._sent_in_window = now, 0
        if self._sent_in_window < self.settings.per_minute:
            self._sent_in_window += 1
            await self._announce(event, classification, "new")
        else:
            self._held.append(Held(event.id, event.type))
            self._holding.set()

    async def _digests(self) -> None:
        """Past the rate limit, what arrived in the rest of the window goes out as one line when it ends."""
        while True:
            await self._holding.wait()
            await anyio.sleep_until(self._window_start + self.settings.window_seconds)
            self._holding = anyio.Event()
            held, self._held = self._held, []
            types = ", ".join(f"{count} {quote(name)}" for name, count in Counter(e.type for e in held).most_common())
            await self._send(
                f"{len(held)} more events arrived too fast to announce one by one ({types}): list_events shows "
                "them; get_event for each.",
                {"kind": "digest", "count": str(len(held))},
            )

    async def _announce(self, event: StoredEvent, classification: Classification, when: str) -> None:
        try:
            content, meta = self._announcement(event, classification, when)
        except Exception:  # one event that cannot be shown must not end the session's channel
            channel_log.exception("could not announce event %s", json.dumps(event.id))
            return
        await self._send(content, meta)

    def _announcement(
        self, event: StoredEvent, classification: Classification, when: str
    ) -> tuple[str, dict[str, str]]:
        obj = data_object(event.body())
        quoted = {"summary": classification.summary}
        quoted.update({name: obj[name] for name in TEXT_FIELDS if isinstance(obj.get(name), str)})
        quoted = self.presenter.shown(quoted)
        suggested = "; ".join(
            f"{action.tool} {quote(self.presenter.shown(action.arguments))}"
            for action in classification.suggested_actions
        )
        lines = [
            f"Stripe event {quote(event.id)} of type {quote(event.type)}, {when}: priority "
            f"{classification.priority}, category {classification.category}. Read it with get_event, act, then "
            "ack_event.",
            NOTICE,
            *(f"{name}: {quote(value)}" for name, value in quoted.items()),
        ]
        if suggested:
            lines.append(f"Suggested tool calls: {suggested}")
        meta = {
            "event_id": token(event.id),
            "type": token(event.type),
            "priority": classification.priority,
            "category": classification.category,
        }
        return "\n".join(lines), meta

    async def _send(self, content: str, meta: dict[str, str]) -> None:
        assert self._session is not None
        notification = ChannelNotification(params=ChannelParams(content=content, meta=meta))
        # A client that went away is no error: the process ends with its stdin.
        with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
            await self._session.send_notification(notification)  # type: ignore[arg-type]
