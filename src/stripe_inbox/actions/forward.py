"""Forwarding to the handlers people already run (the [[forward]] destinations): the request each gets (the exact
stored bytes, signed in Stripe's own scheme with the destination's secret, so `stripe.Webhook.construct_event`
accepts it unchanged), and the delivery loop every server process runs over the outbox's forwards."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio
import anyio.abc

from ..errors import StoreUnavailable
from ..stores.forwarding import ForwardDelivery, ForwardOutcome, Health, PausePolicy
from ..stripe.signature import sign

# The cli still imports the destination's name pattern from here; its new package should take it from destinations.
from .poster import Poster, PostFailed

if TYPE_CHECKING:
    from ..stores import Store
    from .destinations import ForwardDestination
    from .retries import OutboxPolicy

log = logging.getLogger("stripe_inbox.forward")


USER_AGENT = "stripe-inbox (forwarding a Stripe webhook)"
IN_FLIGHT_PER_DESTINATION = 8  # requests at once to one destination, each on a kept-alive connection
# Forwards claimed per destination ahead of the requests, so one round's claim keeps the connections busy until the
# next round; a slow or paused destination holds no more than this, the others keep their own.
CLAIMED_AHEAD = 64
ROUND_SECONDS = 0.01  # outcomes and claims are written once per round, not once per forward
# While forwarding yields to a busy ingress, rounds are fewer: on SQLite each statement of a round runs on the
# ingest thread, and each costs it a wait for the GIL.
BUSY_ROUND_SECONDS = 0.25
LEASE_MARGIN_SECONDS = 30.0
# Forwarding yields the CPU to a busy ingress: while on average BUSY_WAITING deliveries or more wait for their commit
# (the ingress is near what it can take), the rate at which requests start is halved; otherwise it grows back, to no
# limit at all, so a backlog built in a burst drains at full speed after it. At light load nothing waits long and
# forwards go at once.
SAMPLE_SECONDS = 0.01
ADJUST_SECONDS = 0.1
BUSY_WAITING = 4.0
MIN_RATE, MAX_RATE = 20.0, 20_000.0  # requests started per second
IDLE_POLL_SECONDS = 1.0  # how soon forwards queued by another process (SQLite) are noticed
RELEASE_SECONDS = 5.0  # at shutdown, how long handing unanswered forwards back may take
ERROR_BODY_CHARS = 200


def signature_header(payload: bytes, secrets: Sequence[str], timestamp: int | None = None) -> str:
    """`t=…,v1=…[,v1=…]`: one signature per secret, all over the same timestamp."""
    moment = int(time.time()) if timestamp is None else timestamp
    first, *more = secrets
    return sign(payload, first, moment) + "".join(
        "," + sign(payload, secret, moment).split(",", 1)[1] for secret in more
    )


@dataclass(frozen=True, slots=True)
class Answer:
    """How a destination answered one POST."""

    status_code: int | None  # None: no answer (timeout, connection refused)
    latency_ms: float
    error: str | None  # None when it took the event (2xx)


async def post_signed(poster: Poster, payload: bytes, secrets: Sequence[str], timeout: float) -> Answer:
    """POST the exact bytes with a fresh signature. Anything but a 2xx is a failure, as Stripe counts it."""
    headers = {
        "Content-Type": "application/json",
        "Stripe-Signature": signature_header(payload, secrets),
        "User-Agent": USER_AGENT,
    }
    started = time.perf_counter()
    try:
        status, body = await poster.post(payload, headers, timeout)
    except TimeoutError:
        return Answer(None, _since(started), f"timed out after {timeout:g} s")
    except PostFailed as error:
        return Answer(None, _since(started), str(error))
    latency = _since(started)
    if 200 <= status < 300:
        return Answer(status, latency, None)
    return Answer(status, latency, f"HTTP {status}: {body.decode('utf-8', 'replace')[:ERROR_BODY_CHARS]}")


def _since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


class Forwarder:
    """Delivers the outbox's forwards, concurrently, from whichever server processes run: each round records the
    answers that came in and claims what is due, in one transaction; a destination that keeps failing is paused
    and probed without slowing the others."""

    def __init__(
        self,
        store: Store,
        policy: OutboxPolicy,
        destinations: Sequence[ForwardDestination],
        committing: Callable[[], int] = lambda: 0,
    ) -> None:
        """`committing`: how many deliveries wait for their commit now (Inbox.committing)."""
        self.store = store
        self._committing = committing
        self.policy = policy
        self.pause = PausePolicy(policy.pause_after_failures, policy.pause_seconds)
        self.destinations = {destination.name: destination for destination in destinations}
        self._secrets = {destination.name: destination.secrets() for destination in destinations}
        self._claimed: Counter[str] = Counter()  # claimed and not yet answered, per destination
        self._slots = {name: anyio.Semaphore(IN_FLIGHT_PER_DESTINATION) for name in self.destinations}
        slowest = max((destination.timeout_seconds for destination in destinations), default=10.0)
        # Long enough for a live sender to work through what it claimed, even at the slowest destination's timeout.
        self.lease_seconds = slowest * (CLAIMED_AHEAD / IN_FLIGHT_PER_DESTINATION + 1) + LEASE_MARGIN_SECONDS
        self._retired: set[str] = set()  # destinations with forwards queued that are no longer configured
        self._sending: set[int] = set()
        self._outcomes: list[ForwardOutcome] = []
        self._wake = anyio.Event()
        self._rate: float | None = None  # requests started per second; None: as fast as they come
        self._started = 0
        self._next_start = 0.0

    async def run(self) -> None:
        """Forward whatever falls due, forever; several processes may run this on one inbox."""
        # Connections of their own per destination: a slow one's are not in the others' way.
        posters = {name: Poster(str(destination.url)) for name, destination in self.destinations.items()}
        try:
            async with anyio.create_task_group() as group:
                if self.destinations:
                    group.start_soon(self._yield_to_the_ingress)
                while True:
                    started = time.monotonic()
                    try:
                        next_at = await self._round(posters, group)
                    except StoreUnavailable as error:
                        log.warning("forward: %s; retrying", error)
                        next_at = None
                    await self._wait(next_at, started)
        finally:
            for poster in posters.values():
                poster.close()
            with anyio.CancelScope(shield=True), anyio.move_on_after(RELEASE_SECONDS):
                await self._stop()

    async def _round(self, posters: dict[str, Poster], group: anyio.abc.TaskGroup) -> float | None:
        """Record the answers in and claim what is due, in one write; returns when a forward next falls due, if
        known. While answers come in, the write is due anyway and claims whatever room each destination has; only
        an idle round reads first whether there is anything to do."""
        now = time.time()
        outcomes, self._outcomes = self._outcomes, []
        next_at = None
        if outcomes:
            wanted = {name: CLAIMED_AHEAD - self._claimed[name] for name in [*self.destinations, *self._retired]}
        else:
            due, health = await self.store.forward_schedule()
            wanted = {}
            for destination, at in due.items():
                at = max(at, health.get(destination, Health()).resumes_at() or 0.0)
                if destination not in self.destinations:
                    self._retired.add(destination)
                if at > now:
                    next_at = at if next_at is None else min(next_at, at)
                elif self._claimed[destination] < CLAIMED_AHEAD:
                    wanted[destination] = CLAIMED_AHEAD - self._claimed[destination]
            if not wanted:
                return next_at
        wanted = {name: room for name, room in wanted.items() if room > 0}
        try:
            claimed = await self.store.forward_round(outcomes, wanted, now, self.lease_seconds, self.pause)
        except BaseException:
            self._outcomes = outcomes + self._outcomes
            raise
        for delivery in claimed:
            self._claimed[delivery.destination] += 1
            self._sending.add(delivery.id)
            group.start_soon(self._send, posters.get(delivery.destination), delivery)
        return now if claimed or outcomes else next_at

    async def _wait(self, next_at: float | None, started: float) -> None:
        """Until a forward is answered, a commit queues more, or `next_at`; at least ROUND_SECONDS after `started`."""
        timeout = IDLE_POLL_SECONDS if next_at is None else min(max(next_at - time.time(), 0), IDLE_POLL_SECONDS)
        if not self._outcomes:
            # Only a configured destination's (or a retired one's) forwards can be queued by a commit here: with
            # none, the ingress's commits wake no round, and the poll finds what other processes queue.
            waking: AbstractContextManager[None] = nullcontext()
            if self.destinations or self._retired:
                waking = self.store.waking(self._wake)
            with waking, anyio.move_on_after(timeout):
                await self._wake.wait()
        self._wake = anyio.Event()
        spacing = ROUND_SECONDS if self._rate is None else BUSY_ROUND_SECONDS
        await anyio.sleep(max(0.0, spacing - (time.monotonic() - started)))

    async def _send(self, poster: Poster | None, delivery: ForwardDelivery) -> None:
        try:
            destination = self.destinations.get(delivery.destination)
            if destination is None or poster is None:
                error = f"destination {delivery.destination!r} is no longer configured"
                outcome = ForwardOutcome(delivery, "failed", None, None, error, None, time.time(), health=False)
            else:
                async with self._slots[destination.name]:
                    await self._pace()
                    answer = await post_signed(
                        poster,
                        delivery.payload,
                        self._secrets[destination.name],
                        destination.timeout_seconds,
                    )
                outcome = self._outcome(delivery, answer)
            self._outcomes.append(outcome)
            self._sending.discard(delivery.id)
            if outcome.status != "sent":
                log.info(
                    "forward: %s to %s, attempt %d: %s (%s)",
                    delivery.event_id,
                    delivery.destination,
                    delivery.attempts,
                    outcome.status,
                    outcome.error,
                )
        finally:
            self._claimed[delivery.destination] -= 1
            self._wake.set()

    async def _pace(self) -> None:
        """Wait for this request's turn at the current rate; a slow destination's requests hold no turn."""
        self._started += 1
        if self._rate is None:
            return
        now = time.monotonic()
        start = max(now, self._next_start)
        self._next_start = start + 1 / self._rate
        if start > now:
            await anyio.sleep(start - now)

    async def _yield_to_the_ingress(self) -> None:
        """Halve the rate while the ingress is busy, grow it back while it is not (AIMD)."""
        samples, waiting, window, started = 0, 0, time.monotonic(), self._started
        while True:
            await anyio.sleep(SAMPLE_SECONDS)
            samples, waiting = samples + 1, waiting + self._committing()
            now = time.monotonic()
            if now - window < ADJUST_SECONDS:
                continue
            observed = (self._started - started) / (now - window)
            if waiting / samples >= BUSY_WAITING:
                self._rate = max(MIN_RATE, min(self._rate or observed, observed) / 2)
            elif self._rate is not None:
                self._rate = None if self._rate * 1.5 > MAX_RATE else self._rate * 1.5
            samples, waiting, window, started = 0, 0, now, self._started

    def _outcome(self, delivery: ForwardDelivery, answer: Answer) -> ForwardOutcome:
        now = time.time()
        if answer.error is None:
            status, next_attempt_at = "sent", None
        elif delivery.attempts >= self.policy.max_attempts:
            status, next_attempt_at = "failed", None
        else:
            delay = self.policy.retry_base_seconds * 2 ** (delivery.attempts - 1)
            status, next_attempt_at = "queued", now + min(delay, self.policy.retry_max_seconds)
        return ForwardOutcome(
            delivery, status, answer.status_code, round(answer.latency_ms, 3), answer.error, next_attempt_at, now
        )

    async def _stop(self) -> None:
        """Record the answers already in and hand back the forwards still unanswered, so a restart sends them at
        once instead of after their lease."""
        try:
            if self._outcomes:
                await self.store.forward_round(self._outcomes, {}, time.time(), self.lease_seconds, self.pause)
                self._outcomes = []
            await self.store.release_forwards(sorted(self._sending))
        except StoreUnavailable as error:
            log.warning("forward: could not record the last answers: %s", error)
