"""Bytes an agent's context takes for the MCP surface: `tools/list` and the results of `list_events(limit=10)`,
`get_event` and `classify`, each as compact JSON of what the official client receives (the tools of
`list_tools()`, as tests/test_mcp_surface.py counts them; the whole CallToolResult of a call), in both eras.

    .venv/bin/python bench/result_sizes.py

Runs in-process on a throwaway SQLite inbox filled with the bundled samples (every type twice), one inbox per era.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from mcp import Client

from stripe_inbox import load_settings, open_inbox
from stripe_inbox.events import IncomingEvent
from stripe_inbox.mcp import InboxServer, create_mcp_server
from stripe_inbox.stripe.samples import SAMPLES, sample_event

EXAMPLE = "invoice.payment_failed"  # the event get_event and classify are measured on
MODES = ("auto", "legacy")  # 2026-07-28, and the 2025 handshake era Claude Desktop speaks
# Measured the same way on cfaec1e, before results were made lean: (2026-07-28, legacy) bytes. list_events varies
# by some 50 bytes from run to run: which samples fill the page depends on their random ids.
BEFORE = {
    "tools/list": (17842, 17842),
    "list_events(limit=10)": (9530, 9011),
    "get_event": (4860, 4293),
    "classify": (3334, 2767),
}


def size(*values: Any) -> int:
    """Bytes of `values` as compact JSON (one model, or a list of them): what they cost on the wire and in a
    model's context."""
    dumped = [value.model_dump(mode="json", by_alias=True, exclude_none=True) for value in values]
    return len(json.dumps(dumped if len(dumped) > 1 else dumped[0], separators=(",", ":")).encode())


async def measure(server: InboxServer, example: str, mode: str) -> dict[str, int]:
    async with Client(server, mode=mode) as client:
        sizes = {"tools/list": size(*(await client.list_tools()).tools)}
        for label, name, arguments in (
            ("list_events(limit=10)", "list_events", {"limit": 10}),
            ("get_event", "get_event", {"event_id": example}),
            ("classify", "classify", {"event_id": example}),
        ):
            result = await client.call_tool(name, arguments)
            assert not result.is_error, result.content
            sizes[label] = size(result)
    return sizes


async def measure_all(folder: Path, mode: str) -> dict[str, int]:
    """On an inbox of its own: `classify` changes what the next `get_event` returns."""
    settings = load_settings(db=str(folder / f"{mode}.db"), webhook_secret="whsec_resultsizes0123456789")
    async with open_inbox(settings) as inbox:
        payloads = [sample_event(event_type) for _ in range(2) for event_type in SAMPLES]
        await inbox.store.add_events([IncomingEvent.parse(payload) for payload in payloads], time.time())
        example = next(json.loads(p)["id"] for p in payloads if json.loads(p)["type"] == EXAMPLE)
        server = create_mcp_server(inbox)
        async with server.running():
            return await measure(server, example, mode)


async def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        now = {mode: await measure_all(Path(folder), mode) for mode in MODES}
    print(f"{'bytes':<24}" + "".join(f"{f'{mode} before':>14}{f'{mode} now':>12}" for mode in MODES))
    for label, before in BEFORE.items():
        print(
            f"{label:<24}"
            + "".join(f"{was:>14}{now[mode][label]:>12}" for mode, was in zip(MODES, before, strict=True))
        )


if __name__ == "__main__":
    anyio.run(main)
