"""The forwarding commands: `events replay`, `forward secret NAME`, and `forward --to URL`, the durable cousin of
`stripe listen --forward-to`: a process beside `serve` that forwards each event as it is stored, one line per
delivery, and goes on after a restart from where it stopped."""

from __future__ import annotations

import argparse
import re
import signal
import sys
from datetime import UTC, datetime

import anyio
import anyio.abc

from ..actions.destinations import NAME_PATTERN
from ..actions.forward import post_signed
from ..actions.poster import Poster
from ..errors import ConfigError, InvalidArgument
from ..events import EventFilter, check_patterns
from ..inbox import Inbox, open_inbox
from ..settings import generate_secret, parse_secrets
from ..stores import EventQuery, StoredEvent
from .common import ACTOR, Commands, add_command, settings_of, with_inbox

POSITION_KEY = "forward --to {url}"  # in the `state` table: the seq of the last event handled for this URL
PAGE = 100
TIMEOUT_SECONDS = 10.0
RETRY_SECONDS = (0.5, 1, 2, 5)  # while the handler does not answer (restarting, say); then every 5 s
IDLE_POLL_SECONDS = 1.0


def add_replay(events: Commands) -> None:
    replay = add_command(events, "replay", run_replay, "forward events again to a [[forward]] destination")
    replay.add_argument("event_ids", nargs="*", metavar="ID")
    replay.add_argument("--to", required=True, metavar="NAME", help="a [[forward]] destination")
    replay.add_argument("--since", metavar="DATE", help="every event Stripe created from this date (ISO 8601, UTC)")
    replay.add_argument("--until", metavar="DATE", help="with --since: up to this date, not included")
    replay.add_argument("--type", help="with --since: only this event type")


def add_forward(commands: Commands) -> None:
    forward = add_command(
        commands,
        "forward",
        run_forward,
        "forward each event as it is stored to a local handler (like stripe listen --forward-to)",
    )
    forward.add_argument("--to", metavar="URL", help="the handler, e.g. http://localhost:4242/webhook")
    forward.add_argument("--secret", metavar="whsec_…", help="sign with this (default: the inbox's webhook secret)")
    forward.add_argument("--events", nargs="+", metavar="T", help="only these event types or patterns (default *)")
    actions = forward.add_subparsers(dest="forward_command", metavar="ACTION")
    secret = add_command(actions, "secret", run_secret, "print a new whsec_ secret for a [[forward]] destination")
    secret.add_argument("name", metavar="NAME")


# -- events replay -------------------------------------------------------------------------------


def run_replay(args: argparse.Namespace) -> None:
    if bool(args.event_ids) == bool(args.since):
        raise InvalidArgument("name the events to replay (IDs) or a range (--since DATE), not both")
    if args.event_ids and (args.until or args.type):
        raise InvalidArgument("--until and --type go with --since")

    def progress(done: int, total: int) -> None:
        print(f"replayed {done}/{total}", file=sys.stderr, flush=True)

    async def work(inbox: Inbox) -> None:
        if args.event_ids:
            made = await inbox.replay(args.event_ids, args.to, ACTOR)
            for forward in made:
                print(f"{args.to}: forward #{forward.id} queued")
            count = len(made)
        else:
            since, until = moment(args.since), None if args.until is None else moment(args.until)
            count = await inbox.replay_created(args.to, since, until, args.type, ACTOR, progress)
        print(f"{count} event{'s' if count != 1 else ''} queued for {args.to}; a running `serve` sends them")

    with_inbox(args, work)


def moment(text: str) -> int:
    """Unix seconds of an ISO 8601 date or date-time; UTC when it names no offset."""
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidArgument(f"{text!r} is not a date: use YYYY-MM-DD or an ISO 8601 date-time") from None
    return int((parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp())


# -- forward secret ------------------------------------------------------------------------------


def run_secret(args: argparse.Namespace) -> None:
    if not re.fullmatch(NAME_PATTERN, args.name):
        raise InvalidArgument(f"{args.name!r} is not a destination name: use lower-case letters, digits, '-' and '_'")
    variable = "STRIPE_FORWARD_" + re.sub(r"[^A-Z0-9]", "_", args.name.upper()) + "_SECRET"
    print(generate_secret())
    print(
        f"Give it to the handler as its webhook signing secret, and to stripe-inbox in {variable}:\n\n"
        f'  [[forward]]\n  name = "{args.name}"\n  url = "http://localhost:4242/webhook"\n'
        f'  secret_env = "{variable}"',
        file=sys.stderr,
    )


# -- forward --to --------------------------------------------------------------------------------


def run_forward(args: argparse.Namespace) -> None:
    if args.to is None:
        raise InvalidArgument("forward needs --to URL (or: forward secret NAME)")
    if not args.to.startswith(("http://", "https://")):
        raise InvalidArgument(f"--to {args.to!r} is not an http(s) URL")
    settings = settings_of(args)
    if args.secret is not None:
        try:
            secrets = parse_secrets(args.secret)
        except ValueError as error:
            raise ConfigError(f"--secret: {error}") from None
        which = "the --secret given"
    elif settings.webhook_secrets:
        secrets, which = settings.webhook_secrets[:1], "the inbox's own webhook secret, as Stripe would"
    else:
        raise ConfigError("no secret to sign with: pass --secret whsec_… (`stripe-inbox forward secret dev` makes one)")
    try:
        patterns = check_patterns(args.events or ["*"])
    except ValueError as error:
        raise ConfigError(f"--events: {error}") from None

    async def run() -> None:
        async with open_inbox(settings) as inbox:
            await Follower(inbox, args.to, secrets, EventFilter(patterns)).run(which)

    anyio.run(run)


class Follower:
    """Forwards each event stored after its position, in arrival order, and keeps the position in the inbox after
    every event, so a restart neither repeats nor skips one. A handler that does not answer is retried until it
    does; any answer (a 500 too) is the handler's, printed and passed."""

    def __init__(self, inbox: Inbox, url: str, secrets: list[str], accepts: EventFilter) -> None:
        self.inbox = inbox
        self.url = url
        self.secrets = secrets
        self.accepts = accepts
        self.key = POSITION_KEY.format(url=url)
        self.forwarded = 0
        self._changed = anyio.Event()

    async def run(self, which: str) -> None:
        store = self.inbox.store
        stored = await store.get_state(self.key)
        if stored is None:
            newest = await store.list_events(EventQuery(status=None, limit=1, newest_first=True))
            position = newest[0].seq if newest else 0
            await store.set_state(self.key, str(position))
            start = "events stored from now on"
        else:
            position = int(stored)
            start = f"from where it stopped (after event #{position})"
        _say(f"Ready! Forwarding {start} to {self.url}, signed with {which} (^C to quit)")
        async with anyio.create_task_group() as group:
            group.start_soon(self._stop_on_signal, group.cancel_scope)
            await self._follow(position)

    async def _follow(self, position: int) -> None:
        poster = Poster(self.url)
        async with anyio.create_task_group() as group:
            group.start_soon(self._watch)
            try:
                while True:
                    position = await self._forward_after(position, poster)
            finally:
                poster.close()

    async def _watch(self) -> None:
        async for _ in self.inbox.store.watch_changes():
            self._changed.set()

    async def _forward_after(self, position: int, poster: Poster) -> int:
        """Forward a page of the events stored after `position`, or wait for some; returns the new position."""
        store = self.inbox.store
        waiting = self._changed = anyio.Event()  # made before the read: a commit after it wakes us
        events = await store.list_events(EventQuery(status=None, limit=PAGE, after=position))
        if not events:
            with anyio.move_on_after(IDLE_POLL_SECONDS):
                await waiting.wait()
            return position
        for event in events:
            if self.accepts.accepts(event.type):
                await self._deliver(poster, event)
        with anyio.CancelScope(shield=True):  # past the last one, forwarded or not
            await store.set_state(self.key, str(events[-1].seq))
        return events[-1].seq

    async def _deliver(self, poster: Poster, event: StoredEvent) -> None:
        """POST until the handler answers; the answer and the new position are kept together (Ctrl-C waits for
        both), the waits between attempts are not."""
        attempt = 0
        while True:
            with anyio.CancelScope(shield=True):
                answer = await post_signed(poster, event.payload, self.secrets, TIMEOUT_SECONDS)
                at = f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S}"
                line = f"{at}  <-- [{answer.status_code or '---'}] POST {self.url} {event.type} [{event.id}]"
                if answer.status_code is not None:
                    await self.inbox.store.set_state(self.key, str(event.seq))
                    self.forwarded += 1
                    _say(f"{line} {answer.latency_ms:.1f} ms")
                    return
            wait = RETRY_SECONDS[min(attempt, len(RETRY_SECONDS) - 1)]
            _say(f"{line} {answer.error}; retrying in {wait:g} s")
            attempt += 1
            await anyio.sleep(wait)

    async def _stop_on_signal(self, scope: anyio.CancelScope) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                _say(f"stopping: {self.forwarded} forwarded; `forward --to {self.url}` goes on from here")
                scope.cancel()
                return


def _say(line: str) -> None:
    print(line, flush=True)
