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
        "claim_events",
        "classify",
        "create_ticket",
        "notify",
        "deliver_notification",
        "ack_event",
    ]
    assert detail["tickets"][0]["priority"] == "urgent"
    shown = run_cli("events", "show", dispute["id"], env=env, cwd=tmp_path).stdout
    assert "notification #1 via log" in shown and "(sent after 1 attempt)" in shown


def test_two_copies_of_the_agent_share_the_inbox_and_work_each_event_once(server: Server, tmp_path: Path) -> None:
    env = cli_env(tmp_path / "inbox.db")
    run_cli("trigger", "invoice.payment_failed", "--count", "12", "--url", server.webhook_url, env=env, cwd=tmp_path)
    copies = [
        subprocess.Popen(
            [sys.executable, str(EXAMPLES / "agent.py"), "--url", server.mcp_url, "--agent", name],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("left", "right")
    ]
    outputs = [copy.communicate(timeout=60) for copy in copies]
    assert [copy.returncode for copy in copies] == [0, 0], [err for _, err in outputs]
    worked = [line.split()[0] for out, _ in outputs for line in out.splitlines() if line.startswith("evt_")]
    assert len(worked) == len(set(worked)) == 12  # every event once, by one copy or the other
    assert json.loads(run_cli("events", "list", "--json", env=env, cwd=tmp_path).stdout)["total"] == 0


def test_claude_desktop_example_is_valid_json() -> None:
    config = json.loads((EXAMPLES / "claude_desktop_config.json").read_text())
    assert config["mcpServers"]["stripe-inbox"]["args"][0] == "mcp"
