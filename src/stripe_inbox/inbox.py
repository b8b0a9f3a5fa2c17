"""The inbox: verified deliveries in, and everything an agent or operator does with them."""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import anyio
import stripe

from .actions.channels import header_problem, needs_confirmation, recipient_for
from .actions.outbox import Outbox
from .approvals import Approvals, Consent, first_state
from .change_feed import ChangeFeed
from .classify import classify
from .errors import DeliveryRejected, InvalidArgument, NotFound
from .events import EventFilter, IncomingEvent
from .filters import MAX_PAGE, Terms, taking_filters
from .models import (
    OUTCOMES,
    PRIORITIES,
    AckResult,
    ClaimResult,
    Classification,
    DeliveryState,
    EventDetail,
    EventPage,
    EventSummary,
    Forward,
    NotifyResult,
    Stats,
    TicketResult,
    Timeline,
    WaitResult,
    utc,
)
from .search_indexer import SearchIndexer
from .settings import Settings
from .stats import tally
from .stores import Audit, DeliveryKind, EventQuery, Store, StoredEvent, open_store
from .stores.search import count_cap
from .stripe import signature
from .stripe.api import StripeAPI, StripeAPIError
from .supervisor import Supervisor

MAX_TIMELINE = 1000
MAX_WAIT_SECONDS = 300
MIN_LEASE_SECONDS, MAX_LEASE_SECONDS = 1, 3600
REPLAY_PAGE = 500
DeliveryResult = Literal["stored", "duplicate", "filtered"]


@dataclass(frozen=True, slots=True)
class Receipt:
    result: DeliveryResult
    event: IncomingEvent


class Inbox:
    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.secrets = settings.webhook_secrets
        self.filter = EventFilter(settings.events)
        self.outbox = Outbox(store, settings.outbox, settings.all_channels, settings.tickets)
        self.approvals = Approvals(store, settings, self.outbox)
        self.feed = ChangeFeed(store)
        # The process's background loops (runtime.py starts them) each run under it; /healthz reads it.
        self.loops = Supervisor()
        # Deliveries waiting for their commit: while there are several, the ingress is near what the machine can
        # take, and forwarding and indexing give way to it.
        self.committing = 0
        self.indexer = SearchIndexer(store, lambda: self.committing)
        store.forward_new_events([(destination.name, tuple(destination.events)) for destination in settings.forward])
        # Parsing needs a client but makes no request, so a placeholder key will do.
        self._stripe = stripe.StripeClient(settings.api_key or "sk_unused")

    # -- ingress ---------------------------------------------------------------------------------

    async def receive(self, payload: bytes, signature_header: str | None, thin: bool = False) -> Receipt:
        """Verify, parse, filter and durably store one delivery; raises DeliveryRejected or StoreUnavailable.
        `thin`: the delivery came to the thin-event endpoint (Stripe's v2 event destinations)."""
        signature.verify(payload, signature_header, self.secrets)
        event = IncomingEvent.parse(payload)
        if thin != (event.kind == "thin"):
            where = "/webhooks/stripe/thin" if event.kind == "thin" else "/webhooks/stripe"
            raise DeliveryRejected("invalid_payload", f"this is a {event.kind} event: its endpoint is {where}")
        if thin:
            try:  # the stripe package's own reading of a thin event notification
                self._stripe.parse_event_notification_without_verification(payload)
            except (ValueError, KeyError, TypeError) as error:
                raise DeliveryRejected("invalid_payload", f"not a thin event notification: {error}") from None
        (result,) = await self.accept([event])
        return Receipt(result, event)

    async def accept(self, events: Sequence[IncomingEvent]) -> list[DeliveryResult]:
        """The one way events enter the inbox (deliveries and backfills alike): the type filter, then one
        durable transaction that inserts new events and counts deliveries of known ones."""
        accepted = [self.filter.accepts(event.type) for event in events]
        kept = [event for event, keep in zip(events, accepted, strict=True) if keep]
        self.committing += 1
        try:
            stored = iter(await self.store.add_events(kept, time.time()) if kept else [])
        finally:
            self.committing -= 1
        return [next(stored) if keep else "filtered" for keep in accepted]

    # -- reading ---------------------------------------------------------------------------------

    @taking_filters
    async def list_events(self, given: dict[str, Any]) -> EventPage:
        """A page of events by the filters of filters.py: pending ones oldest first (the work queue), others newest
        first."""
        terms = Terms.of(given)
        amount = terms.amount_without_currency()
        held = await self._only_currency(amount) if amount is not None else None
        # The work queue reads oldest first; history reads newest first.
        selection = terms.query(held, newest_first=given["status"] != "pending")
        if selection.indexed:
            await self.indexer.read_your_writes()
        total = await self.store.count_events(selection)
        rows = await self.store.list_events(selection, total)
        limit = given["limit"]
        page = rows[:limit]
        cap = count_cap(selection)
        capped = selection.searches and total > cap
        return EventPage(
            events=await self.summaries(page),
            total=cap if capped else total,
            total_exact=not capped,
            next_cursor=str(page[-1].seq) if len(rows) > limit else None,
            unindexed=await self.store.unindexed() if selection.indexed else 0,
        )

    async def _only_currency(self, argument: str) -> str | None:
        """The currency an amount without one must be in: the only one the events hold."""
        held = await self.store.currencies()
        if len(held) > 1:
            raise InvalidArgument(
                f"{argument} needs currency: the events hold amounts in several currencies ({', '.join(held)}, ...)"
            )
        return held[0] if held else None

    async def summaries(self, events: Sequence[StoredEvent]) -> list[EventSummary]:
        """The events' summaries, each with what resolved it and whether it came late (one read for all, which
        also sees the events the search index does not hold yet)."""
        resolved = await self.store.resolutions(events) if events else {}
        return [event.summary(resolved.get(event.id)) for event in events]

    async def timeline(self, object_id: str) -> Timeline:
        """Every event about an object, oldest first (by Stripe's time, then arrival)."""
        if not object_id.strip():
            raise InvalidArgument("object_id must not be empty")
        await self.indexer.read_your_writes()
        rows = await self.store.timeline(object_id.strip(), MAX_TIMELINE + 1)
        return Timeline(
            object_id=object_id.strip(),
            events=await self.summaries(rows[:MAX_TIMELINE]),
            truncated=len(rows) > MAX_TIMELINE,
            unindexed=await self.store.unindexed(),
        )

    async def event(self, event_id: str) -> StoredEvent:
        stored = await self.store.get_event(event_id)
        if stored is None:
            raise NotFound.event(event_id)
        return stored

    async def get_event(self, event_id: str) -> EventDetail:
        stored = await self.event(event_id)
        full_event, full_event_note = await self._full_event(stored)
        return EventDetail(
            id=stored.id,
            type=stored.type,
            kind=stored.kind,
            account=stored.account,
            related_object=stored.related(),
            full_event=full_event,
            full_event_note=full_event_note,
            state=stored.state(time.time()),
            event=stored.body(),
            classification=stored.stored_classification(),
            tickets=await self.store.tickets(event_id),
            notifications=await self.store.notifications(event_id),
            audit=await self.store.audit_trail(event_id),
            forwards=await self.store.forwards(event_id),
        )

    async def _full_event(self, stored: StoredEvent) -> tuple[dict[str, Any] | None, str | None]:
        """A thin event carries only a reference: fetch the full event from Stripe when a key allows."""
        if stored.kind != "thin":
            return None, None
        if not self.settings.api_key:
            return None, "a thin event holds only a reference; set STRIPE_API_KEY to fetch the full event from Stripe"
        try:
            return await StripeAPI(self.settings.api_key, self.settings.api_base).v2_event(stored.id), None
        except StripeAPIError as error:
            return None, f"could not fetch the full event: {error}"

    async def stats(self) -> Stats:
        return await tally(self.store, time.time())

    async def wait_for_events(self, timeout_seconds: float = 30, type: str | None = None) -> WaitResult:
        """Pending events of `type` as soon as there are any, or an empty result after the timeout."""
        if not 0 <= timeout_seconds <= MAX_WAIT_SECONDS or math.isnan(timeout_seconds):
            raise InvalidArgument(f"timeout_seconds must be between 0 and {MAX_WAIT_SECONDS}")
        with anyio.move_on_after(timeout_seconds):
            while True:
                changed = self.feed.changed  # taken before the read, so no change slips between the two
                page = await self.list_events(type=type, limit=MAX_PAGE)
                if page.events:
                    return WaitResult(events=page.events, timed_out=False)
                await changed.wait()
        return WaitResult(events=[], timed_out=True)

    # -- acting ----------------------------------------------------------------------------------

    def triage(self, stored: StoredEvent, superseded_by: str | None = None) -> Classification:
        """The classification under the configured policy, without storing it."""
        return classify(stored.body(), self.settings.policy, self.settings.rules, superseded_by)

    async def assess(self, events: Sequence[StoredEvent]) -> list[Classification]:
        """What each event calls for now (one read of what resolves them all): once a later event resolved it,
        its triage, which says so (whatever was stored before that arrived); else its stored classification, or
        its triage when it has none."""
        return [classification for _, classification in await self.assessed(events)]

    async def assessed(self, events: Sequence[StoredEvent]) -> list[tuple[EventSummary, Classification]]:
        """Each event's summary (with what resolved it) and what it calls for now (as `assess` says), from one
        read of what resolves them all."""
        resolved = await self.store.resolutions(events) if events else {}
        assessed = []
        for event in events:
            superseded_by = resolved[event.id].superseded_by
            stored = None if superseded_by else event.stored_classification()
            assessed.append((event.summary(resolved[event.id]), stored or self.triage(event, superseded_by)))
        return assessed

    async def classify(self, event_id: str, actor: str) -> Classification:
        stored = await self.event(event_id)
        resolution = (await self.store.resolutions([stored]))[event_id]
        result = self.triage(stored, resolution.superseded_by)
        await self.store.set_classification(
            event_id, result, time.time(), Audit(actor, "classify", {"event_id": event_id})
        )
        return result

    async def create_ticket(self, event_id: str, title: str, body: str, priority: str, actor: str) -> TicketResult:
        title = title.strip()
        if not title:
            raise InvalidArgument("title must not be empty")
        _check_choice("priority", priority, PRIORITIES)
        tracker = self.settings.tickets.type if self.settings.tickets else None
        confirm = self.settings.tickets is not None and needs_confirmation(self.settings.tickets)
        audit = Audit(actor, "create_ticket", {"event_id": event_id, "title": title, "priority": priority})
        ticket, created = await self.store.add_ticket(
            event_id,
            title,
            body,
            priority,
            tracker,
            time.time(),
            audit,  # type: ignore[arg-type]
            "awaiting_approval" if confirm else "queued",
        )
        if created and tracker and not confirm:
            await self.outbox.deliver_now("ticket", ticket.id)
            ticket = await self.store.ticket(ticket.id)
        return TicketResult(ticket=ticket, created=created)

    async def notify(
        self,
        channel: str,
        message: str,
        event_id: str | None,
        subject: str | None,
        actor: str,
        idempotency_key: str | None = None,
        consent: Consent | None = None,
    ) -> NotifyResult:
        """Send through a channel; on one that needs a person's confirmation, only with `consent` "granted"
        (asked during the call), else it is rejected ("declined") or waits for approval (None)."""
        channels = self.settings.all_channels
        _check_choice("channel", channel, tuple(channels), what="configured channels")
        if not message.strip():
            raise InvalidArgument("message must not be empty")
        if subject is not None and (problem := header_problem("subject", subject)) is not None:
            raise InvalidArgument(problem)
        event = (await self.event(event_id)).body() if event_id is not None else None
        recipient = recipient_for(channels[channel], event)
        # The same call made twice (an agent retrying) sends once.
        key = (
            idempotency_key
            or hashlib.sha256("\0".join((event_id or "", channel, subject or "", message)).encode()).hexdigest()
        )
        arguments: dict[str, Any] = {"channel": channel, "event_id": event_id, "subject": subject}
        if needs_confirmation(channels[channel]):
            arguments["confirmed"] = consent or "not asked"
        status, reason = first_state(channels[channel], consent)
        audit = Audit(actor, "notify", arguments)
        notification, created = await self.store.add_notification(
            channel, message, subject, recipient, event_id, key, time.time(), audit, status, reason
        )
        if created and status == "queued":
            await self.outbox.deliver_now("notification", notification.id)
            notification = await self.store.notification(notification.id)
        reason = notification.delivery.reason
        if notification.delivery.status == "awaiting_approval":
            reason = await self.approvals.where_to_approve("notification", notification.id)
        return NotifyResult(
            status="queued" if notification.delivery.status == "sending" else notification.delivery.status,
            reason=reason,
            duplicate=not created,
            notification=notification,
        )

    async def claim(self, holder: str, limit: int, lease_seconds: float) -> ClaimResult:
        """Lease pending events to one agent, so several agents can share the inbox without doing an
        event twice."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidArgument(f"limit must be between 1 and {MAX_PAGE}, not {limit}")
        if not MIN_LEASE_SECONDS <= lease_seconds <= MAX_LEASE_SECONDS:
            raise InvalidArgument(
                f"lease_seconds must be between {MIN_LEASE_SECONDS} and {MAX_LEASE_SECONDS}, not {lease_seconds}"
            )
        now = time.time()
        claimed = await self.store.claim_events(holder, limit, lease_seconds, now)
        return ClaimResult(
            events=await self.summaries(claimed),
            lease_expires_at=utc(now + lease_seconds),
            pending=await self.store.count_events(EventQuery()),
        )

    async def ack(
        self, event_id: str, outcome: str, note: str | None, actor: str, holder: str | None = None
    ) -> AckResult:
        """Ack an event; as an agent (`holder`), not one another agent has a live claim on."""
        _check_choice("outcome", outcome, OUTCOMES)
        audit = Audit(actor, "ack_event", {"event_id": event_id, "outcome": outcome, "note": note})
        stored, changed = await self.store.ack(event_id, outcome, note, time.time(), audit, holder)  # type: ignore[arg-type]
        return AckResult(
            event_id=event_id,
            status=stored.status,
            outcome=stored.outcome or outcome,  # type: ignore[arg-type]
            note=stored.note,
            acked_at=utc(stored.acked_at),  # type: ignore[arg-type]
            already_acked=not changed,
        )

    async def retry_delivery(self, kind: DeliveryKind, ref_id: int, actor: str) -> DeliveryState:
        """Send a failed notification or ticket forward again: queued afresh, its first new attempt made now."""
        _check_choice("kind", kind, ("notification", "ticket"))
        await self.store.retry_delivery(kind, ref_id, time.time(), Audit(actor, f"retry_{kind}", {"id": ref_id}))
        await self.outbox.deliver_now(kind, ref_id)
        retried = await (self.store.notification(ref_id) if kind == "notification" else self.store.ticket(ref_id))
        assert retried.delivery is not None  # it was just delivered from the outbox
        return retried.delivery

    async def record_reveal(self, event_id: str, actor: str) -> None:
        """Audit that an operator was shown the event's personal data unmasked."""
        await self.store.add_audit(event_id, time.time(), Audit(actor, "reveal_payload", {"event_id": event_id}))

    async def replay(self, event_ids: Sequence[str], destination: str, actor: str) -> list[Forward]:
        """A new forward of each event to a configured destination, signed afresh when it is sent."""
        self._check_destination(destination)
        if not event_ids:
            raise InvalidArgument("name at least one event to replay")
        audit = Audit(actor, "replay_event", {"destination": destination})
        made = await self.store.replay_forwards(list(dict.fromkeys(event_ids)), destination, time.time(), audit)
        return [await self.store.forward(forward_id) for forward_id in made]

    async def retry_forward(self, event_id: str, forward_id: int, actor: str) -> Forward:
        """Send a failed forward of an event again: queued afresh, due at once, for the forwarding loop."""
        audit = Audit(actor, "retry_forward", {"event_id": event_id, "forward_id": forward_id})
        await self.store.retry_forward(event_id, forward_id, time.time(), audit)
        return await self.store.forward(forward_id)

    async def revoke_token(self, token_id: str, actor: str) -> int:
        """Revoke an OAuth token and the rest of its client's grant, audited; how many were still usable."""
        audit = Audit(actor, "revoke_token", {"token_id": token_id})
        revoked = await self.store.revoke_oauth_token(token_id, time.time(), audit)
        if revoked is None:
            raise NotFound(
                f"no OAuth token {token_id}; `stripe-inbox tokens list` or the dashboard's tokens page shows them"
            )
        return revoked

    async def replay_created(
        self,
        destination: str,
        since: int,
        until: int | None,
        event_type: str | None,
        actor: str,
        progress: Callable[[int, int], None] | None = None,
    ) -> int:
        """Replay every event Stripe created in [since, until) (of `event_type`), in arrival order, a page per
        transaction; `progress(done, total)` after each page. Returns how many were replayed."""
        self._check_destination(destination)
        total = await self.store.count_created(since, until, event_type)
        done, after = 0, 0
        audit = Audit(actor, "replay_event", {"destination": destination})
        while page := await self.store.events_created(since, until, event_type, after, REPLAY_PAGE):
            await self.store.replay_forwards([event_id for _, event_id in page], destination, time.time(), audit)
            done, after = done + len(page), page[-1][0]
            if progress is not None:
                progress(done, max(total, done))
        return done

    def _check_destination(self, destination: str) -> None:
        names = tuple(forward.name for forward in self.settings.forward)
        if not names:
            raise InvalidArgument("no [[forward]] destination is configured: add one to the TOML file first")
        _check_choice("destination", destination, names, what="configured destinations")

    async def prune(self, acked_older_than_days: float) -> int:
        if not acked_older_than_days >= 0:
            raise InvalidArgument("--acked-older-than must be a number of days, 0 or more")
        return await self.store.prune(time.time() - acked_older_than_days * 86400)

    def changes(self) -> AsyncIterator[set[str]]:
        """The ids of the events changed since the last set this consumer took, while the runtime runs."""
        return self.feed.changes()


def _check_choice(name: str, value: str, choices: tuple[str, ...], what: str = "one of") -> None:
    if value not in choices:
        listed = ", ".join(choices)
        raise InvalidArgument(f"{name} {value!r} is not valid; {what}: {listed}")


@asynccontextmanager
async def open_inbox(settings: Settings) -> AsyncIterator[Inbox]:
    store = await open_store(settings.db, settings.lock_timeout_seconds)
    try:
        yield Inbox(store, settings)
    finally:
        await store.close()
