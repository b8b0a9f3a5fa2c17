"""`subscriptions list [--json] | revoke ID`: the MCP Events webhook subscriptions clients made."""

from __future__ import annotations

import argparse
import json

from ..event_webhooks.subscriptions import WebhookSubscriptions
from ..inbox import Inbox
from .common import ACTOR, Commands, add_command, add_group, print_table, when, with_inbox


def add_subscriptions(commands: Commands) -> None:
    subscriptions = add_group(commands, "subscriptions", "the MCP Events webhook subscriptions clients made")
    listing = add_command(subscriptions, "list", run_list, "list the webhook subscriptions not ended")
    listing.add_argument("--all", action="store_true", help="also ended ones")
    listing.add_argument("--json", action="store_true")
    revoke = add_command(subscriptions, "revoke", run_revoke, "end a subscription; its callback is told once")
    revoke.add_argument("subscription_id", metavar="ID", help="sub_… as `subscriptions list` shows it")


def run_list(args: argparse.Namespace) -> None:
    async def work(inbox: Inbox) -> None:
        found = await inbox.store.subscriptions(ended=args.all)
        if args.json:
            print(json.dumps([subscription.public() for subscription in found], indent=2))
            return
        if not found:
            print("no webhook subscriptions" if args.all else "no live webhook subscriptions")
            return
        rows = [
            (
                each.id,
                each.principal,
                each.name,
                json.dumps(each.arguments, separators=(",", ":")),
                each.url,
                each.state if each.ended_reason is None else f"{each.state}: {each.ended_reason}",
                when(each.last_delivery_at),
                str(each.failures),
            )
            for each in found
        ]
        header = ("ID", "PRINCIPAL", "EVENT", "ARGUMENTS", "CALLBACK", "STATE", "LAST DELIVERY (UTC)", "FAILURES")
        print_table(header, rows)

    with_inbox(args, work)


def run_revoke(args: argparse.Namespace) -> None:
    async def work(inbox: Inbox) -> None:
        ended = await WebhookSubscriptions(inbox, loopback_http=False).revoke(args.subscription_id, ACTOR)
        print(f"revoked {ended.id} ({ended.name} to {ended.url}); its callback is told once by a running serve")

    with_inbox(args, work)
