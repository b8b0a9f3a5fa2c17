"""MCP Events webhooks (#25): what a subscription costs and how fast an event reaches its callback.

    .venv/bin/python bench/event_webhooks_bench.py latency  [--events 200] [--rate 20]
    .venv/bin/python bench/event_webhooks_bench.py matching [--subscriptions 1000] [--events 500]
    .venv/bin/python bench/event_webhooks_bench.py ingress  [--subscriptions 0 100 1000] [--rounds 3]
                                                            [--connections 16 64] [--duration 10]

- latency: a real `serve` (SQLite) with one subscription whose callback is a receiver on loopback; events are
  POSTed to the ingress one at a time at `--rate`/s, and each is timed from its POST to its arrival at the receiver.
- matching: in-process, the CPU one delivery pass spends per new event deciding which of N subscriptions it
  goes to (event_webhooks/matching.py), in µs per event, for three shapes of subscriptions: each on its own
  customer (indexed by customer), five shapes repeated (equal selectors tested once), and all different with no
  customer (every selector tested: the worst case).
- ingress: ingress throughput (wrk, as bench/ingress_bench.py) with 0, 100 and 1,000 subscriptions in the store,
  in rounds that run each count in turn, so the machine's drift falls on all alike. The subscriptions watch
  customers the load never names, so the figures are the delivery loop's reading and matching (and none of the
  receiver's work); one subscription in each run matches every dispute and is delivered to.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from ingress_bench import SECRET, free_port, rss_mb, start, stored_rows, templates, write_requests, wrk

from stripe_inbox import load_settings, open_inbox
from stripe_inbox.event_feed import feed, selector
from stripe_inbox.event_webhooks.matching import Matcher
from stripe_inbox.event_webhooks.secret_box import SecretBox
from stripe_inbox.stores.event_subscriptions import NewSubscription
from stripe_inbox.stores.interface import Audit
from stripe_inbox.stripe.signature import sign

SHAPES = [
    {"customer": "cus_nobody"},
    {"types": ["invoice.*"], "min_priority": "high"},
    {"types": ["charge.dispute.*"]},
    {"amount_gte": 500, "currency": "usd"},
    {"object_id": "ch_nothing", "livemode": True},
]
CALLBACK_SECRET = "whsec_" + base64.b64encode(b"b" * 32).decode()


class Receiver:
    """A callback on loopback that answers 204 and notes when each event arrived."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.event = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                at = time.perf_counter()
                if body.get("type") == "verification":
                    answer = json.dumps({"challenge": body["challenge"]}).encode()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                    return
                with receiver.event:
                    receiver.arrived.setdefault(body.get("eventId", ""), at)
                    receiver.event.notify_all()
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def wait(self, event_id: str, timeout: float = 30) -> float:
        deadline = time.monotonic() + timeout
        with self.event:
            while event_id not in self.arrived:
                if not self.event.wait(max(0.0, deadline - time.monotonic())):
                    raise SystemExit(f"{event_id} did not arrive within {timeout} s")
            return self.arrived[event_id]


async def seed(db: str, count: int, callback: str, matching: dict[str, Any] | None = None) -> None:
    """`count` subscriptions on customers the load never names (plus one `matching`, if given), from now on."""
    settings = load_settings(db=db, webhook_secret=SECRET)
    async with open_inbox(settings) as inbox:
        box = SecretBox.open(None, settings.events_key_file)
        start_at = (await feed.start(inbox, "stripe.event")).encode()
        chosen = [{"customer": f"cus_watched{number}"} for number in range(count)]
        if matching is not None:
            chosen[:1] = [matching]
        for number, arguments in enumerate(chosen):
            subscription_id = f"sub_bench{number:05}"
            new = NewSubscription(
                subscription_id,
                "bench",
                "stripe.event",
                selector("stripe.event", arguments).arguments,
                callback,
                box.seal(CALLBACK_SECRET, subscription_id),
                start_at,
                time.time() + 86400,
            )
            await inbox.store.save_subscription(new, time.time(), Audit("bench", "subscribe_events", {}))


def latency(args: argparse.Namespace) -> None:
    receiver = Receiver()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        db = str(workdir / "bench.db")
        asyncio.run(seed(db, 1, receiver.url, {"types": ["*"]}))
        port = free_port()
        process = start("stripe-inbox", port, workdir)
        events, waits = templates(), []
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
                for number in range(args.events + 10):
                    event = dict(events[number % len(events)], id=f"evt_bench{os.urandom(10).hex()}")
                    body = json.dumps(event, separators=(",", ":")).encode()
                    headers = {"Stripe-Signature": sign(body, SECRET, int(time.time()))}
                    sent = time.perf_counter()
                    assert http.post("/webhooks/stripe", content=body, headers=headers).status_code == 200
                    arrived = receiver.wait(event["id"])
                    if number >= 10:  # the first few warm the server up
                        waits.append((arrived - sent) * 1000)
                    time.sleep(max(0.0, 1 / args.rate - (time.perf_counter() - sent)))
        finally:
            process.terminate()
            process.wait(timeout=30)
    waits.sort()
    print(
        f"event → webhook, {len(waits)} events at ≤{args.rate}/s: p50 {statistics.median(waits):.1f} ms  "
        f"p99 {waits[int(len(waits) * 0.99) - 1]:.1f} ms  max {waits[-1]:.1f} ms"
    )


async def _matching(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(db=str(Path(tmp) / "bench.db"), webhook_secret=SECRET)
        async with open_inbox(settings) as inbox:
            cursor = await feed.start(inbox, "stripe.event")
            events, signed = templates(), []
            for number in range(args.events):
                event = dict(events[number % len(events)], id=f"evt_bench{os.urandom(10).hex()}")
                signed.append(json.dumps(event).encode())
            for body in signed:
                await inbox.receive(body, sign(body, SECRET, int(time.time())))
            scan = await feed.scan(inbox, cursor, args.events)
            await feed.assess(inbox, scan.entries)  # the triage every entry may need, before the timing
            shapes = {
                "per-customer (distinct customers)": [
                    {"customer": f"cus_watched{n}"} for n in range(args.subscriptions)
                ],
                "five shapes, repeated": [SHAPES[n % len(SHAPES)] for n in range(args.subscriptions)],
                "all distinct, none by customer": [
                    {"amount_gte": n + 1, "currency": "usd", "types": ["invoice.*", "charge.*"]}
                    for n in range(args.subscriptions)
                ],
            }
            for shape, arguments in shapes.items():
                chosen = {f"sub_{n}": selector("stripe.event", each) for n, each in enumerate(arguments)}
                matcher, best = Matcher(chosen), float("inf")
                for _ in range(3):
                    started = time.perf_counter()
                    matched = matcher.occurrences(scan.entries)
                    best = min(best, time.perf_counter() - started)
                per_event = best / len(scan.entries) * 1e6
                deliveries = sum(len(each) for each in matched.values())
                print(
                    f"{args.subscriptions} subscriptions, {shape}: {per_event:,.1f} µs per event "
                    f"({len(scan.entries)} events, {deliveries} deliveries)"
                )


def ingress(args: argparse.Namespace) -> None:
    receiver = Receiver()
    rps: dict[tuple[int, int], list[int]] = {}
    for round_number in range(1, args.rounds + 1):
        for connections in args.connections:
            for count in args.subscriptions:
                result = _ingress_run(count, connections, args.duration, args.events, receiver)
                rps.setdefault((count, connections), []).append(result["rps"])
                print(
                    f"round {round_number}  c={connections:<3} subscriptions={count:<5} {result['rps']:>6} /s  "
                    f"p50 {result['p50_us'] / 1000:.1f} ms  p99 {result['p99_us'] / 1000:.1f} ms  "
                    f"RSS {result['rss_mb']} MB  delivered {result['delivered']}",
                    flush=True,
                )
    print("\nmedians (2xx/s):")
    for connections in args.connections:
        median = {count: statistics.median(rps[count, connections]) for count in args.subscriptions}
        base = median[args.subscriptions[0]]
        print(
            f"  c={connections:<3} "
            + "  ".join(f"{count}: {value:,.0f} ({value / base:.2f})" for count, value in median.items())
        )


def _ingress_run(count: int, connections: int, duration: float, events: int, receiver: Receiver) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        requests, warmup = workdir / "requests.tsv", workdir / "warmup.tsv"
        write_requests(requests, events)
        write_requests(warmup, 3000)
        if count:
            asyncio.run(seed(str(workdir / "bench.db"), count, receiver.url, {"types": ["charge.dispute.*"]}))
        before = len(receiver.arrived)
        port = free_port()
        process = start("stripe-inbox", port, workdir)
        try:
            wrk(port, connections, 2, warmup)
            result = wrk(port, connections, duration, requests)
            result["rss_mb"] = round(rss_mb(process.pid), 1)
        finally:
            process.terminate()
            process.wait(timeout=30)
        ok = result["requests"] - result["non2xx"]
        rows = stored_rows(workdir, "stripe-inbox")
        if rows is not None and rows < min(ok, events):
            raise SystemExit(f"{ok} answered 200 but only {rows} rows are stored")
        result.update(rps=round(ok / (result["duration_us"] / 1e6)), delivered=len(receiver.arrived) - before)
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    timed = commands.add_parser("latency")
    timed.add_argument("--events", type=int, default=200)
    timed.add_argument("--rate", type=float, default=20)
    matching = commands.add_parser("matching")
    matching.add_argument("--subscriptions", type=int, default=1000)
    matching.add_argument("--events", type=int, default=500)
    loaded = commands.add_parser("ingress")
    loaded.add_argument("--subscriptions", type=int, nargs="+", default=[0, 100, 1000])
    loaded.add_argument("--rounds", type=int, default=3)
    loaded.add_argument("--connections", type=int, nargs="+", default=[16, 64])
    loaded.add_argument("--duration", type=float, default=10)
    loaded.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()
    if args.command == "latency":
        latency(args)
    elif args.command == "matching":
        asyncio.run(_matching(args))
    else:
        ingress(args)


if __name__ == "__main__":
    main()
