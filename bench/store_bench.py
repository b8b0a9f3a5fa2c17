"""Group commit in the SQLite store: events per second from concurrent callers against one at a time.

.venv/bin/python bench/store_bench.py [--events 4000] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time

from stripe_inbox.events import IncomingEvent
from stripe_inbox.stores import open_store
from stripe_inbox.stripe.samples import sample_event


async def main(events: int, concurrency: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = await open_store(f"{tmp}/bench.db")
        batch = [IncomingEvent.parse(sample_event("invoice.paid")) for _ in range(events * 2)]
        started = time.perf_counter()
        for first in range(0, events, concurrency):
            await asyncio.gather(*(store.add_events([e], time.time()) for e in batch[first : first + concurrency]))
        together = time.perf_counter() - started
        started = time.perf_counter()
        for event in batch[events : events + events // 10]:
            await store.add_events([event], time.time())
        alone = time.perf_counter() - started
        await store.close()
    print(
        f"{concurrency} concurrent callers: {events / together:,.0f} events/s "
        f"({together / (events / concurrency) * 1000:.1f} ms per group of {concurrency})"
    )
    print(f"one caller at a time:   {events // 10 / alone:,.0f} events/s")
    print(f"reproduce: {sys.executable} bench/store_bench.py --events {events} --concurrency {concurrency}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    asyncio.run(main(args.events, args.concurrency))
