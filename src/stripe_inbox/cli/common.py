"""What every command shares: how a command is added (with --db and --config), its settings, an open inbox for
its work, and the table it prints."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, TypeAlias

import anyio

from ..inbox import Inbox, open_inbox
from ..settings import Settings, load_settings

ACTOR = "cli"  # who the audit trail says did what a command changed

Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Run = Callable[[argparse.Namespace], None]
Work = Callable[[Inbox], Coroutine[Any, Any, None]]


def add_command(commands: Commands, name: str, run: Run, help: str) -> argparse.ArgumentParser:
    """A command that touches the inbox or the settings, and so takes --db and --config."""
    command = commands.add_parser(name, help=help, description=help)
    command.add_argument(
        "--db", help="SQLite path or postgresql:// URL (default ./stripe-inbox.db; env STRIPE_INBOX_DB)"
    )
    command.add_argument("--config", help="TOML settings file (default ./stripe-inbox.toml if present)")
    command.set_defaults(run=run)
    return command


def add_group(commands: Commands, name: str, help: str) -> Commands:
    """A command whose actions are commands of their own (`events list`, `approvals approve ID`…)."""
    return commands.add_parser(name, help=help).add_subparsers(dest=f"{name}_command", required=True, metavar="ACTION")


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def settings_of(args: argparse.Namespace) -> Settings:
    return load_settings(args.config, db=args.db)


def with_inbox(args: argparse.Namespace, work: Work) -> None:
    async def run() -> None:
        async with open_inbox(settings_of(args)) as inbox:
            await work(inbox)

    anyio.run(run)


def print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=False)]
    for row in (header, *rows):
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def when(at: float | None) -> str:
    """An epoch time as a table shows it, in UTC (the header says so); None: never."""
    return "never" if at is None else datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S")
