"""`events list | show | ack | prune | timeline`: the inbox from a terminal."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Literal, get_args, get_origin

from ..errors import StoreUnavailable
from ..filters import FILTERS, SEARCH, SELECTION, Filter
from ..inbox import Inbox
from ..models import OUTCOMES, DeliveryState, EventDetail
from ..presenter import resolution_note
from .common import ACTOR, Commands, add_command, add_group, positive, print_table, with_inbox


def add_events(commands: Commands) -> Commands:
    """The `events` actions; returns them, so that other areas can add theirs (`events replay`)."""
    events = add_group(commands, "events", "list, show, ack and prune events")
    _add_list(events)
    show = add_command(events, "show", run_show, "show one event with its state and audit trail")
    show.add_argument("event_id", metavar="ID")
    show.add_argument("--json", action="store_true")
    ack = add_command(events, "ack", run_ack, "acknowledge an event")
    ack.add_argument("event_id", metavar="ID")
    ack.add_argument("--outcome", choices=OUTCOMES, default="handled")
    ack.add_argument("--note")
    prune = add_command(events, "prune", run_prune, "delete acked events older than some days")
    prune.add_argument("--acked-older-than", type=float, required=True, metavar="DAYS")
    timeline = add_command(events, "timeline", run_timeline, "every event about a Stripe object, oldest first")
    timeline.add_argument("object_id", metavar="ID", help="in_…, pi_…, ch_…, sub_…, du_…, cs_…")
    timeline.add_argument("--json", action="store_true")
    return events


def _add_list(events: Commands) -> None:
    listing = add_command(events, "list", run_list, "list events")
    _add_flags(listing, SELECTION)
    listing.add_argument("--json", action="store_true", help="print the page as JSON")
    _add_flags(listing, SEARCH)


def _add_flags(listing: argparse.ArgumentParser, filters: tuple[Filter, ...]) -> None:
    for each in filters:
        if each.flag is not None:
            name = each.flag.flag or "--" + each.name.replace("_", "-")
            reading = _reading(each.type)
            listing.add_argument(
                name, dest=each.name, default=each.default, metavar=each.flag.metavar, help=each.flag.help, **reading
            )


def _reading(kind: Any) -> dict[str, Any]:
    """How argparse reads a flag whose filter takes `kind`."""
    if get_origin(kind) is Literal:
        return {"choices": get_args(kind)}
    if bool in get_args(kind):  # the flag alone means true
        return {"nargs": "?", "const": "true", "choices": ["true", "false"]}
    if kind is int:
        return {"type": positive}
    if float in get_args(kind):
        return {"type": float}
    return {}


def _given(each: Filter, value: Any) -> Any:
    """A flag's value as its filter takes it."""
    if value is not None and bool in get_args(each.type):
        return value == "true"
    return value


def run_list(args: argparse.Namespace) -> None:
    async def work(inbox: Inbox) -> None:
        await _index_what_no_one_indexes(inbox)
        given = {each.name: _given(each, getattr(args, each.name)) for each in FILTERS if each.flag is not None}
        page = await inbox.list_events(**given)
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
        print_table(("ID", "TYPE", "STATUS", "RECEIVED (UTC)", "AMOUNT", "CUSTOMER"), rows)
        print(f"{len(page.events)} of {page.total}{'' if page.total_exact else '+'} {which}events")

    with_inbox(args, work)


def run_show(args: argparse.Namespace) -> None:
    async def work(inbox: Inbox) -> None:
        detail = await inbox.get_event(args.event_id)
        if args.json:
            print(detail.model_dump_json(indent=2))
            return
        _print_detail(detail)

    with_inbox(args, work)


def _print_detail(detail: EventDetail) -> None:
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


def _delivery(state: DeliveryState) -> str:
    attempts = f"{state.attempts} attempt{'s' if state.attempts != 1 else ''}"
    return f"{state.status} after {attempts}" + (f": {state.reason}" if state.reason else "")


def run_ack(args: argparse.Namespace) -> None:
    async def work(inbox: Inbox) -> None:
        result = await inbox.ack(args.event_id, args.outcome, args.note, ACTOR)
        print(f"{result.event_id} {'was already' if result.already_acked else 'is now'} acked ({result.outcome})")

    with_inbox(args, work)


def run_prune(args: argparse.Namespace) -> None:
    async def work(inbox: Inbox) -> None:
        deleted = await inbox.prune(args.acked_older_than)
        print(f"deleted {deleted} acked events older than {args.acked_older_than:g} days")

    with_inbox(args, work)


def run_timeline(args: argparse.Namespace) -> None:
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
            (f"{e.created:%Y-%m-%d %H:%M:%S}", e.id, e.type, e.status, e.amount or "", resolution_note(e))
            for e in timeline.events
        ]
        print_table(("CREATED (UTC)", "ID", "TYPE", "STATUS", "AMOUNT", "NOTE"), rows)
        more = " (the first 1000)" if timeline.truncated else ""
        print(f"{len(timeline.events)} events about {timeline.object_id}{more}")

    with_inbox(args, work)


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
