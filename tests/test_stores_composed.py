"""The stores composed over one connector (issue #24 item 2): the connector's group commit writes whatever a store
hands it, knowing no events; connectors are chosen by the location's URL scheme; Store's methods are its area
stores' own."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
import pytest

from stripe_inbox.errors import ConfigError
from stripe_inbox.stores import Store, is_postgres_url, is_server_url, open_store
from stripe_inbox.stores.connector import Transaction
from stripe_inbox.stores.connectors import scheme

from .test_oauth_store import store

__all__ = ["store"]  # the fixture: a store on each database
pytestmark = pytest.mark.anyio


async def test_group_commit_writes_what_a_store_hands_it_and_answers_each_caller(store: Store) -> None:
    batches: list[int] = []

    async def write(tx: Transaction, items: Sequence[Any]) -> list[Any]:
        batches.append(len(items))
        for key, value in items:
            await tx.execute("INSERT INTO state (key, value) VALUES (?, ?)", key, value)
        return [f"wrote {key}" for key, _ in items]

    answers: dict[str, str] = {}

    async def one(index: int) -> None:
        answers[f"k{index}"] = await store.db.group_commit(write, (f"k{index}", str(index)), 1)

    async with anyio.create_task_group() as group:
        for index in range(20):
            group.start_soon(one, index)
    assert answers == {f"k{index}": f"wrote k{index}" for index in range(20)}
    assert sum(batches) == 20
    assert [await store.get_state(f"k{index}") for index in range(20)] == [str(index) for index in range(20)]


async def test_a_failing_batch_write_fails_its_callers_and_the_next_batch_goes_on(store: Store) -> None:
    async def broken(tx: Transaction, items: Sequence[Any]) -> list[Any]:
        await tx.execute("INSERT INTO no_such_table VALUES (?)", 1)
        return [None for _ in items]

    with pytest.raises(Exception, match="cannot be written"):
        await store.db.group_commit(broken, "item", 1)

    async def fine(tx: Transaction, items: Sequence[Any]) -> list[Any]:
        await tx.execute("INSERT INTO state (key, value) VALUES (?, ?)", "after", "ok")
        return ["ok" for _ in items]

    assert await store.db.group_commit(fine, "item", 1) == "ok"
    assert await store.get_state("after") == "ok"


async def test_store_methods_are_the_area_stores_own(store: Store) -> None:
    assert store.get_event.__self__ is store.events  # type: ignore[attr-defined]
    assert store.forward_round.__self__ is store.forwarding  # type: ignore[attr-defined]
    assert store.oauth_tokens.__self__ is store.oauth  # type: ignore[attr-defined]
    assert store.decide.__self__ is store.approving  # type: ignore[attr-defined]
    for area in (store.events, store.outbox, store.forwarding, store.oauth, store.state, store.search_index):
        assert area.db is store.db and area.changes is store.changes  # one connector, one change log


def test_connectors_are_chosen_by_the_locations_scheme() -> None:
    assert scheme("./stripe-inbox.db") == "" and scheme("C:\\inbox\\stripe-inbox.db") == ""
    assert scheme("postgresql://u@h/db") == "postgresql" and scheme("POSTGRES://h/db") == "postgres"
    assert is_postgres_url("postgresql://u@h/db") and is_postgres_url("postgres://h/db")
    assert not is_postgres_url("/var/lib/stripe-inbox.db")
    assert is_server_url("postgres://h/db") and not is_server_url("./stripe-inbox.db")


async def test_a_location_of_no_known_scheme_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"no inbox database speaks mysql://.*postgresql://") as refused:
        await open_store("mysql://u:secret@h/db")
    assert "secret" not in str(refused.value)
