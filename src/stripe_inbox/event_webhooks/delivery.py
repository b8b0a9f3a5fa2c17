"""The webhook delivery loop the runtime runs in every server process: each pass leases the subscriptions no live
replica holds, reads the events after each distinct cursor once (caught-up subscriptions share one cursor, so one
read serves them all), matches every subscription's selector in memory (triaging only the events some selector
admits on their stored facts), and POSTs each match once, in cursor order, moving the cursor under the lease after
each. A callback that fails is retried with the `[outbox]` backoff without holding up the others; 410 ends its
subscription, 413 skips that event."""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import socket
import time
from collections import defaultdict
from collections.abc import Sequence
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

import anyio
import orjson

from ..errors import InboxError, StoreUnavailable
from ..event_feed import Forbidden
from ..stores.event_subscriptions import Subscription
from ..stores.interface import Audit
from . import source
from .callback import MAX_BODY_BYTES, Answer, Callbacks
from .matching import Matcher
from .secret_box import SecretBox

if TYPE_CHECKING:
    from ..inbox import Inbox

log = logging.getLogger("stripe_inbox.event_webhooks")

SCAN_LIMIT = 200  # events read after one cursor in a pass
IN_FLIGHT = 32  # subscriptions being delivered to at once
ROUND_SECONDS = 0.02  # passes are at least this far apart, however many commits wake them
# While the ingress is busy (this many deliveries, or more, wait for their commit), passes are fewer: each reads the
# held subscriptions and, on SQLite, writes through the ingest's thread. Events then reach callbacks a little later.
BUSY_WAITING = 4
BUSY_ROUND_SECONDS = 0.25
IDLE_POLL_SECONDS = 1.0  # how soon events committed by another process (SQLite) are noticed
RELEASE_SECONDS = 5.0
KEPT_MATCHERS = 16  # one per distinct cursor the held subscriptions are at, usually one


class WebhookDelivery:
    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox
        self.store = inbox.store
        self.policy = inbox.settings.outbox
        # A pass starts POSTs for a third of the lease (its holder renews at half), each done within the timeout.
        self.lease_seconds = inbox.settings.event_subscriptions.lease_seconds
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._matchers: dict[frozenset[tuple[str, int]], Matcher] = {}
        self._secrets: dict[tuple[str, int], str] = {}
        self._box: SecretBox | None = None
        self.passes = 0

    async def run(self) -> None:
        """Deliver for ever; several processes may run this on one inbox."""
        callbacks = Callbacks(self.inbox.settings.event_subscriptions.timeout_seconds)
        held = True
        try:
            while True:
                started = time.monotonic()
                wake = anyio.Event()
                with ExitStack() as waking:  # listening from before the pass: a commit during it is not missed
                    waking.enter_context(self.store.event_subscriptions.waking_on_subscriptions(wake))
                    if held:  # the events of a commit matter only to a process holding subscriptions
                        waking.enter_context(self.store.waking(wake))
                    try:
                        held, next_at = await self.deliver_once(callbacks)
                    except StoreUnavailable as error:
                        log.warning("event webhooks: %s; retrying", error)
                        next_at = None
                    await self._wait(wake, next_at, started)
        finally:
            await callbacks.aclose()
            with anyio.CancelScope(shield=True), anyio.move_on_after(RELEASE_SECONDS):
                try:
                    await self.store.release_subscriptions(self.owner)
                except StoreUnavailable as error:
                    log.warning("event webhooks: could not hand back the leases: %s", error)

    async def deliver_once(self, callbacks: Callbacks) -> tuple[bool, float | None]:
        """One pass: whether this process holds any subscription, and when one next falls due, if known (now, when
        there is more to read)."""
        now = time.time()
        self.passes += 1
        if not await self.store.claim_subscriptions(self.owner, now, self.lease_seconds):
            return False, None
        held = await self.store.held_subscriptions(self.owner, now)
        due = [each for each in held if each.next_attempt_at <= now]
        later = [each.next_attempt_at for each in held if each.next_attempt_at > now]
        work = _Pass(self, callbacks)
        await work.run(due)
        if work.more:
            return True, now
        return True, min(later, default=None)

    def matcher(self, subscriptions: Sequence[Subscription]) -> Matcher:
        """The matcher of these subscriptions (kept while they stay the same: it is built once, not every pass). A
        subscription whose stored arguments no longer make a selector (the catalog changed) is left out."""
        identity = frozenset((each.id, each.generation) for each in subscriptions)
        if identity not in self._matchers:
            if len(self._matchers) >= KEPT_MATCHERS:
                self._matchers.clear()
            selectors = {}
            for each in subscriptions:
                try:
                    selectors[each.id] = source.selector(each.name, each.arguments)
                except InboxError as error:
                    log.error("event webhooks: subscription %s: its arguments no longer hold: %s", each.id, error)
            self._matchers[identity] = Matcher(selectors)
        return self._matchers[identity]

    def secret(self, subscription: Subscription) -> str:
        key = (subscription.id, subscription.generation)
        if key not in self._secrets:
            if self._box is None:
                settings = self.inbox.settings
                self._box = SecretBox.open(settings.events_key, settings.events_key_file, create=False)
            self._secrets[key] = self._box.unseal(subscription.secret, subscription.id)
        return self._secrets[key]

    def retry_at(self, attempts: int, now: float) -> float | None:
        """When to try again after `attempts` failures in a row; None once `[outbox]` max_attempts is spent."""
        if attempts >= self.policy.max_attempts:
            return None
        delay = self.policy.retry_base_seconds * 2 ** (attempts - 1)
        return now + min(delay, self.policy.retry_max_seconds)

    async def _wait(self, wake: anyio.Event, next_at: float | None, started: float) -> None:
        """Until `wake` (a commit, or a subscription saved here), or `next_at`; at most IDLE_POLL_SECONDS, and at
        least ROUND_SECONDS after `started`."""
        timeout = IDLE_POLL_SECONDS if next_at is None else min(max(next_at - time.time(), 0), IDLE_POLL_SECONDS)
        with anyio.move_on_after(timeout):
            await wake.wait()
        spacing = BUSY_ROUND_SECONDS if self.inbox.committing >= BUSY_WAITING else ROUND_SECONDS
        await anyio.sleep(max(0.0, spacing - (time.monotonic() - started)))


class _Pass:
    """One delivery pass over the due subscriptions."""

    def __init__(self, delivery: WebhookDelivery, callbacks: Callbacks) -> None:
        self.delivery = delivery
        self.store = delivery.store
        self.owner = delivery.owner
        self.callbacks = callbacks
        self.more = False
        self.deadline = time.monotonic() + delivery.lease_seconds / 3
        self.moved: list[tuple[str, str | None, int]] = []  # cursors moved past events that matched nothing

    async def run(self, due: Sequence[Subscription]) -> None:
        now = time.time()
        active: dict[tuple[str, str | None], list[Subscription]] = defaultdict(list)
        farewells = []
        for each in due:
            if each.state == "active" and each.refresh_before is not None and each.refresh_before <= now:
                await self._expire(each, now)
            elif each.state == "active":
                active[(each.name, each.cursor)].append(each)
            elif each.terminate_pending:
                farewells.append(each)
        limit = anyio.Semaphore(IN_FLIGHT)
        async with anyio.create_task_group() as group:
            for each in farewells:
                group.start_soon(self._guarded, limit, self._terminate, each)
            for (name, cursor), group_of in active.items():
                scan = await source.scan(self.delivery.inbox, name, cursor, SCAN_LIMIT)
                self.more = self.more or scan.has_more
                matcher = self.delivery.matcher(group_of)
                admitted = matcher.admitted(scan.entries)
                await source.assess(self.delivery.inbox, admitted)
                matched = matcher.occurrences(admitted)
                for each in group_of:
                    group.start_soon(self._guarded, limit, self._deliver, each, scan, matched.get(each.id, []))
        await self.store.record_cursors(self.owner, self.moved)

    async def _guarded(self, limit: anyio.Semaphore, work: Any, subscription: Subscription, *more: Any) -> None:
        """One subscription's work; whatever goes wrong with it is logged and left for its next pass."""
        async with limit:
            try:
                await work(subscription, *more)
            except StoreUnavailable as error:
                log.warning("event webhooks: subscription %s: %s", subscription.id, error)
            except Exception as error:  # one subscription's trouble (a key that does not open its secret, …) is its own
                log.error("event webhooks: subscription %s failed: %s", subscription.id, type(error).__name__)

    async def _deliver(self, subscription: Subscription, scan: source.Scan, matched: list[source.Occurrence]) -> None:
        secret = self.delivery.secret(subscription)
        cursor = subscription.cursor
        if scan.truncated:
            gap = {"type": "gap", "cursor": scan.start_cursor}
            answer = await self._post(subscription, secret, f"gap_{_digest(subscription.cursor)}", gap)
            if not await self._settle(subscription, answer, scan.start_cursor, event=False):
                return
            cursor = scan.start_cursor
        for occurrence in matched:
            if time.monotonic() > self.deadline:  # the rest next pass, under a renewed lease
                self.more = True
                return
            answer = await self._post(subscription, secret, occurrence.event_id, _event_body(occurrence))
            if answer.status == 413:  # not retried: recorded, and the cursor moves past it
                log.info("event webhooks: %s: %s refused as too large (413)", subscription.id, occurrence.event_id)
                await self.store.record_failed_attempt(
                    subscription.id, self.owner, f"413: {occurrence.event_id} skipped as too large", time.time()
                )
            if not await self._settle(subscription, answer, occurrence.cursor):
                return
            cursor = occurrence.cursor
        if cursor == scan.cursor:
            return
        if matched or scan.truncated:
            await self.store.record_delivered(
                subscription.id, self.owner, subscription.generation, scan.cursor, 0, time.time()
            )
        else:
            self.moved.append((subscription.id, scan.cursor, subscription.generation))

    async def _settle(self, subscription: Subscription, answer: Answer, cursor: str | None, event: bool = True) -> bool:
        """Record one POST's outcome (of an event, or a control message); whether to go on to the next event."""
        now = time.time()
        if answer.ok or answer.status == 413:
            delivered = 1 if answer.ok and event else 0
            return await self.store.record_delivered(
                subscription.id, self.owner, subscription.generation, cursor, delivered, now
            )
        if answer.status == 410:
            await self.store.record_failed_attempt(
                subscription.id, self.owner, "410: the callback is gone", now, end_reason="gone (410 from the callback)"
            )
            return False
        attempts = subscription.attempts + 1
        retry_at = self.delivery.retry_at(attempts, now)
        if retry_at is None:
            await self.store.record_failed_attempt(
                subscription.id, self.owner, answer.error or "failed", now, end_reason=f"failed {attempts} times"
            )
        else:
            await self.store.record_failed_attempt(subscription.id, self.owner, answer.error or "failed", retry_at)
        return False

    async def _post(self, subscription: Subscription, secret: str, message_id: str, body: dict[str, Any]) -> Answer:
        return await self.callbacks.post(subscription.url, secret, subscription.id, message_id, orjson.dumps(body))

    async def _expire(self, subscription: Subscription, now: float) -> None:
        audit = Audit("stripe-inbox", "expire_subscription", {"subscription_id": subscription.id})
        await self.store.end_subscription(subscription.id, "expired", now, audit, terminate=True)

    async def _terminate(self, subscription: Subscription) -> None:
        """Tell the callback once that its subscription has ended; whatever it answers, that is the end."""
        secret = self.delivery.secret(subscription)
        body = {
            "type": "terminated",
            "error": {"code": Forbidden.code, "message": f"subscription ended: {subscription.ended_reason}"},
        }
        await self._post(subscription, secret, f"term_{_digest(subscription.id)}", body)
        await self.store.terminated(subscription.id, self.owner)


def _event_body(occurrence: source.Occurrence) -> dict[str, Any]:
    """The event as the draft sends it, labelled as events/poll labels it; one whose payload makes it over 256 KiB
    goes without its payload (the receiver can read it with get_event)."""
    wire = occurrence.labelled()
    if len(orjson.dumps(wire)) > MAX_BODY_BYTES and "payload" in wire["data"]:
        wire["data"] = {key: value for key, value in wire["data"].items() if key != "payload"}
    return wire


def _digest(text: str | None) -> str:
    return hashlib.sha256((text or "").encode()).hexdigest()[:24]
