"""MCP latency as the inbox grows: list_events, the pending resource and ack_event over stdio and HTTP,
with N stored events, and the resident memory of `serve` on that database.

    .venv/bin/python bench/mcp_bench.py --events 10000 1000000 [--calls 200]

Each size gets a fresh database filled through the store (batches of 500 realistic ~2.5 KB events).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
from mcp import Client, StdioServerParameters

from stripe_inbox.events import IncomingEvent
from stripe_inbox.stores import open_store
from stripe_inbox.stripe.samples import SAMPLES, sample_event

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from ingress_bench import SECRET, free_port, rss_mb  # noqa: E402


async def fill(db: Path, count: int) -> float:
    store = await open_store(str(db))
    templates = [sample_event(event_type) for event_type in SAMPLES]
    started = time.perf_counter()
    for first in range(0, count, 500):
        batch = []
        for number in range(first, min(first + 500, count)):
            payload = templates[number % len(templates)].replace(b'"id": "evt_', f'"id": "evt_{number:08d}'.encode(), 1)
            batch.append(IncomingEvent.parse(payload))
        await store.add_events(batch, time.time())
    await store.close()
    return time.perf_counter() - started


def quantiles(samples: list[float]) -> str:
    cut = statistics.quantiles(samples, n=100)
    return f"p50 {cut[49]:6.2f} ms  p99 {cut[98]:6.2f} ms"


async def measure(server: str | StdioServerParameters, calls: int) -> dict[str, list[float]]:
    timings: dict[str, list[float]] = {"list_events": [], "pending resource": [], "ack_event": []}
    async with Client(server) as client:
        for _ in range(calls):
            for name, call in (
                ("list_events", lambda: client.call_tool("list_events", {"limit": 20})),
                ("pending resource", lambda: client.read_resource("stripe://events/pending")),
            ):
                started = time.perf_counter()
                await call()
                timings[name].append((time.perf_counter() - started) * 1000)
            page = await client.call_tool("list_events", {"limit": 1})
            started = time.perf_counter()
            await client.call_tool("ack_event", {"event_id": page.structured_content["events"][0]["id"]})
            timings["ack_event"].append((time.perf_counter() - started) * 1000)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    for count in args.events:
        with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
            db = Path(tmp) / "inbox.db"
            seconds = asyncio.run(fill(db, count))
            size = sum(p.stat().st_size for p in Path(tmp).glob("inbox.db*")) / 2**20
            print(f"{count:,} events: filled in {seconds:.1f} s ({count / seconds:,.0f} events/s), {size:,.0f} MiB")
            env = {**os.environ, "STRIPE_WEBHOOK_SECRET": SECRET, "STRIPE_INBOX_DB": str(db)}
            port = free_port()
            serve = subprocess.Popen(
                [sys.executable, "-m", "stripe_inbox", "serve", "--port", str(port)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                assert serve.stderr is not None
                while "listening on" not in serve.stderr.readline():
                    pass
                http = anyio.run(measure, f"http://127.0.0.1:{port}/mcp", args.calls)
                rss = rss_mb(serve.pid)
            finally:
                serve.terminate()
                serve.wait(timeout=30)
            stdio = anyio.run(
                measure,
                StdioServerParameters(
                    command=sys.executable, args=["-m", "stripe_inbox", "mcp", "--db", str(db)], env=env
                ),
                args.calls,
            )
            for transport, timings in (("stdio", stdio), ("http", http)):
                for name, samples in timings.items():
                    print(f"  {transport:5} {name:17} {quantiles(samples)}")
            print(f"  serve RSS after {3 * args.calls} MCP calls: {rss:.0f} MB")
    print(
        f"reproduce: {sys.executable} bench/mcp_bench.py --events {' '.join(map(str, args.events))} "
        f"--calls {args.calls}"
    )


if __name__ == "__main__":
    main()
