"""Each store test runs against SQLite and against a real PostgreSQL database."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine

from pcf_api.config import DatabaseSettings
from pcf_api.store.database import create_engine
from pcf_api.store.migrate import upgrade_to_head
from pcf_api.store.notes import NoteStore


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(DatabaseSettings(url=SecretStr(database_url)))
    await upgrade_to_head(engine)
    yield engine
    await engine.dispose()


@pytest.fixture
def store(engine: AsyncEngine) -> NoteStore:
    return NoteStore(engine)
