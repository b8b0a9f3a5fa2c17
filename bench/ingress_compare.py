"""Ingress throughput of this tree against other commits', side by side: rounds that run each one in
turn (with bare and naive as the yardsticks), so the machine's drift falls on all alike.

    git worktree add --detach /tmp/before HEAD~1
    .venv/bin/python bench/ingress_compare.py /tmp/before/src [more src folders …] [--rounds 3] [--connections 16 64]

Prints every run and each server's median, and the ratio of medians this tree / each other one.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from ingress_bench import run

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("baselines", type=Path, nargs="+", help="the src/ folders of the other commits' trees")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()
    contenders: dict[str, tuple[str, Path | None]] = {"bare": ("bare", None), "naive": ("naive", None)}
    for baseline in args.baselines:  # named by the folder above src/
        contenders[baseline.resolve().parent.name] = ("stripe-inbox", baseline.resolve())
    contenders["this"] = ("stripe-inbox", HERE.parent / "src")
    rps: dict[tuple[str, int], list[int]] = {}
    for round_number in range(1, args.rounds + 1):
        for connections in args.connections:
            for name, (kind, src) in contenders.items():
                result = run(kind, connections, args.duration, args.events, src=src)
                rps.setdefault((name, connections), []).append(result["rps"])
                print(
                    f"round {round_number}  c={connections:<3} {name:<12} {result['rps']:>6} /s  "
                    f"p50 {result['p50_us'] / 1000:.1f} ms  p99 {result['p99_us'] / 1000:.1f} ms"
                    + (
                        f"  unindexed {result['unindexed_at_end']:,}, indexed {result['indexed_after_s']} s after"
                        if "unindexed_at_end" in result
                        else ""
                    ),
                    flush=True,
                )
    print("\nmedians (2xx/s):")
    for connections in args.connections:
        median = {name: statistics.median(rps[name, connections]) for name in contenders}
        print(
            f"  c={connections:<3} "
            + "  ".join(f"{name} {value:,.0f}" for name, value in median.items())
            + "".join(f"  this/{name} {median['this'] / median[name]:.2f}" for name in contenders if name != "this")
        )


if __name__ == "__main__":
    main()
