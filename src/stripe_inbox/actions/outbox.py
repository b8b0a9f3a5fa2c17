"""The outbox: notifications and ticket forwards are written first, then delivered, retried with
exponential backoff by whichever server process (serve or mcp) is running, across restarts."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import anyio

from ..errors import DeliveryFailed, StoreUnavailable
from ..models import DeliveryStatus
from ..stores import Delivery, DeliveryKind, Store
from .channels import ChannelConfig, Message, one_line, send
from .retries import OutboxPolicy
from .trackers import TicketRequest, TrackerConfig, TrackerReceipt, forward

log = logging.getLogger("stripe_inbox.outbox")

LEASE_SECONDS = 60  # longer than any one send may take, so a live sender keeps its claim
IDLE_POLL_SECONDS = 1.0  # how soon work queued by another process is noticed
BATCH = 20


class Outbox:
    def __init__(
        self,
        store: Store,
        policy: OutboxPolicy,
        channels: Mapping[str, ChannelConfig],
        tracker: TrackerConfig | None,
    ) -> None:
        """`channels`: the configured channels, by name; `tracker`: the ticket tracker, if one is configured."""
        self.store = store
        self.policy = policy
        self.channels = channels
        self.tracker = tracker

    async def deliver_now(self, kind: DeliveryKind, ref_id: int) -> None:
        """The first attempt, made while the tool call waits; later ones belong to `run`."""
        for delivery in await self.store.claim_deliveries(time.time(), LEASE_SECONDS, 1, (kind, ref_id)):
            await self._attempt(delivery)

    async def deliver_due(self, now: float | None = None) -> int:
        """One pass: attempt every delivery that is due at `now`; returns how many were attempted."""
        due = await self.store.claim_deliveries(time.time() if now is None else now, LEASE_SECONDS, BATCH)
        for delivery in due:
            await self._attempt(delivery)
        return len(due)

    async def run(self) -> None:
        """Deliver whatever falls due, forever. Several processes may run this on one inbox."""
        while True:
            try:
                # Read first: a claim is a write, and an idle one would contend with the ingest for the lock.
                next_at = await self.store.next_delivery_at()
                if next_at is not None and next_at <= time.time() and await self.deliver_due():
                    continue
            except StoreUnavailable as error:
                log.warning("outbox: %s; retrying", error)
                next_at = None
            wait = IDLE_POLL_SECONDS if next_at is None else next_at - time.time()
            await anyio.sleep(min(max(wait, 0), IDLE_POLL_SECONDS))

    async def _attempt(self, delivery: Delivery) -> None:
        status: DeliveryStatus = "sent"
        reason = None
        next_attempt_at = None
        receipt = TrackerReceipt()
        try:
            receipt = await self._send(delivery)
        except DeliveryFailed as error:
            reason = str(error)
            policy = self.policy
            if error.permanent or delivery.attempts >= policy.max_attempts:
                status = "failed"
            else:
                status = "queued"
                delay = min(policy.retry_base_seconds * 2 ** (delivery.attempts - 1), policy.retry_max_seconds)
                next_attempt_at = time.time() + delay
        except Exception as error:
            # A fault of ours or a library's, not the channel's refusal: retrying would meet it again, and letting it
            # out would end the loop that delivers everything else. Only the type is kept: a message may hold a URL
            # with a secret in it.
            status, reason = "failed", f"unexpected error while sending ({type(error).__name__}); not retried"
            log.error("outbox: %s %s to %s: %s", delivery.kind, delivery.id, delivery.target, reason)
        log.info(
            "outbox: %s %s to %s, attempt %d: %s%s",
            delivery.kind,
            delivery.id,
            delivery.target,
            delivery.attempts,
            status,
            f" ({one_line(reason)})" if reason else "",  # a receiver's answer is in it: one line, always
        )
        await self.store.finish_delivery(
            delivery, status, reason, next_attempt_at, time.time(), receipt.id, receipt.url
        )

    async def _send(self, delivery: Delivery) -> TrackerReceipt:
        event = delivery.event
        if delivery.ticket is not None:
            tracker = self.tracker
            if tracker is None:
                raise DeliveryFailed("no ticket tracker is configured any more", permanent=True)
            ticket = delivery.ticket
            return await forward(
                tracker,
                TicketRequest(
                    ticket_id=ticket.id,
                    event_id=ticket.event_id,
                    event_type=event.type if event else "",
                    title=ticket.title,
                    body=ticket.body,
                    priority=ticket.priority,
                ),
            )
        notification = delivery.notification
        assert notification is not None
        channel = self.channels.get(delivery.target)
        if channel is None:
            raise DeliveryFailed(f"channel {delivery.target!r} is no longer configured", permanent=True)
        summary = event.summary() if event else None
        await send(
            channel,
            Message(
                channel=delivery.target,
                text=notification.message,
                subject=notification.subject,
                recipient=notification.recipient,
                event_id=notification.event_id,
                event_type=summary.type if summary else None,
                customer=summary.customer if summary else None,
                amount=summary.amount if summary else None,
            ),
        )
        return TrackerReceipt()
