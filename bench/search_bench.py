"""Search at scale: full-text queries and filtered pages over 10k to 1M stored events, through the inbox (the
store's list, count and resolution reads) and through MCP (`list_events` in-process), and the size the search
index adds to the database.

.venv/bin/python bench/search_bench.py [--sizes 10000 100000 1000000] [--db sqlite|postgres] [--queries 200] [--keep]

On PostgreSQL each size is a schema `search_bench_SIZE` of the server the tests use (STRIPE_INBOX_TEST_POSTGRES);
`--keep` measures again what an earlier run stored there (upgraded by any newer migration). The events are
stored through the ingest's own writes and indexed by bench/bulk_index.py (the indexer's own functions, the GIN
built once at the end): 1M events in about 13 minutes on the shared machine, against 45 through the indexer.
The tables are vacuumed before measuring, as autovacuum does soon after a bulk load: index-only scans need the
visibility map.

Events are realistic lifecycles written from Stripe's documented shapes (bench's own generator over
stripe/samples.py): invoices created, finalized, failed and paid; payment intents that succeed or are
declined, with their charges; checkouts; subscriptions going past due and back; disputes opened and closed.
Each size has customers in proportion (one per 20 events) and one event every 10 minutes, so a customer's,
an object's or a week's events are about as many at 10k as at 1M, as in a real inbox that grows with time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from bulk_index import bulk_index
from mcp import Client

from stripe_inbox import load_settings, open_inbox
from stripe_inbox.events import IncomingEvent
from stripe_inbox.inbox import Inbox
from stripe_inbox.mcp.server import create_mcp_server
from stripe_inbox.stripe.samples import SAMPLES

BATCH = 5_000  # events stored per write
SPACING = 600  # seconds between events
END = 1_780_000_000
FIRST = ["ada", "grace", "alan", "jane", "li", "omar", "sofia", "yuki", "noah", "maria", "ivan", "amara"]
LAST = ["lovelace", "hopper", "turing", "doe", "wei", "haddad", "rossi", "tanaka", "smith", "garcia", "petrov"]
DECLINES = [
    ("insufficient_funds", "Your card has insufficient funds."),
    ("generic_decline", "Your card was declined."),
    ("expired_card", "Your card has expired."),
    ("incorrect_cvc", "Your card's security code is incorrect."),
    ("do_not_honor", "The bank did not return any further details with this decline."),
]
PLANS = ["Pro plan", "Team plan", "Starter plan", "Enterprise seats", "Annual Pro", "Usage overage"]
CURRENCIES = ["usd"] * 8 + ["eur", "gbp"]


def rid(rng: random.Random, prefix: str) -> str:
    return f"{prefix}_{rng.getrandbits(96):024x}"


@dataclass
class Customer:
    id: str
    email: str
    name: str


@dataclass
class Generator:
    size: int
    rng: random.Random = field(default_factory=lambda: random.Random(13))
    customers: list[Customer] = field(default_factory=list)
    made: int = 0
    picks: dict[str, list[str]] = field(default_factory=lambda: {"email": [], "object": [], "fragment": []})

    def __post_init__(self) -> None:
        for number in range(max(1, self.size // 20)):
            first, last = self.rng.choice(FIRST), self.rng.choice(LAST)
            self.customers.append(
                Customer(rid(self.rng, "cus"), f"{first}.{last}{number}@example{number % 97}.com", f"{first} {last}")
            )

    def event(self, event_type: str, obj: dict[str, Any]) -> bytes:
        created = END - (self.size - self.made) * SPACING
        self.made += 1
        obj["created"] = created - 30
        event = {
            "id": rid(self.rng, "evt"),
            "object": "event",
            "api_version": "2025-09-30.clover",
            "created": created,
            "data": {"object": obj},
            "livemode": self.rng.random() < 0.7,
            "pending_webhooks": 1,
            "request": {"id": rid(self.rng, "req"), "idempotency_key": None},
            "type": event_type,
        }
        return orjson.dumps(event)

    def lifecycle(self) -> list[bytes]:
        rng, customer = self.rng, self.rng.choice(self.customers)
        amount = rng.choice([900, 2900, 4900, 9900, 19900, 49900, 99900, 250000])
        currency = rng.choice(CURRENCIES)
        roll = rng.random()
        common = {
            "customer": customer.id,
            "currency": currency,
            "metadata": {"order_id": f"ORD-{rng.randrange(10**6)}"},
        }
        if self.made % 997 == 0:
            self.picks["email"].append(customer.email)
        if roll < 0.45:
            obj = SAMPLES["invoice.paid"](END) | common
            obj.update(id=rid(rng, "in"), amount_due=amount, customer_email=customer.email, customer_name=customer.name)
            obj["subscription"] = rid(rng, "sub")
            steps = ["invoice.created", "invoice.finalized"]
            steps += ["invoice.payment_failed"] if rng.random() < 0.2 else []
            steps += ["invoice.paid", "invoice.payment_succeeded"]
            self._pick(obj["id"])
            return [self.event(step, dict(obj)) for step in steps]
        if roll < 0.75:
            pi = SAMPLES["payment_intent.succeeded"](END) | common
            pi.update(id=rid(rng, "pi"), amount=amount, receipt_email=customer.email, description=rng.choice(PLANS))
            charge = {
                "id": rid(rng, "ch"),
                "object": "charge",
                "amount": amount,
                "currency": currency,
                "customer": customer.id,
                "payment_intent": pi["id"],
                "billing_details": {"email": customer.email, "name": customer.name},
                "description": pi["description"],
                "metadata": common["metadata"],
            }
            self._pick(pi["id"])
            if rng.random() < 0.25:
                code, message = rng.choice(DECLINES)
                error = {"code": "card_declined", "decline_code": code, "message": message, "type": "card_error"}
                failed = pi | {"status": "requires_payment_method", "last_payment_error": error}
                charge_failed = charge | {"failure_code": code, "failure_message": message, "status": "failed"}
                return [self.event("payment_intent.payment_failed", failed), self.event("charge.failed", charge_failed)]
            return [self.event("payment_intent.succeeded", pi), self.event("charge.succeeded", charge)]
        if roll < 0.85:
            obj = SAMPLES["checkout.session.completed"](END) | common
            obj.update(id=rid(rng, "cs_live"), amount_total=amount, customer_email=customer.email)
            obj["customer_details"] = {"email": customer.email, "name": customer.name}
            self._pick(obj["id"])
            return [self.event("checkout.session.completed", obj)]
        if roll < 0.97:
            obj = SAMPLES["customer.subscription.updated"](END) | common
            obj["id"] = rid(rng, "sub")
            self._pick(obj["id"])
            statuses = ["past_due", "active"] if rng.random() < 0.5 else ["active"]
            return [self.event("customer.subscription.updated", obj | {"status": status}) for status in statuses]
        obj = SAMPLES["charge.dispute.created"](END) | common
        obj.update(id=rid(rng, "du"), amount=amount)
        self._pick(obj["id"])
        return [
            self.event("charge.dispute.created", obj),
            self.event("charge.dispute.closed", obj | {"status": "lost"}),
        ]

    def _pick(self, object_id: str) -> None:
        if self.made % 499 == 0:
            self.picks["object"].append(object_id)
            self.picks["fragment"].append(object_id.split("_")[-1][:8])


def replay(size: int) -> Generator:
    """The generator as fill left it (its picks), without storing anything: for a database kept from a run."""
    generator = Generator(size)
    while generator.made < size:
        generator.lifecycle()
    return generator


async def fill(inbox: Inbox, size: int) -> Generator:
    generator = Generator(size)
    pending: list[IncomingEvent] = []
    started, reported = time.perf_counter(), 0
    while generator.made < size:
        pending += [IncomingEvent.parse(payload) for payload in generator.lifecycle()]
        if len(pending) >= BATCH or generator.made >= size:
            await inbox.store.add_events(pending, time.time())
            pending = []
            if generator.made - reported >= 100_000:
                reported = generator.made
                rate = generator.made / (time.perf_counter() - started)
                print(f"  stored {generator.made:,} events ({rate:,.0f}/s)", file=sys.stderr, flush=True)
    return generator


def milliseconds(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


async def timed(call: Callable[[], Awaitable[Any]], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - started)
    return samples


def workloads(generator: Generator, rng: random.Random) -> dict[str, Callable[[], dict[str, Any]]]:
    week_end = END - 5 * 86400
    return {
        "full text": lambda: {
            "query": rng.choice(
                [
                    rng.choice(generator.picks["email"]),
                    rng.choice(generator.picks["fragment"]),
                    "insufficient funds",
                    "security code",
                    f"{rng.choice(FIRST)} {rng.choice(LAST)}",
                    f"ord-{rng.randrange(10**6)}",
                ]
            )
        },
        "amount range": lambda: {"amount_gte": 500, "amount_lte": 1000, "currency": "usd"},
        "date range": lambda: {
            "created_after": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(week_end - 7 * 86400)),
            "created_before": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(week_end)),
        },
        "object": lambda: {"object_id": rng.choice(generator.picks["object"])},
        "email": lambda: {"email": rng.choice(generator.picks["email"])},
    }


async def measure(inbox: Inbox, generator: Generator, repeat: int) -> dict[str, dict[str, tuple[float, float]]]:
    results: dict[str, dict[str, tuple[float, float]]] = {}
    server = create_mcp_server(inbox)
    async with Client(server) as client:
        for name, arguments in workloads(generator, random.Random(7)).items():
            await inbox.list_events("all", **arguments())  # warm the cache for this access path
            store = await timed(lambda arguments=arguments: inbox.list_events("all", **arguments()), repeat)

            async def call(arguments: Callable[[], dict[str, Any]] = arguments) -> None:
                result = await client.call_tool("list_events", {"status": "all", **arguments()})
                assert not result.is_error, result.content

            mcp = await timed(call, repeat)
            results[name] = {"store": milliseconds(store), "mcp": milliseconds(mcp)}
    return results


def sqlite_sizes(path: str) -> tuple[int, int]:
    """The database's size, and its size once the search index's tables, indexes and column are dropped
    (both vacuumed)."""
    with_index = os.path.getsize(path)
    without = path + ".without"
    db = sqlite3.connect(path)
    db.execute(f"VACUUM INTO '{without}'")
    db.close()
    with_index = os.path.getsize(without)  # both vacuumed, so free pages count in neither
    db = sqlite3.connect(without)
    for statement in (
        "DROP TRIGGER events_search_queue",
        "DROP TRIGGER events_search_delete",
        "DROP TABLE search_queue",
        "DROP TABLE event_search",
        "DROP TABLE event_keys",
        "DROP INDEX events_amount",
        "DROP INDEX events_created",
        "ALTER TABLE events DROP COLUMN object_status",
    ):
        db.execute(statement)
    db.commit()
    db.execute("VACUUM")
    db.close()
    size = os.path.getsize(without)
    os.remove(without)
    return with_index, size


async def main(sizes: list[int], backend: str, repeat: int, keep: bool) -> None:
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        table: dict[int, dict[str, dict[str, tuple[float, float]]]] = {}
        for size in sizes:
            location = f"{tmp}/search-{size}.db" if backend == "sqlite" else await postgres_url(size, keep)
            settings = load_settings(db=location, webhook_secret="whsec_bench_" + "a" * 32)
            async with open_inbox(settings) as inbox:
                started = time.perf_counter()
                stored = (await inbox.list_events("all", limit=1)).total
                if stored >= size:
                    generator = replay(size)
                    print(f"{size:,} events kept from an earlier run", file=sys.stderr)
                else:
                    generator = await fill(inbox, size)
                    print(f"{size:,} events stored in {time.perf_counter() - started:.0f} s", file=sys.stderr)
                started = time.perf_counter()
                if backend == "postgres":
                    indexed = await bulk_index(inbox)  # what serve's indexer writes, with the GIN built once
                else:
                    indexed = await inbox.indexer.catch_up()  # what serve's indexer does as they arrive
                took = time.perf_counter() - started
                print(f"{indexed:,} events indexed in {took:.0f} s", file=sys.stderr)
                if backend == "postgres":
                    await inbox.store.db.fetch("VACUUM ANALYZE")  # type: ignore[attr-defined]  # as autovacuum would
                table[size] = await measure(inbox, generator, repeat)
            for name, where in table[size].items():
                (sp50, sp99), (mp50, mp99) = where["store"], where["mcp"]
                print(
                    f"{size:>9,} {name:<13} store p50 {sp50:7.2f} p99 {sp99:7.2f} | mcp p50 {mp50:7.2f} p99 {mp99:7.2f}"
                )
            if backend == "sqlite" and size == max(sizes):
                with_index, without = sqlite_sizes(location)
                print(
                    f"database at {size:,} events: {with_index / 2**20:,.0f} MiB with the search index, "
                    f"{without / 2**20:,.0f} MiB without (+{(with_index / without - 1) * 100:.0f}%)"
                )
        smallest, largest = min(sizes), max(sizes)
        for name in table[largest]:
            for where in ("store", "mcp"):
                ratio = table[largest][name][where][0] / table[smallest][name][where][0]
                print(f"p50 ratio {largest:,} / {smallest:,} events, {name}, {where}: {ratio:.2f}")
    print(f"reproduce: {sys.executable} bench/search_bench.py --db {backend} --sizes {' '.join(map(str, sizes))}")


async def postgres_url(size: int, keep: bool) -> str:
    """A fresh schema for this size on the PostgreSQL server the tests use, or with `keep` the one an earlier
    run left (seeding 1M events takes minutes); migrations still apply to it on open."""
    import asyncpg

    base = os.environ.get("STRIPE_INBOX_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
    schema = f"search_bench_{size}"
    admin = await asyncpg.connect(base)
    try:
        # fill stops at the lifecycle that reaches `size`: a few events more
        kept = keep and await admin.fetchval(f"SELECT count(*) FROM {schema}.events") >= size
    except asyncpg.UndefinedTableError:
        kept = False
    if not kept:
        await admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}")
    await admin.close()
    return f"{base}?search_path={schema}"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--queries", type=int, default=200, help="timed calls per workload and path")
    parser.add_argument(
        "--keep", action="store_true", help="postgres: measure the events an earlier run stored, if all are there"
    )
    args = parser.parse_args()
    asyncio.run(main(args.sizes, args.db, args.queries, args.keep))
