"""Stripe's side: `trigger` (a signed sample event, no Stripe account needed), `register` (the webhook endpoint on
Stripe) and `backfill` (what the inbox missed, from Stripe's Events API)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

import anyio
import httpx

from ..errors import ConfigError, InboxError
from ..inbox import Inbox
from ..stripe.samples import SAMPLES, sample_event
from ..stripe.signature import sign
from .common import Commands, add_command, positive, settings_of, with_inbox

if TYPE_CHECKING:
    from ..stripe.backfill import BackfillResult


def add_trigger(commands: Commands) -> None:
    trigger = add_command(commands, "trigger", run_trigger, "sign a realistic sample event and post it to the ingress")
    trigger.add_argument("event_type", metavar="EVENT_TYPE", help=f"one of: {', '.join(SAMPLES)}")
    trigger.add_argument("--url", default="http://127.0.0.1:8000/webhooks/stripe")
    trigger.add_argument("--secret", help="signing secret (default: the configured or generated one)")
    trigger.add_argument("--count", type=positive, default=1)


def add_register(commands: Commands) -> None:
    register = add_command(
        commands, "register", run_register, "create this inbox's webhook endpoint on Stripe, keep its secret"
    )
    register.add_argument(
        "--url", required=True, metavar="PUBLIC_URL", help="e.g. https://inbox.example.com/webhooks/stripe"
    )
    register.add_argument("--events", nargs="+", metavar="T", help="event types (default: the configured filter)")
    register.add_argument("--force", action="store_true", help="create it even if this URL already has an endpoint")
    register.add_argument("--dry-run", action="store_true", help="show the request and send nothing")


def add_backfill(commands: Commands) -> None:
    backfill = add_command(commands, "backfill", run_backfill, "fetch events the inbox missed from Stripe's Events API")
    since = backfill.add_mutually_exclusive_group()
    since.add_argument("--since", metavar="DATE", help="YYYY-MM-DD (default: where the last backfill ended)")
    since.add_argument("--days", type=float, metavar="N", help="look back N days (at most 30)")
    backfill.add_argument("--undelivered-only", action="store_true", help="only events Stripe could not deliver")
    backfill.add_argument("--json", action="store_true", help="print the result as JSON")


def run_trigger(args: argparse.Namespace) -> None:
    if args.event_type not in SAMPLES:
        raise ConfigError(f"no sample for {args.event_type!r}; samples exist for: {', '.join(SAMPLES)}")
    secret = args.secret or next(iter(settings_of(args).webhook_secrets), None)
    if secret is None:
        raise ConfigError(
            "no webhook secret to sign with: run `stripe-inbox serve` once (it generates one), "
            "set STRIPE_WEBHOOK_SECRET, or pass --secret"
        )
    failures = 0
    with httpx.Client(timeout=10) as client:
        for number in range(1, args.count + 1):
            payload = sample_event(args.event_type)
            event_id = json.loads(payload)["id"]
            try:
                response = client.post(
                    args.url,
                    content=payload,
                    headers={"Stripe-Signature": sign(payload, secret), "Content-Type": "application/json"},
                )
            except httpx.HTTPError as error:
                raise InboxError(f"cannot post to {args.url}: {error} (is `stripe-inbox serve` running?)") from None
            outcome = response.json() if response.headers.get("content-type") == "application/json" else {}
            failures += response.status_code != 200
            if args.count == 1 or response.status_code != 200:
                detail = outcome.get("message") or next(
                    (result for result in ("duplicate", "filtered") if outcome.get(result)), "stored"
                )
                print(f"{event_id} {args.event_type} -> {response.status_code} {detail}")
            elif number % max(1, args.count // 10) == 0 or number == args.count:
                print(f"sent {number}/{args.count}", file=sys.stderr)
    if failures:
        raise InboxError(f"{failures} of {args.count} deliveries were not accepted")


def run_register(args: argparse.Namespace) -> None:
    from ..stripe.register import register

    settings = settings_of(args)
    done = anyio.run(lambda: register(settings, args.url, args.events, args.force, args.dry_run))
    for note in done.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.dry_run:
        print(f"dry run: would send\n{done.request}")
        return
    print(f"created webhook endpoint {done.endpoint_id} for {done.url} ({', '.join(done.enabled_events)})")
    print(f"its signing secret is stored in {done.secret_file} (mode 0600) and accepted from now on")
    print("next: (re)start `stripe-inbox serve`, then send a test event from the Stripe dashboard")


def run_backfill(args: argparse.Namespace) -> None:
    from ..stripe.api import StripeAPI
    from ..stripe.backfill import backfill, start_of

    async def work(inbox: Inbox) -> None:
        api = StripeAPI(inbox.settings.api_key, inbox.settings.api_base)
        result = await backfill(inbox, api, start_of(args.since, args.days), args.undelivered_only, _progress)
        if args.json:
            print(result.model_dump_json(indent=2))
            return
        resumed = " (resumed an interrupted run)" if result.resumed else ""
        print(
            f"backfill since {result.since:%Y-%m-%d %H:%M:%S} UTC{resumed}: {result.new} new, "
            f"{result.already_present} already present, {result.filtered} filtered"
        )

    with_inbox(args, work)


def _progress(result: BackfillResult) -> None:
    print(
        f"page {result.pages}: {result.new} new, {result.already_present} already present, {result.filtered} filtered",
        file=sys.stderr,
        flush=True,
    )
