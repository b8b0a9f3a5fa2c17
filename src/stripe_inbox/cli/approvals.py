"""`approvals list | approve ID | reject ID`: notifications and tickets that wait for a person."""

from __future__ import annotations

import argparse
import json

from ..inbox import Inbox
from ..models import Approval
from .common import ACTOR, Commands, add_command, add_group, print_table, with_inbox


def add_approvals(commands: Commands) -> None:
    approvals = add_group(commands, "approvals", "notifications and tickets waiting for a person to approve them")
    waiting = add_command(approvals, "list", run_list, "list what waits for approval, oldest first")
    waiting.add_argument("--json", action="store_true")
    approve = add_command(approvals, "approve", run_approve, "approve it: it is sent at once")
    approve.add_argument("approval_id", metavar="ID", type=int)
    reject = add_command(approvals, "reject", run_reject, "reject it: it is never sent")
    reject.add_argument("approval_id", metavar="ID", type=int)


def run_list(args: argparse.Namespace) -> None:
    async def work(inbox: Inbox) -> None:
        waiting = await inbox.approvals.waiting()
        if args.json:
            print(json.dumps([approval.model_dump(mode="json") for approval in waiting], indent=2))
            return
        if not waiting:
            print("nothing awaits approval")
            return
        rows = [(str(a.id), a.kind, a.target, _to(a), a.event_id or "", _what(a)) for a in waiting]
        print_table(("ID", "KIND", "VIA", "TO", "EVENT", "WHAT"), rows)
        print(f"{len(waiting)} awaiting approval: stripe-inbox approvals approve ID | reject ID")

    with_inbox(args, work)


def run_approve(args: argparse.Namespace) -> None:
    async def work(inbox: Inbox) -> None:
        approval = await inbox.approvals.approve(args.approval_id, ACTOR)
        why = f" ({approval.reason})" if approval.reason else ""
        print(f"approval {approval.id} approved: {approval.status}{why}")

    with_inbox(args, work)


def run_reject(args: argparse.Namespace) -> None:
    async def work(inbox: Inbox) -> None:
        approval = await inbox.approvals.reject(args.approval_id, ACTOR)
        print(f"approval {approval.id} rejected: nothing will be sent")

    with_inbox(args, work)


def _to(approval: Approval) -> str:
    if approval.notification is not None:
        return approval.notification.recipient or approval.target
    return approval.target


def _what(approval: Approval) -> str:
    text = approval.notification.message if approval.notification else approval.ticket.title if approval.ticket else ""
    return text if len(text) <= 60 else text[:59] + "…"
