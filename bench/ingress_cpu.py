"""CPU per request of `serve`, per thread: steadier than throughput on a shared machine, where others' load moves
req/s by 2-3x between runs but a request's CPU far less. Alternates this tree with the others given.

    .venv/bin/python bench/ingress_cpu.py /tmp/before/src [--rounds 3] [--connections 64] [--duration 6]

Each run: a fresh database, /healthz answered, a 3 s warm-up, then wrk; CPU is the user and system ticks of each of
the server's threads (/proc/PID/task/*/stat) over the measured run, divided by the 2xx answered.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

from ingress_bench import free_port, start, write_requests, wrk

HERE = Path(__file__).resolve().parent
TICK = os.sysconf("SC_CLK_TCK")


def thread_ticks(pid: int) -> dict[str, tuple[str, int, int]]:
    """Per thread id: its name, user ticks and system ticks so far."""
    ticks = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        ticks[tid] = (stat[stat.index("(") + 1 : stat.rindex(")")], int(fields[11]), int(fields[12]))
    return ticks


def measure(src: Path, connections: int, duration: float) -> dict[str, float]:
    """µs per 2xx: the whole process, and the event loop's thread (user, system)."""
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        requests, warmup = workdir / "requests.tsv", workdir / "warmup.tsv"
        write_requests(requests, 60_000)
        write_requests(warmup, 3000)
        port = free_port()
        process = start("stripe-inbox", port, workdir, src=src)
        try:
            deadline = time.monotonic() + 120
            while True:  # the port listens before the app is built: start-up stays out of the figures
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).read()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise SystemExit("serve did not answer /healthz") from None
                    time.sleep(0.2)
            wrk(port, connections, 3, warmup)
            before = thread_ticks(process.pid)
            result = wrk(port, connections, duration, requests)
            after = thread_ticks(process.pid)
        finally:
            process.terminate()
            process.wait(timeout=30)
    ok = result["requests"] - result["non2xx"]
    per = 1e6 / TICK / ok

    def spent(tid: str) -> tuple[float, float]:
        _, user, system = after[tid]
        _, user_before, system_before = before.get(tid, ("", 0, 0))
        return (user - user_before) * per, (system - system_before) * per

    loop_user, loop_system = spent(str(process.pid))  # the main thread runs the event loop
    total = sum(sum(spent(tid)) for tid in after)
    rps = ok / (result["duration_us"] / 1e6)
    return {"total": total, "loop_user": loop_user, "loop_system": loop_system, "rps": rps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("baselines", type=Path, nargs="+", help="the src/ folders of the other commits' trees")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=float, default=6)
    args = parser.parse_args()
    trees = {baseline.resolve().parent.name: baseline.resolve() for baseline in args.baselines}
    trees["this"] = HERE.parent / "src"
    totals: dict[str, list[float]] = {name: [] for name in trees}
    for round_number in range(1, args.rounds + 1):
        for name, src in trees.items():
            figures = measure(src, args.connections, args.duration)
            totals[name].append(figures["total"])
            print(
                f"round {round_number}  {name:<16} {figures['total']:5.0f} µs/request  event loop "
                f"{figures['loop_user']:4.0f} user + {figures['loop_system']:3.0f} sys  ~{figures['rps']:,.0f}/s  "
                f"load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
    print("medians: " + "  ".join(f"{name} {statistics.median(values):.0f} µs" for name, values in totals.items()))


if __name__ == "__main__":
    main()
