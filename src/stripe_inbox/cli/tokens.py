"""`tokens list | revoke ID`: the OAuth tokens issued to MCP clients."""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

from ..inbox import Inbox
from .common import ACTOR, Commands, add_command, add_group, print_table, when, with_inbox


def add_tokens(commands: Commands) -> None:
    tokens = add_group(commands, "tokens", "the OAuth tokens issued to MCP clients")
    listing = add_command(tokens, "list", run_list, "list the OAuth tokens still usable")
    listing.add_argument("--all", action="store_true", help="also expired, rotated and revoked ones")
    listing.add_argument("--json", action="store_true")
    revoke = add_command(tokens, "revoke", run_revoke, "revoke a token and the rest of its client's grant")
    revoke.add_argument("token_id", metavar="ID", help="tok_… as `tokens list` shows it")


def run_list(args: argparse.Namespace) -> None:
    async def work(inbox: Inbox) -> None:
        now = time.time()
        tokens = await inbox.store.oauth_tokens(None if args.all else now)
        if args.json:
            print(json.dumps([dataclasses.asdict(token) for token in tokens], indent=2))
            return
        if not tokens:
            print("no OAuth tokens" if args.all else "no usable OAuth tokens")
            return
        rows = [
            (
                token.id,
                token.kind,
                token.client_name or token.client_id,
                " ".join(token.scopes),
                when(token.expires_at),
                when(token.last_used_at or None),
                token.state(now),
            )
            for token in tokens
        ]
        print_table(("ID", "KIND", "CLIENT", "SCOPES", "EXPIRES (UTC)", "LAST USED (UTC)", "STATE"), rows)

    with_inbox(args, work)


def run_revoke(args: argparse.Namespace) -> None:
    async def work(inbox: Inbox) -> None:
        revoked = await inbox.revoke_token(args.token_id, ACTOR)
        print(f"revoked {revoked} token{'s' if revoked != 1 else ''} of the grant {args.token_id} belongs to")

    with_inbox(args, work)
