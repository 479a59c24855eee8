"""On PostgreSQL with 100 000 notes, a keyset page deep in the list is a range scan of an index:
no sequential scan, no sort of the matching rows, whatever the filter."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from pydantic import SecretStr
from sqlalchemy import create_engine

from pcf_api.config import DatabaseSettings
from pcf_api.store.database import create_database
from pcf_api.store.migrate import upgrade_to_head
from pcf_api.store.notes import Key, NoteStore, _Window, _window_statement
from support.databases import postgres_database

pytestmark = pytest.mark.anyio

START = datetime(2026, 1, 1, tzinfo=UTC)
SEED = """
INSERT INTO notes (id, title, content, author, created_at, updated_at)
SELECT 'notes:' || lpad(i::text, 10, '0'), 'title ' || i, 'content ' || i,
       CASE WHEN i % 2 = 0 THEN 'bench' ELSE 'other' END,
       timestamptz '2026-01-01 00:00:00+00' + i * interval '1 second',
       timestamptz '2026-01-01 00:00:00+00' + i * interval '1 second'
FROM generate_series(1, 100000) AS i;
INSERT INTO note_relationships (note_id, subject, relation)
SELECT id, author, 'owner' FROM notes;
ANALYZE notes;
ANALYZE note_relationships;
"""


@pytest.fixture(scope="module")
def seeded() -> Iterator[str]:
    """A throwaway database at the head revision with 100 000 notes (one INSERT ... SELECT)."""
    with postgres_database() as url:
        yield url


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _migrate(url: str) -> NoteStore:
    database = create_database(DatabaseSettings(url=SecretStr(url)))
    await upgrade_to_head(database.engine)
    return NoteStore(database)


_PSYCOPG = create_engine("postgresql+psycopg://").dialect  # compiles, never connects


def _plan(connection: psycopg.Connection[Any], variant: _Window, parameters: dict[str, Any]) -> str:
    compiled = _window_statement(variant).compile(dialect=_PSYCOPG)
    values = compiled.construct_params(parameters)
    rows = connection.execute(f"EXPLAIN {compiled}", values).fetchall()  # type: ignore[call-overload,unused-ignore]
    return "\n".join(str(row[0]) for row in rows)


@pytest.mark.parametrize(
    ("by_author", "by_reader", "backward"),
    [(False, False, False), (False, True, False), (True, True, False), (False, True, True)],
)
async def test_a_deep_keyset_page_is_an_index_range_scan(
    seeded: str, by_author: bool, by_reader: bool, backward: bool
) -> None:
    store = await _migrate(seeded)
    try:
        with psycopg.connect(_dsn(seeded), autocommit=True) as connection:
            if connection.execute("SELECT count(*) FROM notes").fetchone() == (0,):
                connection.execute(SEED)  # type: ignore[call-overload,unused-ignore]
            deep = Key(START + timedelta(seconds=10_000), "notes:0000010000")
            parameters: dict[str, Any] = {"limit": 11, "author": "bench", "reader": "bench"}
            bound = "before" if backward else "after"
            parameters[f"{bound}_at"], parameters[f"{bound}_id"] = deep
            variant = _Window(
                by_author=by_author,
                by_reader=by_reader,
                after=not backward,
                before=backward,
                backward=backward,
                total=False,
            )
            plan = _plan(connection, variant, parameters)
        assert "Index" in plan, plan
        assert "Seq Scan" not in plan, plan
        assert "Sort" not in plan, plan

        # And the store reads that page: 10 notes from the 10 000th newest on.
        window = await store.window(
            count=10,
            after=None if backward else deep,
            before=deep if backward else None,
            backward=backward,
            author="bench" if by_author else None,
            reader="bench" if by_reader else None,
        )
        assert len(window.notes) == 10
        assert window.more is True
        keys = [Key.of(note) for note in window.notes]
        assert keys == sorted(keys, reverse=True)
        assert all(key < deep for key in keys) if not backward else all(key > deep for key in keys)
    finally:
        await store.database.dispose()
