"""A small headless agent: drains the stripe-inbox through MCP with simple rules.

    python examples/agent.py --url http://127.0.0.1:8000/mcp      # against `stripe-inbox serve`
    python examples/agent.py --db ./stripe-inbox.db               # starts `stripe-inbox mcp` over stdio
    python examples/agent.py --url … --follow                      # keep waiting for new events

Rules: classify every event; open a ticket for failed payments, disputes and fraud warnings;
post a log notification for urgent ones; ack everything with the classification's outcome.
It claims the events it works (claim_events), so several copies can share one inbox.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from typing import Any

import anyio
from mcp import Client, StdioServerParameters

TICKET_CATEGORIES = {"payment_failed", "dispute", "fraud_warning", "payout_failed"}


async def work_event(client: Client, agent: str, summary: dict[str, Any]) -> str:
    event_id = summary["id"]
    classification = (await client.call_tool("classify", {"event_id": event_id})).structured_content
    outcome = "handled"
    if classification["category"] in TICKET_CATEGORIES:
        await client.call_tool(
            "create_ticket",
            {
                "event_id": event_id,
                "title": classification["summary"],
                "priority": classification["priority"],
                "body": f"Opened by the example agent for {summary['type']}.",
            },
        )
        outcome = "escalated"
    if classification["priority"] == "urgent":
        await client.call_tool(
            "notify",
            {"channel": "log", "event_id": event_id, "message": f"URGENT: {classification['summary']}"},
        )
    if classification["category"] == "other":
        outcome = "ignored"
    await client.call_tool(
        "ack_event",
        {
            "event_id": event_id,
            "outcome": outcome,
            "note": f"{classification['category']}: {classification['summary']}",
            "agent": agent,
        },
    )
    return f"{event_id} {summary['type']} -> {classification['category']}/{classification['priority']}, {outcome}"


async def drain(client: Client, agent: str) -> int:
    handled = 0
    while True:
        claimed = await client.call_tool("claim_events", {"agent": agent, "limit": 10, "lease_seconds": 300})
        if not claimed.structured_content["events"]:
            return handled
        for summary in claimed.structured_content["events"]:
            print(await work_event(client, agent, summary), flush=True)
            handled += 1


async def main(args: argparse.Namespace) -> None:
    server: str | StdioServerParameters = args.url or StdioServerParameters(
        command=sys.executable, args=["-m", "stripe_inbox", "mcp", "--db", args.db]
    )
    async with Client(server) as client:
        while True:
            handled = await drain(client, args.agent)
            print(f"inbox drained: {handled} events worked", flush=True)
            if not args.follow:
                return
            await client.call_tool("wait_for_events", {"timeout_seconds": 60})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="MCP endpoint of `stripe-inbox serve`, e.g. http://127.0.0.1:8000/mcp")
    target.add_argument("--db", help="inbox database; the agent starts `stripe-inbox mcp` over stdio")
    parser.add_argument("--follow", action="store_true", help="after draining, wait for new events")
    parser.add_argument("--agent", default=f"example-{socket.gethostname()}-{os.getpid()}", help="this copy's name")
    anyio.run(main, parser.parse_args())
