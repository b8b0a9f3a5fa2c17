"""`claude-config --client …`: each MCP client's entry, and a session through the entry it prints."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from .conftest import cli_env, run_cli, start_server, stop_server

pytestmark = pytest.mark.anyio
TOKEN = "token-for-the-client-configs"
HTTP_CLIENTS = ["claude-code", "vscode", "cursor"]


def client_config(db: Path, *args: str, **env: str) -> dict[str, Any]:
    return json.loads(run_cli("claude-config", "--db", str(db), *args, env=cli_env(db, **env), cwd=db.parent).stdout)


def entry(config: dict[str, Any]) -> dict[str, Any]:
    servers = config.get("servers") or config["mcpServers"]
    assert list(servers) == ["stripe-inbox"]
    return servers["stripe-inbox"]


def test_claude_desktop_stays_the_default(tmp_path: Path) -> None:
    db = tmp_path / "inbox.db"
    assert client_config(db, "--client", "claude-desktop") == client_config(db)


def test_stdio_entries_start_what_claude_desktop_starts(tmp_path: Path) -> None:
    db = tmp_path / "inbox.db"
    desktop = entry(client_config(db))
    assert Path(desktop["command"]).is_absolute()
    for client in HTTP_CLIENTS:
        stdio = entry(client_config(db, "--client", client, "--transport", "stdio"))
        assert (stdio["command"], stdio["args"]) == (desktop["command"], desktop["args"])
        assert stdio.get("type", "stdio") == "stdio"


@pytest.mark.parametrize("client", HTTP_CLIENTS)
def test_http_entries_without_a_token_on_loopback(tmp_path: Path, client: str) -> None:
    config = client_config(tmp_path / "inbox.db", "--client", client)
    assert "inputs" not in config
    assert entry(config) == ({"url": "http://127.0.0.1:8000/mcp"} | ({} if client == "cursor" else {"type": "http"}))


@pytest.mark.parametrize("client", HTTP_CLIENTS)
def test_a_public_url_always_asks_for_the_token(tmp_path: Path, client: str) -> None:
    config = client_config(tmp_path / "inbox.db", "--client", client, "--url", "https://inbox.example.com/mcp")
    assert entry(config)["headers"]["Authorization"].startswith("Bearer ${")


async def test_http_entries_connect_with_the_token_header(tmp_path: Path) -> None:
    db = tmp_path / "inbox.db"
    server = start_server(db, tmp_path, cli_env(db, STRIPE_INBOX_MCP_TOKEN=TOKEN))
    try:
        for client in HTTP_CLIENTS:
            printed = run_cli(
                "claude-config",
                "--client",
                client,
                "--url",
                server.mcp_url,
                env=cli_env(db, STRIPE_INBOX_MCP_TOKEN=TOKEN),
                cwd=tmp_path,
            )
            assert TOKEN not in printed.stdout + printed.stderr  # the client fills it in; no file holds it
            config = json.loads(printed.stdout)
            headers = entry(config)["headers"]
            reference = re.fullmatch(r"Bearer \$\{(?:env:|input:)?([\w-]+)\}", headers["Authorization"])
            assert reference, headers
            if client == "vscode":
                (prompt,) = config["inputs"]
                assert (prompt["id"], prompt["password"]) == (reference.group(1), True)
            else:
                assert reference.group(1) == "STRIPE_INBOX_MCP_TOKEN"
            # What the client sends once it has filled the reference in.
            sent = {"Authorization": f"Bearer {TOKEN}"}
            async with (
                httpx2.AsyncClient(headers=sent) as http,
                Client(streamable_http_client(entry(config)["url"], http_client=http), mode="legacy") as session,
            ):
                assert (await session.call_tool("get_stats", {})).structured_content["total"] == 0
    finally:
        stop_server(server)


def test_claude_code_also_gets_the_command_line(tmp_path: Path) -> None:
    url = "https://inbox.example.com/mcp"
    env = cli_env(tmp_path / "inbox.db")
    printed = run_cli("claude-config", "--client", "claude-code", "--url", url, env=env, cwd=tmp_path)
    assert printed.stderr.strip() == (
        "or run: claude mcp add --transport http stripe-inbox https://inbox.example.com/mcp "
        '--header "Authorization: Bearer $STRIPE_INBOX_MCP_TOKEN"'
    )


def test_claude_desktop_has_no_http_entry(tmp_path: Path) -> None:
    db = tmp_path / "inbox.db"
    refused = run_cli("claude-config", "--transport", "http", env=cli_env(db), cwd=tmp_path, check=False)
    assert refused.returncode != 0 and "over stdio" in refused.stderr
