"""Server time of each dashboard page over an inbox of a million events: median and p95 per page.

.venv/bin/python bench/dashboard_bench.py [--events 1000000] [--db PATH_OR_URL] [--rounds 200]

The inbox is built once (batches of 500 through the store's own ingest, received over the last 30 days, all but
the newest 2% acked, one event in a hundred from one regular customer) and kept at --db, so later runs reuse it.
Each page is asked in-process over ASGI, one request at a time. "server" is the Server-Timing the dashboard itself
reports (routing, reads, classification of unclassified rows, rendering: wall time, so it grows when other
processes take the CPU); "CPU" is the process's CPU time for the request (both threads: the event loop and
SQLite's), which does not.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from stripe_inbox import load_settings, open_inbox
from stripe_inbox.events import IncomingEvent
from stripe_inbox.inbox import Inbox
from stripe_inbox.stores import Store
from stripe_inbox.stripe.samples import SAMPLES, sample_event
from stripe_inbox.web.app import create_app

BATCH = 500
DAYS = 30
PENDING_SHARE = 0.02
REGULAR = "cus_bench_regular"
ORIGIN = "http://127.0.0.1"
TYPES = list(SAMPLES)


def templates(at: int) -> list[tuple[str, str, str]]:
    """One sample payload per type, with the ids each copy replaces."""
    made = []
    for event_type in TYPES:
        payload = sample_event(event_type, at).decode()
        parsed = json.loads(payload)
        made.append((payload, parsed["id"], parsed["data"]["object"]["id"]))
    return made


def batch_of(count: int, at: int, number: int) -> list[IncomingEvent]:
    """Events with fresh ids (each about its own object) made from the samples: faster than a sample each."""
    events = []
    for payload, event_id, object_id in templates(at):
        events.append((payload, event_id, object_id))
    made = []
    for index in range(number, number + count):
        payload, event_id, object_id = events[index % len(events)]
        text = payload.replace(event_id, f"evt_bench{index:012d}").replace(
            object_id, f"{object_id[:3]}bench{index:012d}"
        )
        if index % 100 == 0:
            text = re.sub(r'"customer": "cus_[0-9a-f]+"', f'"customer": "{REGULAR}"', text)
        made.append(IncomingEvent.parse(text.encode()))
    return made


async def build(store: Store, total: int) -> None:
    (have,) = (await store.db.fetch("SELECT count(*) FROM events"))[0]
    if have >= total:
        print(f"reusing the inbox of {have:,} events", file=sys.stderr)
        return
    started = time.perf_counter()
    start = time.time() - DAYS * 86400
    step = DAYS * 86400 / total
    for first in range(have, total, BATCH):
        at = start + first * step
        await store.add_events(batch_of(min(BATCH, total - first), int(at), first), at)
        if first % 50_000 == 0:
            print(f"  {first:,} events, {time.perf_counter() - started:.0f} s", file=sys.stderr)
    async with store.db.transaction() as tx:
        await tx.execute(
            "UPDATE events SET status = 'acked', outcome = 'handled', acked_at = received_at + 60 WHERE seq <= ?",
            int(total * (1 - PENDING_SHARE)),
        )
    print(f"built {total:,} events in {time.perf_counter() - started:.0f} s", file=sys.stderr)


def server_ms(response: httpx.Response) -> float:
    found = re.search(r"app;dur=([0-9.]+)", response.headers.get("server-timing", ""))
    assert found, f"{response.request.url}: {response.status_code} without Server-Timing"
    return float(found.group(1))


@dataclass
class Timings:
    server: list[float] = field(default_factory=list)  # Server-Timing: wall time inside the dashboard
    cpu: list[float] = field(default_factory=list)  # the process's CPU time for the whole request


async def measure(rounds: int, ask: Callable[[int], Awaitable[httpx.Response]], expect: int = 200) -> Timings:
    timings = Timings()
    for number in range(rounds + 5):
        cpu = time.process_time()
        response = await ask(number)
        cpu = (time.process_time() - cpu) * 1000
        assert response.status_code == expect, f"{response.request.url}: {response.status_code}"
        if number >= 5:  # the first few fill caches and compile templates
            timings.server.append(server_ms(response))
            timings.cpu.append(cpu)
    return timings


async def run(inbox: Inbox, rounds: int) -> list[tuple[str, Timings]]:
    store = inbox.store
    (top,) = (await store.db.fetch("SELECT max(seq) FROM events"))[0]
    sample = random.Random(7)
    seqs = [sample.randint(1, top) for _ in range(rounds + 5)]
    ids = {
        row[0]: row[1]
        for row in await store.db.fetch("SELECT seq, id FROM events WHERE seq IN (" + ",".join(map(str, seqs)) + ")")
    }
    pending = [
        row[0]
        for row in await store.db.fetch(
            "SELECT id FROM events WHERE status = 'pending' ORDER BY seq LIMIT ?", rounds + 5
        )
    ]
    transport = httpx.ASGITransport(app=create_app(inbox))
    results: list[tuple[str, Timings]] = []
    async with httpx.AsyncClient(transport=transport, base_url=ORIGIN) as ui:
        first = await ui.get("/ui/")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', (await ui.get(f"/ui/events/{pending[-1]}")).text)
        marker = first.text.split('data-marker="')[1].split('"')[0]
        pages: list[tuple[str, Callable[[int], Awaitable[httpx.Response]], int]] = [
            ("inbox `/ui/` (pending, counts, chart)", lambda n: ui.get("/ui/"), 200),
            ("all events, newest first", lambda n: ui.get("/ui/?status=all"), 200),
            ("all events, a page deep in the middle", lambda n: ui.get(f"/ui/?status=all&cursor={top // 2}"), 200),
            ("filtered by type", lambda n: ui.get("/ui/?status=all&type=invoice.payment_failed"), 200),
            (f"customer page ({top // 100:,} events)", lambda n: ui.get(f"/ui/customers/{REGULAR}"), 200),
            ("event page", lambda n: ui.get(f"/ui/events/{ids[seqs[n]]}"), 200),
            ("live poll, nothing changed", lambda n: ui.get("/ui/", headers={"X-Inbox-Live": marker}), 204),
            ("live poll, changed (the list)", lambda n: ui.get("/ui/", headers={"X-Inbox-Live": "stale"}), 200),
        ]
        for name, ask, status in pages:
            results.append((name, await measure(rounds, ask, status)))
        assert csrf is not None
        form = {"csrf_token": csrf.group(1), "outcome": "handled", "note": "bench"}
        ack = await measure(
            min(rounds, len(pending) - 5), lambda n: ui.post(f"/ui/events/{pending[n]}/ack", data=form), 303
        )
        results.append(("ack (POST, then redirect)", ack))
    return results


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def main(events: int, db: str, rounds: int) -> None:
    settings = load_settings(db=db, webhook_secret="whsec_bench_" + "a" * 32)
    async with open_inbox(settings) as inbox:
        await build(inbox.store, events)
        (total,) = (await inbox.store.db.fetch("SELECT count(*) FROM events"))[0]
        results = await run(inbox, rounds)
    print(f"\n{total:,} events, {rounds} requests per page, ms\n")
    print("| page | server median | server p95 | CPU median | CPU p95 |")
    print("|---|---|---|---|---|")
    for name, timings in results:
        server, cpu = timings.server, timings.cpu
        print(
            f"| {name} | {statistics.median(server):.1f} | {percentile(server, 0.95):.1f} "
            f"| {statistics.median(cpu):.1f} | {percentile(cpu, 0.95):.1f} |"
        )
    print(f"\nload average after the run: {' '.join(f'{load:.2f}' for load in os.getloadavg())}")
    print(f"\nreproduce: {sys.executable} bench/dashboard_bench.py --events {events} --db {db} --rounds {rounds}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--db", default=str(Path("bench-dashboard.db").resolve()))
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(main(args.events, args.db, args.rounds))
