"""The `stripe-inbox` command line."""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib.util
import json
import logging
import shlex
import socket
import sys
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from logging.handlers import QueueHandler, QueueListener
from pathlib import Path
from queue import Empty, SimpleQueue
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio
import httpx

from . import __version__
from .errors import ConfigError, InboxError, InvalidArgument, StoreUnavailable
from .inbox import Inbox, open_inbox
from .models import OUTCOMES, PRIORITIES, Approval, DeliveryState, EventSummary
from .settings import LOOPBACK_HOSTS, HttpLimits, Settings, generate_secret, load_settings, store_secret
from .stores import is_postgres_url
from .stripe.samples import SAMPLES, sample_event
from .stripe.signature import sign

if TYPE_CHECKING:
    import uvicorn
    from starlette.types import ASGIApp

ACTOR = "cli"
LOG_POLL_SECONDS = 0.05
SERVER_NAME = "stripe-inbox"
CLIENTS = ("claude-desktop", "claude-code", "vscode", "cursor")
DEFAULT_MCP_URL = "http://127.0.0.1:8000/mcp"
TOKEN_VARIABLE = "STRIPE_INBOX_MCP_TOKEN"
VSCODE_TOKEN_INPUT = "stripe-inbox-token"
# How each client's config file names a value it fills in when it connects, so the token stays out of the file.
TOKEN_REFERENCES = {
    "claude-code": f"${{{TOKEN_VARIABLE}}}",
    "cursor": f"${{env:{TOKEN_VARIABLE}}}",
    "vscode": f"${{input:{VSCODE_TOKEN_INPUT}}}",
}


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        args.run(args)
    except ConfigError as error:
        sys.exit(f"stripe-inbox: configuration error: {error}")
    except InvalidArgument as error:  # a usage error, as argparse's own are
        print(f"stripe-inbox: {error}", file=sys.stderr)
        sys.exit(2)
    except InboxError as error:
        sys.exit(f"stripe-inbox: {error}")
    except KeyboardInterrupt:
        sys.exit(130)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stripe-inbox", description="Stripe webhooks as an inbox for AI agents")
    parser.add_argument("--version", action="version", version=f"stripe-inbox {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, run: Callable[[argparse.Namespace], None], help: str, parent: Any = commands
    ) -> argparse.ArgumentParser:
        sub = parent.add_parser(name, help=help, description=help)
        sub.add_argument(
            "--db", help="SQLite path or postgresql:// URL (default ./stripe-inbox.db; env STRIPE_INBOX_DB)"
        )
        sub.add_argument("--config", help="TOML settings file (default ./stripe-inbox.toml if present)")
        sub.set_defaults(run=run)
        return sub

    serve = command("serve", _serve, "run the webhook ingress and MCP over HTTP at /mcp")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000, help="0 picks a free port")

    mcp = command("mcp", _mcp, "serve MCP over stdio (for Claude Desktop)")
    mcp.add_argument(
        "--channel",
        action="store_true",
        help="push new events into a Claude Code session (experimental capability claude/channel)",
    )
    mcp.add_argument("--channel-events", nargs="+", metavar="T", help="only these event type patterns (default *)")
    mcp.add_argument("--channel-min-priority", choices=PRIORITIES, help="only events of this priority or higher")

    trigger = command("trigger", _trigger, "sign a realistic sample event and post it to the ingress")
    trigger.add_argument("event_type", metavar="EVENT_TYPE", help=f"one of: {', '.join(SAMPLES)}")
    trigger.add_argument("--url", default="http://127.0.0.1:8000/webhooks/stripe")
    trigger.add_argument("--secret", help="signing secret (default: the configured or generated one)")
    trigger.add_argument("--count", type=_positive, default=1)

    events = commands.add_parser("events", help="list, show, ack and prune events").add_subparsers(
        dest="events_command", required=True, metavar="ACTION"
    )
    listing = command("list", _events_list, "list events", events)
    listing.add_argument("--status", choices=["pending", "acked", "all"], default="pending")
    listing.add_argument("--type")
    listing.add_argument("--customer")
    listing.add_argument("--account", help="a Connect account, acct_…")
    listing.add_argument("--limit", type=_positive, default=20)
    listing.add_argument("--json", action="store_true", help="print the page as JSON")
    listing.add_argument("--query", help="full text: ids (or their ends), e-mails, names, descriptions, messages")
    listing.add_argument("--object", metavar="ID", help="any Stripe id the event is about: in_…, pi_…, ch_…, sub_…")
    listing.add_argument("--email")
    listing.add_argument("--amount-gte", type=float, metavar="AMOUNT", help="in major units, e.g. 500")
    listing.add_argument("--amount-lte", type=float, metavar="AMOUNT")
    listing.add_argument("--currency", help="e.g. usd (needed with an amount when the events hold several)")
    listing.add_argument("--created-after", metavar="WHEN", help="ISO 8601 date or date-time (UTC if no offset)")
    listing.add_argument("--created-before", metavar="WHEN")
    listing.add_argument(
        "--livemode", nargs="?", const="true", choices=["true", "false"], help="live events only, or test (false)"
    )
    show = command("show", _events_show, "show one event with its state and audit trail", events)
    show.add_argument("event_id", metavar="ID")
    show.add_argument("--json", action="store_true")
    ack = command("ack", _events_ack, "acknowledge an event", events)
    ack.add_argument("event_id", metavar="ID")
    ack.add_argument("--outcome", choices=OUTCOMES, default="handled")
    ack.add_argument("--note")
    prune = command("prune", _events_prune, "delete acked events older than some days", events)
    prune.add_argument("--acked-older-than", type=float, required=True, metavar="DAYS")
    timeline = command("timeline", _events_timeline, "every event about a Stripe object, oldest first", events)
    timeline.add_argument("object_id", metavar="ID", help="in_…, pi_…, ch_…, sub_…, du_…, cs_…")
    timeline.add_argument("--json", action="store_true")

    replay = command("replay", _events_replay, "forward events again to a [[forward]] destination", events)
    replay.add_argument("event_ids", nargs="*", metavar="ID")
    replay.add_argument("--to", required=True, metavar="NAME", help="a [[forward]] destination")
    replay.add_argument("--since", metavar="DATE", help="every event Stripe created from this date (ISO 8601, UTC)")
    replay.add_argument("--until", metavar="DATE", help="with --since: up to this date, not included")
    replay.add_argument("--type", help="with --since: only this event type")

    register = command("register", _register, "create this inbox's webhook endpoint on Stripe, keep its secret")
    register.add_argument(
        "--url", required=True, metavar="PUBLIC_URL", help="e.g. https://inbox.example.com/webhooks/stripe"
    )
    register.add_argument("--events", nargs="+", metavar="T", help="event types (default: the configured filter)")
    register.add_argument("--force", action="store_true", help="create it even if this URL already has an endpoint")
    register.add_argument("--dry-run", action="store_true", help="show the request and send nothing")

    backfill = command("backfill", _backfill, "fetch events the inbox missed from Stripe's Events API")
    since = backfill.add_mutually_exclusive_group()
    since.add_argument("--since", metavar="DATE", help="YYYY-MM-DD (default: where the last backfill ended)")
    since.add_argument("--days", type=float, metavar="N", help="look back N days (at most 30)")
    backfill.add_argument("--undelivered-only", action="store_true", help="only events Stripe could not deliver")
    backfill.add_argument("--json", action="store_true", help="print the result as JSON")

    config = command("claude-config", _claude_config, "print an MCP client's entry for this inbox")
    config.add_argument("--client", choices=CLIENTS, default="claude-desktop", help="default: claude-desktop")
    config.add_argument(
        "--transport",
        choices=["stdio", "http"],
        help="stdio starts `stripe-inbox mcp`; http connects to `serve` (default: stdio for claude-desktop, "
        "http for the others)",
    )
    config.add_argument("--url", default=DEFAULT_MCP_URL, help=f"serve's MCP endpoint (default {DEFAULT_MCP_URL})")

    approvals = commands.add_parser(
        "approvals", help="notifications and tickets waiting for a person to approve them"
    ).add_subparsers(dest="approvals_command", required=True, metavar="ACTION")
    waiting = command("list", _approvals_list, "list what waits for approval, oldest first", approvals)
    waiting.add_argument("--json", action="store_true")
    approve = command("approve", _approvals_approve, "approve it: it is sent at once", approvals)
    approve.add_argument("approval_id", metavar="ID", type=int)
    reject = command("reject", _approvals_reject, "reject it: it is never sent", approvals)
    reject.add_argument("approval_id", metavar="ID", type=int)

    tokens = commands.add_parser("tokens", help="the OAuth tokens issued to MCP clients").add_subparsers(
        dest="tokens_command", required=True, metavar="ACTION"
    )
    tokens_list = command("list", _tokens_list, "list the OAuth tokens still usable", tokens)
    tokens_list.add_argument("--all", action="store_true", help="also expired, rotated and revoked ones")
    tokens_list.add_argument("--json", action="store_true")
    revoke = command("revoke", _tokens_revoke, "revoke a token and the rest of its client's grant", tokens)
    revoke.add_argument("token_id", metavar="ID", help="tok_… as `tokens list` shows it")

    forward = command(
        "forward",
        _forward_to,
        "forward each event as it is stored to a local handler (like stripe listen --forward-to)",
    )
    forward.add_argument("--to", metavar="URL", help="the handler, e.g. http://localhost:4242/webhook")
    forward.add_argument("--secret", metavar="whsec_…", help="sign with this (default: the inbox's webhook secret)")
    forward.add_argument("--events", nargs="+", metavar="T", help="only these event types or patterns (default *)")
    forward_secret = forward.add_subparsers(dest="forward_command", metavar="ACTION")
    secret = command(
        "secret", _forward_secret, "print a new whsec_ secret for a [[forward]] destination", forward_secret
    )
    secret.add_argument("name", metavar="NAME")
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.config, db=args.db)


def _with_inbox(args: argparse.Namespace, work: Callable[[Inbox], Coroutine[Any, Any, None]]) -> None:
    async def run() -> None:
        async with open_inbox(_settings(args)) as inbox:
            await work(inbox)

    anyio.run(run)


# -- serve / mcp ---------------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> None:
    settings = _settings(args)
    if args.host not in LOOPBACK_HOSTS and not settings.mcp_token:
        raise ConfigError(
            f"--host {args.host} would expose /mcp and the dashboard beyond this machine; set STRIPE_INBOX_TOKEN "
            "(or its older name STRIPE_INBOX_MCP_TOKEN) so MCP clients must present a bearer token and people sign in"
        )
    if not settings.webhook_secrets and is_postgres_url(settings.db):
        raise ConfigError(
            "with a PostgreSQL inbox, every replica must check signatures with the same secret: set "
            "STRIPE_WEBHOOK_SECRET (the endpoint's whsec_… from `stripe-inbox register` or the Dashboard)"
        )
    if not settings.webhook_secrets:
        secret = generate_secret()
        store_secret(settings.secret_file, secret)
        print(
            f"No STRIPE_WEBHOOK_SECRET set: generated one and stored it in {settings.secret_file} (mode 0600).\n"
            f"  {secret}\n`stripe-inbox trigger` signs with it. It is shown only this once.",
            file=sys.stderr,
        )
    sock = _listen(args.host, args.port)
    import uvicorn

    from .mcp.server import create_mcp_server
    from .metrics import Metrics
    from .upkeep import Upkeep
    from .web.app import create_app

    # Log lines are formatted and written by a thread of their own: a delivery's line costs the event loop
    # only its record. The module-level switches are logging's documented ways to make a record cheaper.
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root = logging.getLogger()
    listener = PollingListener(queue := SimpleQueue(), *root.handlers)  # type: ignore[var-annotated]
    root.handlers = [HandOffHandler(queue)]
    listener.start()

    async def run() -> None:
        async with open_inbox(settings) as inbox:
            inbox.indexer.in_worker_process = True
            metrics = Metrics()
            app = create_app(inbox, create_mcp_server(inbox, metrics), metrics)
            server = uvicorn.Server(_uvicorn_config(app, settings.http))
            host, port = sock.getsockname()[:2]
            url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
            # Everything built so far lives as long as the process: freezing it keeps the collector's full
            # passes from walking it, which otherwise stalls every in-flight delivery for a few hundred ms.
            gc.collect()
            gc.freeze()
            print(
                f"stripe-inbox listening on {url}  (webhooks: {url}/webhooks/stripe  MCP: {url}/mcp  "
                f"dashboard: {url}/ui/)",
                file=sys.stderr,
                flush=True,
            )
            async with anyio.create_task_group() as group:
                group.start_soon(inbox.loops.supervise, "upkeep", Upkeep(inbox).run)
                await server.serve(sockets=[sock])
                group.cancel_scope.cancel()

    try:
        anyio.run(run, backend_options={"use_uvloop": _has_uvloop()})
    finally:
        listener.stop()


def _uvicorn_config(app: ASGIApp, limits: HttpLimits) -> uvicorn.Config:
    """uvicorn as `serve` runs it: no access log (the ingress logs each delivery), and bounded connections."""
    import uvicorn

    from .web.http_limits import head_limited

    return uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        http=head_limited(limits),
        timeout_keep_alive=limits.keep_alive_seconds,  # type: ignore[arg-type]  # a float works as well
        limit_concurrency=limits.max_connections,
    )


class PollingListener(QueueListener):
    """Looks for records every LOG_POLL_SECONDS instead of being woken by each one: a wake-up per
    delivery costs the event loop a thread switch and a fight for the GIL."""

    def dequeue(self, block: bool) -> logging.LogRecord:
        while True:
            try:
                return self.queue.get_nowait()  # type: ignore[no-any-return]
            except Empty:
                time.sleep(LOG_POLL_SECONDS)


class HandOffHandler(QueueHandler):
    """Queues the record as it is; the listener thread formats it (QueueHandler would format it here)."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


def _has_uvloop() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and without it
    # Nagle's algorithm holds each response ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        raise ConfigError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    sock.listen(2048)
    return sock


def _mcp(args: argparse.Namespace) -> None:
    from .mcp.server import serve_stdio

    settings = _settings(args)
    chosen = {"events": args.channel_events, "min_priority": args.channel_min_priority}
    try:
        push = settings.push.model_validate({**settings.push.model_dump(), **{k: v for k, v in chosen.items() if v}})
    except ValueError as error:
        raise ConfigError(f"--channel-events: {error}") from None
    settings = settings.model_copy(update={"push": push})

    async def run() -> None:
        async with open_inbox(settings) as inbox:
            inbox.indexer.in_worker_process = True
            await serve_stdio(inbox, channel=args.channel)

    anyio.run(run)


# -- trigger -------------------------------------------------------------------------------------


def _trigger(args: argparse.Namespace) -> None:
    if args.event_type not in SAMPLES:
        raise ConfigError(f"no sample for {args.event_type!r}; samples exist for: {', '.join(SAMPLES)}")
    secret = args.secret or next(iter(_settings(args).webhook_secrets), None)
    if secret is None:
        raise ConfigError(
            "no webhook secret to sign with: run `stripe-inbox serve` once (it generates one), "
            "set STRIPE_WEBHOOK_SECRET, or pass --secret"
        )
    failures = 0
    with httpx.Client(timeout=10) as client:
        for number in range(1, args.count + 1):
            payload = sample_event(args.event_type)
            event_id = json.loads(payload)["id"]
            try:
                response = client.post(
                    args.url,
                    content=payload,
                    headers={"Stripe-Signature": sign(payload, secret), "Content-Type": "application/json"},
                )
            except httpx.HTTPError as error:
                raise InboxError(f"cannot post to {args.url}: {error} (is `stripe-inbox serve` running?)") from None
            outcome = response.json() if response.headers.get("content-type") == "application/json" else {}
            failures += response.status_code != 200
            if args.count == 1 or response.status_code != 200:
                detail = outcome.get("message") or next(
                    (result for result in ("duplicate", "filtered") if outcome.get(result)), "stored"
                )
                print(f"{event_id} {args.event_type} -> {response.status_code} {detail}")
            elif number % max(1, args.count // 10) == 0 or number == args.count:
                print(f"sent {number}/{args.count}", file=sys.stderr)
    if failures:
        raise InboxError(f"{failures} of {args.count} deliveries were not accepted")


# -- events --------------------------------------------------------------------------------------


def _events_list(args: argparse.Namespace) -> None:
    async def work(inbox: Inbox) -> None:
        await _index_what_no_one_indexes(inbox)
        page = await inbox.list_events(
            args.status,
            args.type,
            args.customer,
            args.account,
            args.limit,
            query=args.query,
            object_id=args.object,
            email=args.email,
            amount_gte=args.amount_gte,
            amount_lte=args.amount_lte,
            currency=args.currency,
            created_after=args.created_after,
            created_before=args.created_before,
            livemode=None if args.livemode is None else args.livemode == "true",
        )
        _unindexed_note(page.unindexed)
        if args.json:
            print(page.model_dump_json(indent=2))
            return
        which = "" if args.status == "all" else f"{args.status} "
        if not page.events:
            print(f"no {which}events")
            return
        rows = [
            (e.id, e.type, e.status, f"{e.received_at:%Y-%m-%d %H:%M:%S}", e.amount or "", e.customer or "")
            for e in page.events
        ]
        _table(("ID", "TYPE", "STATUS", "RECEIVED (UTC)", "AMOUNT", "CUSTOMER"), rows)
        print(f"{len(page.events)} of {page.total}{'' if page.total_exact else '+'} {which}events")

    _with_inbox(args, work)


def _events_show(args: argparse.Namespace) -> None:
    async def work(inbox: Inbox) -> None:
        detail = await inbox.get_event(args.event_id)
        if args.json:
            print(detail.model_dump_json(indent=2))
            return
        state = detail.state
        print(
            f"{detail.id}  {detail.type}\nstatus: {state.status}"
            + (f" ({state.outcome}{': ' + state.note if state.note else ''})" if state.outcome else "")
        )
        print(f"received: {state.received_at:%Y-%m-%d %H:%M:%S} UTC, deliveries: {state.deliveries}")
        if detail.classification:
            c = detail.classification
            print(f"classification: {c.category}, {c.priority}: {c.summary}")
        for ticket in detail.tickets:
            forwarded = ""
            if ticket.delivery is not None:
                where = ticket.tracker_url or ticket.tracker_id or ticket.tracker
                forwarded = f" -> {where} ({_delivery(ticket.delivery)})"
            print(f"ticket #{ticket.id} [{ticket.priority}] {ticket.title}{forwarded}")
        for note in detail.notifications:
            to = f" to {note.recipient}" if note.recipient else ""
            print(f"notification #{note.id} via {note.channel}{to}: {note.message!r} ({_delivery(note.delivery)})")
        for forward in detail.forwards:
            answer = f"last answer {forward.status_code}" if forward.status_code is not None else "no answer yet"
            if forward.latency_ms is not None:
                answer += f" in {forward.latency_ms:.1f} ms"
            print(
                f"forward #{forward.id} to {forward.destination}{' (replay)' if forward.replay else ''}: "
                f"{forward.status} after {forward.attempts} attempt{'s' if forward.attempts != 1 else ''}, {answer}"
                + (f": {forward.error}" if forward.error else "")
            )
        for entry in detail.audit:
            print(f"audit {entry.at:%Y-%m-%d %H:%M:%S} {entry.actor} {entry.action} {json.dumps(entry.result)}")
        print(json.dumps(detail.event, indent=2))

    _with_inbox(args, work)


def _events_ack(args: argparse.Namespace) -> None:
    async def work(inbox: Inbox) -> None:
        result = await inbox.ack(args.event_id, args.outcome, args.note, ACTOR)
        print(f"{result.event_id} {'was already' if result.already_acked else 'is now'} acked ({result.outcome})")

    _with_inbox(args, work)


def _events_prune(args: argparse.Namespace) -> None:
    async def work(inbox: Inbox) -> None:
        deleted = await inbox.prune(args.acked_older_than)
        print(f"deleted {deleted} acked events older than {args.acked_older_than:g} days")

    _with_inbox(args, work)


def _events_timeline(args: argparse.Namespace) -> None:
    async def work(inbox: Inbox) -> None:
        await _index_what_no_one_indexes(inbox)
        timeline = await inbox.timeline(args.object_id)
        _unindexed_note(timeline.unindexed)
        if args.json:
            print(timeline.model_dump_json(indent=2))
            return
        if not timeline.events:
            print(f"no events about {timeline.object_id}")
            return
        rows = [
            (f"{e.created:%Y-%m-%d %H:%M:%S}", e.id, e.type, e.status, e.amount or "", _resolution_note(e))
            for e in timeline.events
        ]
        _table(("CREATED (UTC)", "ID", "TYPE", "STATUS", "AMOUNT", "NOTE"), rows)
        more = " (the first 1000)" if timeline.truncated else ""
        print(f"{len(timeline.events)} events about {timeline.object_id}{more}")

    _with_inbox(args, work)


async def _index_what_no_one_indexes(inbox: Inbox) -> None:
    """Whether or not a `serve` runs, a search here sees every event: a backlog no indexer got to in its longest
    lag (none runs, or an upgrade) is indexed here first. A younger one belongs to a `serve` that gives way to
    a busy ingress: the read indexes it only when it is small, else says how many events it lacks."""
    try:
        await inbox.indexer.once(busy=True)
    except StoreUnavailable as error:  # another indexer holds those events: it is indexing them now
        print(f"note: the search index is being written elsewhere ({error})", file=sys.stderr)


def _unindexed_note(unindexed: int) -> None:
    if unindexed:
        print(
            f"note: {unindexed} newest events are not in the search index yet and may be missing here", file=sys.stderr
        )


def _resolution_note(summary: EventSummary) -> str:
    notes = [f"resolved by {summary.superseded_by}"] if summary.superseded_by else []
    return ", ".join(notes + (["arrived late"] if summary.stale else []))


def _events_replay(args: argparse.Namespace) -> None:
    from .cli_forward import events_replay

    events_replay(args)


def _forward_to(args: argparse.Namespace) -> None:
    from .cli_forward import forward_to

    forward_to(args)


def _forward_secret(args: argparse.Namespace) -> None:
    from .cli_forward import forward_secret

    forward_secret(args)


def _delivery(state: DeliveryState) -> str:
    attempts = f"{state.attempts} attempt{'s' if state.attempts != 1 else ''}"
    return f"{state.status} after {attempts}" + (f": {state.reason}" if state.reason else "")


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=False)]
    for row in (header, *rows):
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


# -- Stripe-side ----------------------------------------------------------------------------------


def _register(args: argparse.Namespace) -> None:
    from .stripe.register import register

    settings = _settings(args)
    done = anyio.run(lambda: register(settings, args.url, args.events, args.force, args.dry_run))
    for note in done.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.dry_run:
        print(f"dry run: would send\n{done.request}")
        return
    print(f"created webhook endpoint {done.endpoint_id} for {done.url} ({', '.join(done.enabled_events)})")
    print(f"its signing secret is stored in {done.secret_file} (mode 0600) and accepted from now on")
    print("next: (re)start `stripe-inbox serve`, then send a test event from the Stripe dashboard")


def _backfill(args: argparse.Namespace) -> None:
    from .stripe.api import StripeAPI
    from .stripe.backfill import BackfillResult, backfill, start_of

    def progress(result: BackfillResult) -> None:
        print(
            f"page {result.pages}: {result.new} new, {result.already_present} already present, "
            f"{result.filtered} filtered",
            file=sys.stderr,
            flush=True,
        )

    async def work(inbox: Inbox) -> None:
        api = StripeAPI(inbox.settings.api_key, inbox.settings.api_base)
        result = await backfill(inbox, api, start_of(args.since, args.days), args.undelivered_only, progress)
        if args.json:
            print(result.model_dump_json(indent=2))
            return
        resumed = " (resumed an interrupted run)" if result.resumed else ""
        print(
            f"backfill since {result.since:%Y-%m-%d %H:%M:%S} UTC{resumed}: {result.new} new, "
            f"{result.already_present} already present, {result.filtered} filtered"
        )

    _with_inbox(args, work)


# -- claude-config -------------------------------------------------------------------------------


def _claude_config(args: argparse.Namespace) -> None:
    settings = _settings(args)
    transport = args.transport or ("stdio" if args.client == "claude-desktop" else "http")
    if args.client == "claude-desktop" and transport == "http":
        raise ConfigError("Claude Desktop starts the servers in its config file over stdio: use --transport stdio")
    entry: dict[str, Any]
    if transport == "stdio":
        entry = _stdio_entry(args, settings)
        command_line = f"claude mcp add {SERVER_NAME} -- {shlex.join([entry['command'], *entry['args']])}"
    else:
        entry = {"url": args.url}
        command_line = f"claude mcp add --transport http {SERVER_NAME} {shlex.quote(args.url)}"
        # A /mcp beyond loopback always wants the token, whether or not this machine has it configured.
        if settings.mcp_token or urlsplit(args.url).hostname not in LOOPBACK_HOSTS:
            entry["headers"] = {"Authorization": f"Bearer {TOKEN_REFERENCES[args.client]}"}
            command_line += f' --header "Authorization: Bearer ${TOKEN_VARIABLE}"'
    print(json.dumps(_client_config(args.client, transport, entry), indent=2, ensure_ascii=False))
    if args.client == "claude-code":
        print(f"or run: {command_line}", file=sys.stderr)


def _stdio_entry(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    executable = Path(sys.executable).with_name("stripe-inbox")
    command, prefix = (str(executable), []) if executable.exists() else (sys.executable, ["-m", "stripe_inbox"])
    db = settings.db if is_postgres_url(settings.db) else str(Path(settings.db).expanduser().resolve())
    arguments = [*prefix, "mcp", "--db", db]
    if args.config:
        arguments += ["--config", str(Path(args.config).resolve())]
    return {"command": command, "args": arguments}


def _client_config(client: str, transport: str, entry: dict[str, Any]) -> dict[str, Any]:
    """The entry in the shape each client's config file takes."""
    if client in ("claude-desktop", "cursor"):  # Cursor tells the transports apart by `command` or `url`
        return {"mcpServers": {SERVER_NAME: entry}}
    typed = {"type": transport, **entry}
    if client == "claude-code":
        return {"mcpServers": {SERVER_NAME: typed}}
    config: dict[str, Any] = {"servers": {SERVER_NAME: typed}}
    if "headers" in entry:  # VS Code asks for the token once and keeps it in its secret storage
        config["inputs"] = [
            {
                "type": "promptString",
                "id": VSCODE_TOKEN_INPUT,
                "description": f"stripe-inbox access token ({TOKEN_VARIABLE})",
                "password": True,
            }
        ]
    return config


# -- approvals -----------------------------------------------------------------------------------


def _approvals_list(args: argparse.Namespace) -> None:
    from .approvals import Approvals

    async def work(inbox: Inbox) -> None:
        waiting = await Approvals(inbox).waiting()
        if args.json:
            print(json.dumps([approval.model_dump(mode="json") for approval in waiting], indent=2))
            return
        if not waiting:
            print("nothing awaits approval")
            return
        rows = [(str(a.id), a.kind, a.target, _approval_to(a), a.event_id or "", _approval_what(a)) for a in waiting]
        _table(("ID", "KIND", "VIA", "TO", "EVENT", "WHAT"), rows)
        print(f"{len(waiting)} awaiting approval: stripe-inbox approvals approve ID | reject ID")

    _with_inbox(args, work)


def _approvals_approve(args: argparse.Namespace) -> None:
    from .approvals import Approvals

    async def work(inbox: Inbox) -> None:
        approval = await Approvals(inbox).approve(args.approval_id, ACTOR)
        why = f" ({approval.reason})" if approval.reason else ""
        print(f"approval {approval.id} approved: {approval.status}{why}")

    _with_inbox(args, work)


def _approvals_reject(args: argparse.Namespace) -> None:
    from .approvals import Approvals

    async def work(inbox: Inbox) -> None:
        approval = await Approvals(inbox).reject(args.approval_id, ACTOR)
        print(f"approval {approval.id} rejected: nothing will be sent")

    _with_inbox(args, work)


def _approval_to(approval: Approval) -> str:
    if approval.notification is not None:
        return approval.notification.recipient or approval.target
    return approval.target


def _approval_what(approval: Approval) -> str:
    text = approval.notification.message if approval.notification else approval.ticket.title if approval.ticket else ""
    return text if len(text) <= 60 else text[:59] + "…"


# -- OAuth tokens ---------------------------------------------------------------------------------


def _tokens_list(args: argparse.Namespace) -> None:
    async def work(inbox: Inbox) -> None:
        now = time.time()
        tokens = await inbox.store.oauth_tokens(None if args.all else now)
        if args.json:
            print(json.dumps([dataclasses.asdict(token) for token in tokens], indent=2))
            return
        if not tokens:
            print("no OAuth tokens" if args.all else "no usable OAuth tokens")
            return
        rows = [
            (
                token.id,
                token.kind,
                token.client_name or token.client_id,
                " ".join(token.scopes),
                _when(token.expires_at),
                _when(token.last_used_at) if token.last_used_at else "never",
                token.state(now),
            )
            for token in tokens
        ]
        _table(("ID", "KIND", "CLIENT", "SCOPES", "EXPIRES (UTC)", "LAST USED (UTC)", "STATE"), rows)

    _with_inbox(args, work)


def _tokens_revoke(args: argparse.Namespace) -> None:
    async def work(inbox: Inbox) -> None:
        revoked = await inbox.revoke_token(args.token_id, "cli")
        print(f"revoked {revoked} token{'s' if revoked != 1 else ''} of the grant {args.token_id} belongs to")

    _with_inbox(args, work)


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S")
