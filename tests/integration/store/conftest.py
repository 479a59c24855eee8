"""Each store test runs against SQLite and against a real PostgreSQL database."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pydantic import SecretStr

from pcf_api.config import DatabaseSettings
from pcf_api.store.database import Database, create_database
from pcf_api.store.migrate import upgrade_to_head
from pcf_api.store.notes import NoteStore


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    database = create_database(DatabaseSettings(url=SecretStr(database_url)))
    await upgrade_to_head(database.engine)
    yield database
    await database.dispose()


@pytest.fixture
def store(database: Database) -> NoteStore:
    return NoteStore(database)
