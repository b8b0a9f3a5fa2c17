"""Every real Stripe event in ../shared/fixtures is accepted, stored byte-exact, listed and classified."""

from __future__ import annotations

import json
import secrets

import httpx
import pytest

from stripe_inbox import Inbox
from stripe_inbox.classify import classify

from .conftest import deliver, fixture_events, needs_fixtures

pytestmark = [pytest.mark.anyio, needs_fixtures]


def fresh_copies() -> list[tuple[str, bytes]]:
    """Each fixture's exact bytes with a fresh event id: most share one placeholder id."""
    copies = []
    for path in fixture_events():
        raw = path.read_bytes()
        old_id = json.loads(raw)["id"]
        new_id = "evt_" + secrets.token_hex(12)
        copies.append((new_id, raw.replace(f'"{old_id}"'.encode(), f'"{new_id}"'.encode(), 1)))
    return copies


async def test_every_fixture_is_accepted_stored_byte_exact_and_listed(http: httpx.AsyncClient, inbox: Inbox) -> None:
    copies = fresh_copies()
    assert len(copies) >= 28
    for event_id, payload in copies:
        response = await deliver(http, payload)
        assert response.status_code == 200, (event_id, response.text)
        stored = await inbox.store.get_event(event_id)
        assert stored is not None and stored.payload == payload

    listed, cursor = [], None
    while True:
        page = await inbox.list_events(limit=10, cursor=cursor)
        listed += [e.id for e in page.events]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert listed == [event_id for event_id, _ in copies]  # oldest first, every one, no repeats
    stats = await inbox.stats()
    assert stats.by_status["pending"] == len(copies)
    assert len(stats.by_type) == len({json.loads(p)["type"] for _, p in copies})


async def test_connect_fixtures_keep_their_account(http: httpx.AsyncClient, inbox: Inbox) -> None:
    for event_id, payload in fresh_copies():
        if b'"account"' in payload and json.loads(payload).get("account"):
            await deliver(http, payload)
            summary = (await inbox.event(event_id)).summary()
            assert summary.account == json.loads(payload)["account"]
            assert summary.account.startswith("acct_")


def test_every_fixture_classifies_into_a_known_category() -> None:
    for path in fixture_events():
        event = json.loads(path.read_bytes())
        result = classify(event)
        assert result.category != "other", path.name
        assert result.summary and result.suggested_actions[-1].tool == "ack_event"
