"""The official MCP conformance suite's header checks (SEP-2243) on /mcp: in-process, and the suite itself against
`serve` where Node 22 and npx are at hand."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import httpx
import mcp.types as types
import pytest

from stripe_inbox import Inbox
from stripe_inbox.mcp import create_mcp_server
from stripe_inbox.web.app import create_app

from .conftest import Server

MODERN = "2026-07-28"
# 0.1.x releases have no http-header-validation scenario; it came with the 2026-07-28 requirements.
CONFORMANCE_PACKAGE = "@modelcontextprotocol/conformance@0.2.0-alpha.12"
CONFORMANCE_TIMEOUT = 120  # seconds, a first run included: npx fetches the package then


@pytest.mark.anyio
@pytest.mark.parametrize("padding", [" ", "  ", "\t", " \t "])
async def test_standard_headers_are_read_without_surrounding_whitespace(inbox: Inbox, padding: str) -> None:
    """RFC 9110 §5.5: a field value is parsed without its leading and trailing whitespace."""
    server = create_mcp_server(inbox)
    app = create_app(inbox, server)
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {
            "name": "get_stats",
            "arguments": {},
            "_meta": {types.PROTOCOL_VERSION_META_KEY: MODERN, types.CLIENT_CAPABILITIES_META_KEY: {}},
        },
    }

    def headers(name: str) -> dict[str, str]:
        return {
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": f"{padding}{MODERN}{padding}",
            "Mcp-Method": f"{padding}tools/call{padding}",
            "Mcp-Name": f"{padding}{name}{padding}",
        }

    transport = httpx.ASGITransport(app=app)
    async with (
        server.session_manager.run(),
        server.running(),
        httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as http,
    ):
        padded = await http.post("/mcp", json=body, headers=headers("get_stats"))
        wrong = await http.post("/mcp", json=body, headers=headers("get_event"))
    assert padded.status_code == 200, padded.text
    assert padded.json()["result"]["structuredContent"]["total"] == 0
    assert wrong.status_code == 400  # still compared, only without the whitespace
    assert wrong.json()["error"]["code"] == types.HEADER_MISMATCH


def test_the_conformance_suite_header_validation_scenario_passes(server: Server, tmp_path: Path) -> None:
    command = _conformance_command()
    results = tmp_path / "results"
    run = subprocess.run(
        [*command, "server", "--url", server.mcp_url, "--scenario", "http-header-validation", "-o", str(results)],
        capture_output=True,
        text=True,
        timeout=CONFORMANCE_TIMEOUT,
    )
    found = sorted(results.glob("*/checks.json"))
    if not found:
        pytest.skip(f"the conformance suite did not run (npx could not fetch it?): {run.stderr[-500:]}")
    checks = json.loads(found[0].read_text())
    failed = [f"{check['name']}: {check.get('errorMessage')}" for check in checks if check["status"] != "SUCCESS"]
    assert failed == [], run.stdout
    assert "ServerAcceptsWhitespaceHeaderValue" in {check["name"] for check in checks}
    assert run.returncode == 0, run.stdout


def _conformance_command() -> list[str]:
    npx, node = shutil.which("npx"), shutil.which("node")
    if npx is None or node is None:
        pytest.skip("the MCP conformance suite needs Node.js and npx")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    if int(version.lstrip("v").split(".")[0] or 0) < 22:
        pytest.skip(f"{CONFORMANCE_PACKAGE} needs Node.js 22 or newer, found {version}")
    return [npx, "--yes", CONFORMANCE_PACKAGE]
