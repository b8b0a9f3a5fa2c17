"""`claude-config`: the entry an MCP client's config file takes for this inbox, over stdio or HTTP."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigError
from ..settings import LOOPBACK_HOSTS, Settings
from ..stores import is_server_url
from .common import Commands, add_command, settings_of

SERVER_NAME = "stripe-inbox"
CLIENTS = ("claude-desktop", "claude-code", "vscode", "cursor")
DEFAULT_MCP_URL = "http://127.0.0.1:8000/mcp"
TOKEN_VARIABLE = "STRIPE_INBOX_MCP_TOKEN"
VSCODE_TOKEN_INPUT = "stripe-inbox-token"
# How each client's config file names a value it fills in when it connects, so the token stays out of the file.
TOKEN_REFERENCES = {
    "claude-code": f"${{{TOKEN_VARIABLE}}}",
    "cursor": f"${{env:{TOKEN_VARIABLE}}}",
    "vscode": f"${{input:{VSCODE_TOKEN_INPUT}}}",
}


def add_claude_config(commands: Commands) -> None:
    config = add_command(commands, "claude-config", run_claude_config, "print an MCP client's entry for this inbox")
    config.add_argument("--client", choices=CLIENTS, default="claude-desktop", help="default: claude-desktop")
    config.add_argument(
        "--transport",
        choices=["stdio", "http"],
        help="stdio starts `stripe-inbox mcp`; http connects to `serve` (default: stdio for claude-desktop, "
        "http for the others)",
    )
    config.add_argument("--url", default=DEFAULT_MCP_URL, help=f"serve's MCP endpoint (default {DEFAULT_MCP_URL})")


def run_claude_config(args: argparse.Namespace) -> None:
    settings = settings_of(args)
    transport = args.transport or ("stdio" if args.client == "claude-desktop" else "http")
    if args.client == "claude-desktop" and transport == "http":
        raise ConfigError("Claude Desktop starts the servers in its config file over stdio: use --transport stdio")
    entry: dict[str, Any]
    if transport == "stdio":
        entry = _stdio_entry(args, settings)
        command_line = f"claude mcp add {SERVER_NAME} -- {shlex.join([entry['command'], *entry['args']])}"
    else:
        entry = {"url": args.url}
        command_line = f"claude mcp add --transport http {SERVER_NAME} {shlex.quote(args.url)}"
        # A /mcp beyond loopback always wants the token, whether or not this machine has it configured.
        if settings.mcp_token or urlsplit(args.url).hostname not in LOOPBACK_HOSTS:
            entry["headers"] = {"Authorization": f"Bearer {TOKEN_REFERENCES[args.client]}"}
            command_line += f' --header "Authorization: Bearer ${TOKEN_VARIABLE}"'
    print(json.dumps(_client_config(args.client, transport, entry), indent=2, ensure_ascii=False))
    if args.client == "claude-code":
        print(f"or run: {command_line}", file=sys.stderr)


def _stdio_entry(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    executable = Path(sys.executable).with_name("stripe-inbox")
    command, prefix = (str(executable), []) if executable.exists() else (sys.executable, ["-m", "stripe_inbox"])
    db = settings.db if is_server_url(settings.db) else str(Path(settings.db).expanduser().resolve())
    arguments = [*prefix, "mcp", "--db", db]
    if args.config:
        arguments += ["--config", str(Path(args.config).resolve())]
    return {"command": command, "args": arguments}


def _client_config(client: str, transport: str, entry: dict[str, Any]) -> dict[str, Any]:
    """The entry in the shape each client's config file takes."""
    if client in ("claude-desktop", "cursor"):  # Cursor tells the transports apart by `command` or `url`
        return {"mcpServers": {SERVER_NAME: entry}}
    typed = {"type": transport, **entry}
    if client == "claude-code":
        return {"mcpServers": {SERVER_NAME: typed}}
    config: dict[str, Any] = {"servers": {SERVER_NAME: typed}}
    if "headers" in entry:  # VS Code asks for the token once and keeps it in its secret storage
        config["inputs"] = [
            {
                "type": "promptString",
                "id": VSCODE_TOKEN_INPUT,
                "description": f"stripe-inbox access token ({TOKEN_VARIABLE})",
                "password": True,
            }
        ]
    return config
