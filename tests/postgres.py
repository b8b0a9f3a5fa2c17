"""A fresh schema on the PostgreSQL server for each test that needs one; the test skips, saying why,
where no server answers (STRIPE_INBOX_TEST_POSTGRES names another)."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

POSTGRES_URL = os.environ.get("STRIPE_INBOX_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@asynccontextmanager
async def postgres_schema() -> AsyncIterator[str]:
    """Yields a postgresql:// URL whose search_path is a new, empty schema; drops it afterwards."""
    try:
        import asyncpg
    except ImportError:
        pytest.skip("asyncpg is not installed (pip install -e '.[test]')")
    try:
        admin = await asyncpg.connect(POSTGRES_URL, timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError) as error:
        pytest.skip(f"no PostgreSQL server answers at {POSTGRES_URL}: {error}")
    schema = "t_" + secrets.token_hex(6)
    await admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{POSTGRES_URL}?search_path={schema}"
    finally:
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()
