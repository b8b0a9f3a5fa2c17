"""The `stripe-inbox` command line. Each area's module adds its own commands beside their handlers; this one puts
them in one parser, in the order `--help` lists them, and turns the inbox's errors into exit codes."""

from __future__ import annotations

import argparse
import logging
import sys

from .. import __version__
from ..errors import ConfigError, InboxError, InvalidArgument
from . import approvals, client_config, events, forward, serve, stripe, subscriptions, tokens

__all__ = ["build_parser", "main"]


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        args.run(args)
    except ConfigError as error:
        sys.exit(f"stripe-inbox: configuration error: {error}")
    except InvalidArgument as error:  # a usage error, as argparse's own are
        print(f"stripe-inbox: {error}", file=sys.stderr)
        sys.exit(2)
    except InboxError as error:
        sys.exit(f"stripe-inbox: {error}")
    except KeyboardInterrupt:
        sys.exit(130)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stripe-inbox", description="Stripe webhooks as an inbox for AI agents")
    parser.add_argument("--version", action="version", version=f"stripe-inbox {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve.add_serve(commands)
    serve.add_mcp(commands)
    stripe.add_trigger(commands)
    forward.add_replay(events.add_events(commands))
    stripe.add_register(commands)
    stripe.add_backfill(commands)
    client_config.add_claude_config(commands)
    approvals.add_approvals(commands)
    tokens.add_tokens(commands)
    subscriptions.add_subscriptions(commands)
    forward.add_forward(commands)
    return parser
