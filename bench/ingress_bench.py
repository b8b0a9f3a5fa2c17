"""Ingress throughput and latency: stripe-inbox against the bare Starlette ceiling and the naive handler,
side by side in one run, driven by wrk from a separate process.

    .venv/bin/python bench/ingress_bench.py [--duration 10] [--connections 16 64] [--chart bench/ingress.png]

Needs wrk (Debian: apt-get install wrk). Every server gets a fresh database and the same pre-signed,
unique events, ~2.5 KB on average: five real Stripe payloads from ../shared/fixtures (the built-in
samples, ~1 KB, where that folder is missing), each with a new id, time and customer. Each run checks
that every 200 left a row behind.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from stripe_inbox.stripe.samples import sample_event
from stripe_inbox.stripe.signature import sign

HERE = Path(__file__).resolve().parent
FIXTURES = HERE.parents[1] / "shared" / "fixtures" / "stripe" / "events"
# A mix whose mean is the ~2.5 KB the targets were calibrated with.
MIX = (
    "invoice.payment_failed",
    "checkout.session.completed",
    "charge.refunded",
    "customer.subscription.deleted",
    "charge.dispute.created",
)
SECRET = "whsec_benchmark_" + "k" * 32
SERVERS = ("bare", "naive", "verify-only", "stripe-inbox")


def templates() -> list[dict]:
    if FIXTURES.is_dir():
        return [json.loads(next(FIXTURES.glob(f"{event_type}.*.json")).read_text()) for event_type in MIX]
    return [json.loads(sample_event(event_type)) for event_type in MIX]


def write_requests(path: Path, count: int) -> int:
    """`count` unique signed deliveries, one per line; returns the mean body size."""
    events, now, total = templates(), int(time.time()), 0
    with path.open("w") as out:
        for number in range(count):
            event = events[number % len(events)]
            event.update(id=f"evt_bench{os.urandom(10).hex()}", created=now)
            if isinstance(event["data"]["object"].get("customer"), str):
                event["data"]["object"]["customer"] = f"cus_bench{os.urandom(6).hex()}"
            body = json.dumps(event, separators=(",", ":")).encode()  # one line
            total += len(body)
            out.write(f"{sign(body, SECRET, now)}\t{body.decode()}\n")
    return total // count


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(
    kind: str, port: int, workdir: Path, db: str | None = None, src: Path | None = None
) -> subprocess.Popen[bytes]:
    """`src`: run stripe-inbox from that source tree (a worktree of another commit) instead of this one."""
    db = db or str(workdir / "bench.db")
    env = {**os.environ, "STRIPE_WEBHOOK_SECRET": SECRET, "STRIPE_INBOX_DB": db}
    if src is not None:
        env["PYTHONPATH"] = str(src)
    if kind == "stripe-inbox":
        command = [sys.executable, "-m", "stripe_inbox", "serve", "--port", str(port)]
    else:
        command = [sys.executable, str(HERE / "servers.py"), kind, str(port), str(db), SECRET]
    process = subprocess.Popen(command, env=env, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit(f"{kind} did not start")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wrk(port: int, connections: int, duration: float, requests: Path) -> dict:
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration:g}s",
        "--latency",
        "-s",
        str(HERE / "cycle.lua"),
        f"http://127.0.0.1:{port}/webhooks/stripe",
        "--",
        str(requests),
        "1",
    ]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def stored_rows(workdir: Path, kind: str) -> int | None:
    if kind in ("bare", "verify-only"):
        return None
    with sqlite3.connect(workdir / "bench.db") as db:
        return db.execute("SELECT count(*) FROM events").fetchone()[0]


def index_lag(workdir: Path) -> dict:
    """How many stored events the search indexer had not indexed when the load stopped, and how long it took
    to index them (the lag a search reported at the end of the burst). Trees without the indexer report none."""
    with sqlite3.connect(workdir / "bench.db") as db:
        if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'search_queue'").fetchone():
            return {}
        stopped, deadline = time.monotonic(), time.monotonic() + 120
        left = db.execute("SELECT count(*) FROM search_queue").fetchone()[0]
        queued = left
        while left and time.monotonic() < deadline:
            time.sleep(0.05)
            left = db.execute("SELECT count(*) FROM search_queue").fetchone()[0]
        return {"unindexed_at_end": queued, "indexed_after_s": round(time.monotonic() - stopped, 2)}


def run(kind: str, connections: int, duration: float, events: int, src: Path | None = None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        requests, warmup = workdir / "requests.tsv", workdir / "warmup.tsv"
        size = write_requests(requests, events)  # fresh timestamps: signatures hold for 300 s
        write_requests(warmup, 3000)
        port = free_port()
        process = start(kind, port, workdir, src=src)
        try:
            wrk(port, connections, 2, warmup)  # start-up and first-call costs stay out of the figures
            result = wrk(port, connections, duration, requests)
            result["rss_mb"] = round(rss_mb(process.pid), 1)
            if kind == "stripe-inbox":
                result.update(index_lag(workdir))
        finally:
            process.terminate()
            process.wait(timeout=30)
        ok = result["requests"] - result["non2xx"]
        rows = stored_rows(workdir, kind)
        result.update(
            server=kind,
            connections=connections,
            body_bytes=size,
            ok=ok,
            stored=rows,
            rps=round(ok / (result["duration_us"] / 1e6)),
        )
        if rows is not None and rows < min(ok, events):  # the warm-up's rows come on top
            raise SystemExit(f"{kind}: {ok} answered 200 but only {rows} rows are stored")
        return result


def chart(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (throughput, p99) = plt.subplots(1, 2, figsize=(11, 4))
    for kind in SERVERS:
        rows = [r for r in results if r["server"] == kind]
        levels = [r["connections"] for r in rows]
        throughput.plot(levels, [r["rps"] for r in rows], marker="o", label=kind)
        p99.plot(levels, [r["p99_us"] / 1000 for r in rows], marker="o", label=kind)
    throughput.set(title="Throughput (2xx/s)", xlabel="connections", xscale="log")
    p99.set(title="p99 latency (ms)", xlabel="connections", xscale="log", yscale="log")
    levels = sorted({r["connections"] for r in results})
    for axis in (throughput, p99):
        axis.minorticks_off()
        axis.set_xticks(levels, labels=[str(level) for level in levels])
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--connections", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--events", type=int, default=100_000, help="unique signed events per run")
    parser.add_argument("--json", type=Path, default=HERE / "ingress.json")
    parser.add_argument("--chart", type=Path, default=HERE / "ingress.png")
    args = parser.parse_args()
    print(
        f"{platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{subprocess.run(['wrk', '--version'], capture_output=True, text=True).stdout.split(chr(10))[0]}"
    )
    results = []
    for connections in args.connections:
        for kind in SERVERS:
            result = run(kind, connections, args.duration, args.events)
            results.append(result)
            print(
                f"{kind:13} c={connections:<4} {result['rps']:>7} req/s  p50 {result['p50_us'] / 1000:6.2f} ms  "
                f"p99 {result['p99_us'] / 1000:6.2f} ms  non-2xx {result['non2xx']}  RSS {result['rss_mb']} MB  "
                f"stored {result['stored']}",
                flush=True,
            )
    print("\n| connections | server | req/s | p50 ms | p99 ms | vs bare | vs naive |\n|---|---|---|---|---|---|---|")
    for result in results:
        same = {r["server"]: r for r in results if r["connections"] == result["connections"]}
        print(
            f"| {result['connections']} | {result['server']} | {result['rps']:,} | {result['p50_us'] / 1000:.2f} | "
            f"{result['p99_us'] / 1000:.2f} | {result['rps'] / same['bare']['rps']:.0%} | "
            f"{result['rps'] / same['naive']['rps']:.1f}x |"
        )
    args.json.write_text(json.dumps(results, indent=2))
    try:
        chart(results, args.chart)
        print(f"chart: {args.chart}")
    except ImportError:
        print("no chart: pip install matplotlib (make bench installs it)")
    print(
        f"reproduce: {sys.executable} bench/ingress_bench.py --duration {args.duration:g} "
        f"--connections {' '.join(map(str, args.connections))}"
    )


if __name__ == "__main__":
    main()
