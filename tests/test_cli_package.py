"""The command line as its areas assemble it: every command and flag the contract names (DESIGN.md §3, §8, §9)
is in the one parser, in the order `--help` lists them, and each takes --db and --config."""

from __future__ import annotations

import argparse

import pytest

from stripe_inbox.cli import build_parser, main

COMMANDS = [
    "serve",
    "mcp",
    "trigger",
    "events",
    "register",
    "backfill",
    "claude-config",
    "approvals",
    "tokens",
    "subscriptions",
    "forward",
]
ACTIONS = {
    "events": ["list", "show", "ack", "prune", "timeline", "replay"],
    "approvals": ["list", "approve", "reject"],
    "tokens": ["list", "revoke"],
    "subscriptions": ["list", "revoke"],
    "forward": ["secret"],
}
CONTRACT_LINES = [
    ["serve", "--host", "127.0.0.1", "--port", "8000"],
    ["mcp", "--channel", "--channel-events", "invoice.*", "--channel-min-priority", "high"],
    ["trigger", "invoice.paid", "--url", "http://127.0.0.1:8000/webhooks/stripe", "--secret", "whsec_x"],
    ["trigger", "invoice.paid", "--count", "3"],
    ["events", "list", "--status", "acked", "--type", "invoice.paid", "--limit", "5", "--json"],
    [
        *["events", "list", "--query", "jo", "--object", "in_1", "--email", "a@b.c", "--amount-gte", "5"],
        *["--amount-lte", "9", "--currency", "usd", "--created-after", "2026-01-01", "--created-before", "2026-02-01"],
        *["--livemode", "--customer", "cus_1", "--account", "acct_1"],
    ],
    ["events", "show", "evt_1", "--json"],
    ["events", "ack", "evt_1", "--outcome", "ignored", "--note", "seen"],
    ["events", "prune", "--acked-older-than", "30"],
    ["events", "timeline", "in_1", "--json"],
    ["events", "replay", "evt_1", "evt_2", "--to", "hook"],
    ["events", "replay", "--since", "2026-01-01", "--until", "2026-02-01", "--type", "invoice.paid", "--to", "hook"],
    ["register", "--url", "https://x.example/webhooks/stripe", "--events", "invoice.paid", "--force", "--dry-run"],
    ["backfill", "--days", "3", "--undelivered-only", "--json"],
    ["claude-config", "--client", "vscode", "--transport", "http", "--url", "http://127.0.0.1:8000/mcp"],
    ["approvals", "list", "--json"],
    ["approvals", "approve", "7"],
    ["approvals", "reject", "7"],
    ["tokens", "list", "--all", "--json"],
    ["tokens", "revoke", "tok_1"],
    ["forward", "--to", "http://localhost:4242/webhook", "--secret", "whsec_x", "--events", "invoice.*"],
    ["forward", "secret", "dev"],
]


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_every_area_adds_its_commands_in_the_help_order() -> None:
    commands = subcommands(build_parser())
    assert list(commands) == COMMANDS
    assert {name: list(subcommands(commands[name])) for name in ACTIONS} == ACTIONS


@pytest.mark.parametrize("line", CONTRACT_LINES, ids=lambda line: " ".join(line[:2]))
def test_each_contract_line_parses_to_a_handler_with_db_and_config(line: list[str]) -> None:
    parsed = build_parser().parse_args([*line, "--db", "inbox.db", "--config", "inbox.toml"])
    assert callable(parsed.run)
    assert (parsed.db, parsed.config) == ("inbox.db", "inbox.toml")


def test_a_bad_flag_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["events", "list", "--limit", "0"])
    assert exited.value.code == 2
    assert "argument --limit: must be 1 or more" in capsys.readouterr().err
