"""Scale-out: the same load on SQLite (one `serve`), on PostgreSQL with one replica, and on PostgreSQL
with two replicas on one database, driven by wrk from separate processes.

    .venv/bin/python bench/replicas_bench.py [--duration 10] [--connections 32] [--postgres URL]

Each replica gets its own wrk with an equal share of the connections (as a load balancer would spread
them) and its own unique pre-signed events; requests/s are summed and the worst p99 is reported. Every
run checks that every 200 left a row behind. Needs wrk and a PostgreSQL server (default: the local one).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import sqlite3
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
from ingress_bench import free_port, rss_mb, start, write_requests, wrk

SETUPS = (("sqlite", 1), ("postgres", 1), ("postgres", 2))


async def _admin(url: str, sql: str) -> int | None:
    db = await asyncpg.connect(url)
    try:
        return await db.fetchval(sql)
    finally:
        await db.close()


def run(database: str, replicas: int, connections: int, duration: float, events: int, postgres: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        schema = "bench_" + secrets.token_hex(4)
        if database == "postgres":
            asyncio.run(_admin(postgres, f"CREATE SCHEMA {schema}"))
        db = f"{postgres}?search_path={schema}" if database == "postgres" else str(workdir / "bench.db")
        shares = [connections // replicas] * replicas
        files = []
        for number in range(replicas):
            files.append((workdir / f"requests-{number}.tsv", workdir / f"warmup-{number}.tsv"))
            write_requests(files[-1][0], events // replicas)
            write_requests(files[-1][1], 1000)
        ports = [free_port() for _ in range(replicas)]
        processes = [start("stripe-inbox", port, workdir, db) for port in ports]
        try:
            with ThreadPoolExecutor(replicas) as pool:
                list(pool.map(lambda n: wrk(ports[n], shares[n], 2, files[n][1]), range(replicas)))
                results = list(pool.map(lambda n: wrk(ports[n], shares[n], duration, files[n][0]), range(replicas)))
            rss = [round(rss_mb(process.pid), 1) for process in processes]
        finally:
            for process in processes:
                process.terminate()
                process.wait(timeout=30)
        ok = sum(r["requests"] - r["non2xx"] for r in results)
        if database == "postgres":
            stored = asyncio.run(_admin(db, "SELECT count(*) FROM events"))
            asyncio.run(_admin(postgres, f"DROP SCHEMA {schema} CASCADE"))
        else:
            with sqlite3.connect(workdir / "bench.db") as check:
                stored = check.execute("SELECT count(*) FROM events").fetchone()[0]
        if stored < min(ok, events):
            raise SystemExit(f"{database} x{replicas}: {ok} answered 200 but only {stored} rows are stored")
        return {
            "setup": f"{database}, {replicas} replica{'s' if replicas > 1 else ''}",
            "connections": connections,
            "rps": round(sum((r["requests"] - r["non2xx"]) / (r["duration_us"] / 1e6) for r in results)),
            "p50_ms": max(r["p50_us"] for r in results) / 1000,
            "p99_ms": max(r["p99_us"] for r in results) / 1000,
            "non2xx": sum(r["non2xx"] for r in results),
            "rss_mb": rss,
            "stored": stored,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--connections", type=int, nargs="+", default=[32])
    parser.add_argument("--events", type=int, default=100_000, help="unique signed events per run")
    parser.add_argument("--postgres", default=os.environ.get("BENCH_POSTGRES", "postgresql://postgres@127.0.0.1/test"))
    args = parser.parse_args()
    server_version = asyncio.run(_admin(args.postgres, "SHOW server_version"))
    print(f"{platform.node()}: {os.cpu_count()} cores, PostgreSQL {server_version}")
    print("| connections | setup | req/s | p50 ms | p99 ms | non-2xx | RSS MB |\n|---|---|---|---|---|---|---|")
    for connections in args.connections:
        for database, replicas in SETUPS:
            r = run(database, replicas, connections, args.duration, args.events, args.postgres)
            print(
                f"| {connections} | {r['setup']} | {r['rps']:,} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
                f"{r['non2xx']} | {' + '.join(map(str, r['rss_mb']))} |",
                flush=True,
            )
    print(
        f"reproduce: .venv/bin/python bench/replicas_bench.py --duration {args.duration:g} "
        f"--connections {' '.join(map(str, args.connections))}"
    )


if __name__ == "__main__":
    main()
