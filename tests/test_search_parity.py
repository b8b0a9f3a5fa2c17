"""Full-text search cuts words alike on SQLite and PostgreSQL: the same events, the same queries, the same ids."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from stripe_inbox import Inbox, load_settings, open_inbox
from stripe_inbox.indexing import MAX_WORD

from .conftest import SECRET, make_event
from .postgres import postgres_schema
from .test_search import add, ids

pytestmark = pytest.mark.anyio
LONG_TOKEN = "tok" + "x9" * 1_500  # 3,003 characters with no separator: over PostgreSQL's 2047-byte lexeme


def event(description: str, **fields: Any) -> dict[str, Any]:
    made = make_event("invoice.paid")
    made["data"]["object"].update(description=description, **fields)
    return made


EVENTS = {
    "email": event("plan", customer_email="Jane.Smith+billing@Mail.Example.co.uk", customer_name="Jane Smith"),
    "other_email": event("plan", customer_email="jane.smithers@example.org", customer_name="Jane Smithers"),
    "id": event("plan", id="in_1AbcDEF9x", subscription="sub_1Q2w3E"),
    "hyphens": event("re-try of e-mail follow-up", metadata={"order": "ORD-2024-0042"}),
    "dots": event("release v1.2.3 for acme.io", metadata={"host": "api.acme.io", "path": "/v1/charges?x=1"}),
    "unicode": event("Zoë Ångström paid für straße", customer_name="Łukasz Żółć"),
    "long": event("attachment", metadata={"blob": LONG_TOKEN}),
    # About the lengths PostgreSQL indexes as prefix lexemes (indexing.PREFIX_LENGTHS, 1 to 8 characters).
    "nine": event("quarterly", metadata={"code": "k"}),
    "eight": event("annually", metadata={"code": "kx"}),
}
QUERIES = {
    "jane.smith+billing@mail.example.co.uk": {"email"},
    "JANE.SMITH": {"email", "other_email"},  # the start of both e-mails
    "jane smith": {"email", "other_email"},  # each word a prefix: "smith" starts "smithers"
    "smithers": {"other_email"},
    "mail.example.co.uk": {"email"},  # an e-mail's domain
    "example": {"other_email"},  # the start of a domain, not a word inside one (mail.example.co.uk)
    "billing": set(),
    "in_1AbcDEF9x": {"id"},
    "1abc": {"id"},  # an id's end, from its start
    "sub_1q2w": {"id"},
    "re-try": {"hyphens"},
    "re": {"hyphens", "dots"},  # "re-try" and "release"
    "follow-up e-mail": {"hyphens"},
    "ord-2024": {"hyphens"},
    "2024": set(),
    "v1.2.3": {"dots"},
    "v1.2": {"dots"},
    "api.acme.io": {"dots"},
    "acme.io": {"dots"},
    "acme": {"dots"},
    "v1": {"dots"},
    "zoë ångström": {"unicode"},
    "ZOË": {"unicode"},
    "straße für": {"unicode"},
    "łukasz żółć": {"unicode"},
    LONG_TOKEN: {"long"},  # cut at MAX_WORD characters on both sides of the match
    LONG_TOKEN[:MAX_WORD] + "zzz": {"long"},
    LONG_TOKEN[:40]: {"long"},
    "quarterl": {"nine"},  # 8 characters: one prefix lexeme on PostgreSQL
    "quarterly": {"nine"},  # 9: a prefix match of the terms themselves
    "quarterlyx": set(),
    "annually": {"eight"},  # the whole term, as its own longest prefix lexeme
    "annuall": {"eight"},
    "annuallyx": set(),
    "k": {"nine", "eight"},  # the shortest prefix lexeme
    "kx": {"eight"},
    "q": {"nine"},
}


@pytest.fixture
async def both(tmp_path: Path) -> AsyncIterator[dict[str, Inbox]]:
    async with AsyncExitStack() as stack:
        postgres = await stack.enter_async_context(postgres_schema())
        opened = {}
        for name, location in (("sqlite", str(tmp_path / "parity.db")), ("postgres", postgres)):
            settings = load_settings(db=location, webhook_secret=SECRET)
            opened[name] = await stack.enter_async_context(open_inbox(settings))
        yield opened


async def test_the_same_query_finds_the_same_events_on_sqlite_and_postgresql(both: dict[str, Inbox]) -> None:
    for inbox in both.values():
        await add(inbox, *EVENTS.values())
        assert await inbox.store.unindexed() == 0  # the long word held up no batch
    names = {made["id"]: name for name, made in EVENTS.items()}
    for query, expected in QUERIES.items():
        found = {}
        for database, inbox in both.items():
            found[database] = {names[event_id] for event_id in ids(await inbox.list_events("all", query=query))}
        assert found["sqlite"] == found["postgres"], query
        assert found["sqlite"] == expected, query
