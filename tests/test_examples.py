"""The examples work as documented."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .conftest import Server, cli_env, run_cli

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_headless_agent_drains_the_inbox(server: Server, tmp_path: Path) -> None:
    env = cli_env(tmp_path / "inbox.db")
    for event_type in ("invoice.payment_failed", "charge.dispute.created", "invoice.paid"):
        run_cli("trigger", event_type, "--url", server.webhook_url, env=env, cwd=tmp_path)
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "agent.py"), "--url", server.mcp_url],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "inbox drained: 3 events worked" in result.stdout
    assert "payment_failed/high, escalated" in result.stdout and "dispute/urgent, escalated" in result.stdout
    assert json.loads(run_cli("events", "list", "--json", env=env, cwd=tmp_path).stdout)["total"] == 0
    acked = json.loads(run_cli("events", "list", "--status", "acked", "--json", env=env, cwd=tmp_path).stdout)
    dispute = next(e for e in acked["events"] if e["type"] == "charge.dispute.created")
    detail = json.loads(run_cli("events", "show", dispute["id"], "--json", env=env, cwd=tmp_path).stdout)
    assert [a["action"] for a in detail["audit"]] == [
        "classify",
        "create_ticket",
        "notify",
        "deliver_notification",
        "ack_event",
    ]
    assert detail["tickets"][0]["priority"] == "urgent"
    shown = run_cli("events", "show", dispute["id"], env=env, cwd=tmp_path).stdout
    assert "notification #1 via log" in shown and "(sent after 1 attempt)" in shown


def test_claude_desktop_example_is_valid_json() -> None:
    config = json.loads((EXAMPLES / "claude_desktop_config.json").read_text())
    assert config["mcpServers"]["stripe-inbox"]["args"][0] == "mcp"
