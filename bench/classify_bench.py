"""How long `classify` takes per event, over every real fixture and the bundled samples.

    .venv/bin/python bench/classify_bench.py [--rounds 2000]

Prints p50/p90/p99 per event in microseconds, with the policy the default config would use and with a
high-value threshold and three [[rules]] loaded, as in production.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

from stripe_inbox.classify import classify
from stripe_inbox.policy import Policy, Rule
from stripe_inbox.stripe.samples import SAMPLES, sample_event

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "stripe" / "events"
RULES = [
    Rule.model_validate(
        {
            "match": ["invoice.payment_failed", "charge.failed"],
            "when": {"amount": {"gte": 100}},
            "priority": "urgent",
            "actions": [{"tool": "ack_event", "outcome": "escalated"}],
        }
    ),
    Rule.model_validate(
        {
            "match": ["charge.dispute.*"],
            "when": {"dispute_reason": ["fraudulent"]},
            "actions": [{"tool": "create_ticket", "title": "Fraud dispute: {summary}"}],
        }
    ),
    Rule.model_validate({"match": ["invoice.*"], "when": {"data.object.billing_reason": "manual"}, "priority": "low"}),
]


def measure(events: list[dict], policy: Policy | None, rules: list[Rule] | None, rounds: int) -> list[float]:
    timings = []
    for _ in range(rounds):
        for event in events:
            started = time.perf_counter_ns()
            classify(event, policy, rules)
            timings.append((time.perf_counter_ns() - started) / 1000)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    events = [json.loads(sample_event(event_type)) for event_type in SAMPLES]
    events += [json.loads(path.read_bytes()) for path in sorted(FIXTURES.glob("*.json"))]
    print(
        f"classify: {len(events)} events x {args.rounds} rounds, Python {platform.python_version()}, "
        f"{platform.machine()}"
    )
    for label, policy, rules in [
        ("default policy", None, None),
        ("high_value + 3 rules", Policy(high_value={"usd": 100, "eur": 100}), RULES),
    ]:
        measure(events, policy, rules, 50)  # warm up
        timings = sorted(measure(events, policy, rules, args.rounds))
        quantiles = statistics.quantiles(timings, n=100)
        print(
            f"  {label:22} p50 {quantiles[49]:7.1f} us   p90 {quantiles[89]:7.1f} us   "
            f"p99 {quantiles[98]:7.1f} us   ({len(timings)} calls)"
        )
    print(f"reproduce: {sys.executable} bench/classify_bench.py --rounds {args.rounds}")


if __name__ == "__main__":
    main()
