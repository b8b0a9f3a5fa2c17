"""Forwarding: `serve` with no destination, one and four, each fed by wrk at 16 connections in the same run,
forwarding to a loopback receiver that verifies every signature.

    .venv/bin/python bench/forward_bench.py [--duration 10] [--connections 16] [--rounds 1]

For each configuration: the ingress throughput (wrk, as bench/ingress_bench.py measures it); the forwards the
receiver verified; sustained forwards/s (verified forwards over the time from the first to the last); the
backlog when wrk stopped; and the end-to-end latency of each forward, from the moment the ingress accepted
Stripe's POST (the event's received_at) to the receiver's verified 200, p50 and p99. Then, for one destination,
the same latency at steady light loads (--light-rates: deliveries per second, one at a time, as Stripe sends them
to a quiet endpoint). The receiver is uvicorn
with a raw ASGI endpoint per destination that checks `Stripe-Signature` with the stripe package's
`WebhookSignature.verify_header` (the HMAC check construct_event makes, without building the event object)
and answers 200; a request that does not verify is a failed run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingress_bench import free_port, rss_mb, start, write_requests, wrk

DESTINATIONS = {"none": 0, "one": 1, "four": 4}
FORWARD_SECRETS = [f"whsec_forward_bench_{n}_" + "q" * 32 for n in range(4)]
DRAIN_SECONDS = 120


def receiver_app(secrets: dict[str, str]) -> Any:
    """An ASGI app: POST /d{n} verifies with destination n's secret; GET /arrivals returns what came."""
    import orjson
    import stripe

    arrivals: list[tuple[str, str, float]] = []
    refused = 0

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal refused
        if scope["type"] != "http":
            return
        if scope["method"] == "GET":
            body = orjson.dumps({"arrivals": arrivals, "refused": refused})
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"json")]})
            await send({"type": "http.response.body", "body": body})
            return
        payload, more = b"", True
        while more:
            message = await receive()
            payload, more = payload + message.get("body", b""), message.get("more_body", False)
        header = dict(scope["headers"]).get(b"stripe-signature", b"").decode()
        try:
            stripe.WebhookSignature.verify_header(payload.decode(), header, secrets[scope["path"]], tolerance=300)
            status = 200
            arrivals.append((scope["path"], orjson.loads(payload)["id"], time.time()))
        except (stripe.SignatureVerificationError, KeyError):
            status, refused = 400, refused + 1
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"{}"})

    return app


def run_receiver(port: int) -> None:
    import uvicorn

    secrets = {f"/d{n}": secret for n, secret in enumerate(FORWARD_SECRETS)}
    uvicorn.run(receiver_app(secrets), host="127.0.0.1", port=port, log_level="warning", access_log=False)


def start_receiver(port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen([sys.executable, __file__, "receiver", str(port)])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/arrivals", timeout=1)
            return process
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("the receiver did not start")


def arrivals(port: int) -> tuple[list[tuple[str, str, float]], int]:
    answer = httpx.get(f"http://127.0.0.1:{port}/arrivals", timeout=30).json()
    return [tuple(row) for row in answer["arrivals"]], answer["refused"]


def configure(workdir: Path, destinations: int, receiver_port: int) -> None:
    tables = "".join(
        f'[[forward]]\nname = "d{n}"\nurl = "http://127.0.0.1:{receiver_port}/d{n}"\nsecret_env = "FORWARD_BENCH_{n}"\n'
        for n in range(destinations)
    )
    (workdir / "stripe-inbox.toml").write_text(tables)


def wait_ready(port: int) -> None:
    """serve listens before it has opened the inbox; /healthz answers once it has."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit("serve did not become ready")


def stored(db: Path) -> dict[str, float]:
    with sqlite3.connect(db) as connection:
        return dict(connection.execute("SELECT id, received_at FROM events").fetchall())


def wait_for_arrivals(port: int, expected: int, timeout: float) -> tuple[list[tuple[str, str, float]], int]:
    deadline = time.monotonic() + timeout
    while True:
        came, refused = arrivals(port)
        if len(came) >= expected or time.monotonic() > deadline:
            return came, refused
        time.sleep(0.25)


def run(name: str, connections: int, duration: float, events: int) -> dict[str, Any]:
    destinations = DESTINATIONS[name]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        requests, warmup = workdir / "requests.tsv", workdir / "warmup.tsv"
        write_requests(requests, events)
        write_requests(warmup, 2000)
        receiver_port = free_port()
        receiver = start_receiver(receiver_port) if destinations else None
        port = free_port()  # taken once the receiver listens, so the two never get the same one
        configure(workdir, destinations, receiver_port)
        server = start("stripe-inbox", port, workdir)
        db = workdir / "bench.db"
        try:
            wait_ready(port)
            wrk(port, connections, 1, warmup)
            before = len(stored(db))
            if receiver is not None:  # the warm-up's forwards are out of the way before the measured run
                wait_for_arrivals(receiver_port, before * destinations, DRAIN_SECONDS)
            result = wrk(port, connections, duration, requests)
            wrk_ended = time.time()
            result["rss_mb"] = round(rss_mb(server.pid), 1)
            received = stored(db)
            forwards: dict[str, Any] = {}
            if receiver is not None:
                backlog = len(received) * destinations - len(arrivals(receiver_port)[0])
                came, refused = wait_for_arrivals(receiver_port, len(received) * destinations, DRAIN_SECONDS)
                received = stored(db)  # with the deliveries wrk had in flight when it stopped
                came, refused = wait_for_arrivals(receiver_port, len(received) * destinations, DRAIN_SECONDS)
                measured = [(path, event_id, at) for path, event_id, at in came[before * destinations :]]
                if not measured:
                    raise SystemExit(f"{name}: nothing was forwarded")
                latencies = sorted((at - received[event_id]) * 1000 for _, event_id, at in measured)
                span = measured[-1][2] - measured[0][2]
                forwards = {
                    "forwarded": len(measured),
                    "expected": (len(received) - before) * destinations,
                    "refused": refused,
                    "duplicates": len(came) - len({(path, event_id) for path, event_id, _ in came}),
                    "backlog_at_wrk_end": backlog,
                    "drained_after_s": round(measured[-1][2] - wrk_ended, 2),
                    "forwards_per_s": round(len(measured) / span) if span > 0 else None,
                    "p50_ms": round(statistics.quantiles(latencies, n=100)[49], 1),
                    "p99_ms": round(statistics.quantiles(latencies, n=100)[98], 1),
                }
        finally:
            server.terminate()
            server.wait(timeout=30)
            if receiver is not None:
                receiver.terminate()
                receiver.wait(timeout=30)
        ok = result["requests"] - result["non2xx"]
        return {
            "config": name,
            "destinations": destinations,
            "connections": connections,
            "rps": round(ok / (result["duration_us"] / 1e6)),
            "ingress_p99_ms": round(result["p99_us"] / 1000, 2),
            "rss_mb": result["rss_mb"],
            **forwards,
        }


def light(rate: float, count: int) -> dict[str, Any]:
    """One destination; deliveries posted one at a time at `rate` per second; e2e latency of each forward."""
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        write_requests(workdir / "requests.tsv", count)
        receiver_port = free_port()
        receiver = start_receiver(receiver_port)
        port = free_port()
        configure(workdir, 1, receiver_port)
        server = start("stripe-inbox", port, workdir)
        try:
            wait_ready(port)
            lines = (workdir / "requests.tsv").read_text().splitlines()
            with httpx.Client() as client:
                began = time.monotonic()
                for number, line in enumerate(lines):
                    signature, body = line.split("\t", 1)
                    headers = {"Stripe-Signature": signature, "Content-Type": "application/json"}
                    client.post(f"http://127.0.0.1:{port}/webhooks/stripe", content=body, headers=headers)
                    time.sleep(max(0.0, began + (number + 1) / rate - time.monotonic()))
            came, refused = wait_for_arrivals(receiver_port, count, DRAIN_SECONDS)
            received = stored(workdir / "bench.db")
        finally:
            server.terminate()
            server.wait(timeout=30)
            receiver.terminate()
            receiver.wait(timeout=30)
    latencies = statistics.quantiles([(at - received[event_id]) * 1000 for _, event_id, at in came], n=100)
    return {
        "rate": rate,
        "forwarded": len(came),
        "refused": refused,
        "p50_ms": round(latencies[49], 1),
        "p99_ms": round(latencies[98], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=1, help="none/one/four, this many times, interleaved")
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--light-rates", type=float, nargs="*", default=[50, 200], metavar="PER_S")
    parser.add_argument("--light-seconds", type=float, default=10)
    args = parser.parse_args()
    for n, secret in enumerate(FORWARD_SECRETS):
        os.environ[f"FORWARD_BENCH_{n}"] = secret
    load = os.getloadavg()[0]
    print(f"{platform.node()}: {os.cpu_count()} cores, load average {load:.1f}, Python {platform.python_version()}")
    results = []
    for _ in range(args.rounds):
        for name in DESTINATIONS:
            result = run(name, args.connections, args.duration, args.events)
            results.append(result)
            print(json.dumps(result), flush=True)
    print(
        "\n| destinations | ingress req/s | vs none | ingress p99 ms | forwards/s | backlog at end | "
        "e2e p50 ms | e2e p99 ms |\n|---|---|---|---|---|---|---|---|"
    )
    for round_start in range(0, len(results), len(DESTINATIONS)):
        same = results[round_start : round_start + len(DESTINATIONS)]
        none = same[0]["rps"]
        for r in same:
            print(
                f"| {r['destinations']} | {r['rps']:,} | {r['rps'] / none:.0%} | {r['ingress_p99_ms']} | "
                f"{r.get('forwards_per_s') or '-'} | {r.get('backlog_at_wrk_end', '-')} | {r.get('p50_ms', '-')} | "
                f"{r.get('p99_ms', '-')} |"
            )
    if args.light_rates:
        print("\n| light load, one destination | forwards | e2e p50 ms | e2e p99 ms |\n|---|---|---|---|")
    for rate in args.light_rates:
        result = light(rate, int(rate * args.light_seconds))
        print(
            f"| {rate:g} deliveries/s | {result['forwarded']:,} | {result['p50_ms']} | {result['p99_ms']} |", flush=True
        )
    print(
        f"reproduce: {sys.executable} bench/forward_bench.py --duration {args.duration:g} "
        f"--connections {args.connections} --rounds {args.rounds}"
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["receiver"]:
        run_receiver(int(sys.argv[2]))
    else:
        main()
