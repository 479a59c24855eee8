"""Authorization backends for the integration tests: local on SQLite and on PostgreSQL (both
migrated to head), and SpiceDB through the local stand-in server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from pydantic import SecretStr

from pcf_api.auth.local import LocalBackend
from pcf_api.auth.policy import AuthorizationBackend
from pcf_api.auth.spicedb import SpiceDBBackend
from pcf_api.config import DatabaseSettings
from pcf_api.store.database import create_database
from pcf_api.store.migrate import upgrade_to_head
from support.databases import postgres_database
from support.spicedb_server import PRESHARED_KEY, SpiceDBServer


@pytest.fixture
def spicedb_server() -> Iterator[SpiceDBServer]:
    server = SpiceDBServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def spicedb(spicedb_server: SpiceDBServer) -> AsyncIterator[SpiceDBBackend]:
    backend = SpiceDBBackend(spicedb_server.url, PRESHARED_KEY, timeout=1.0)
    yield backend
    await backend.aclose()


@pytest.fixture(params=["local-sqlite", "local-postgresql", "spicedb"])
async def backend(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[AuthorizationBackend]:
    """Each matrix test runs on the local backend (SQLite and PostgreSQL) and on SpiceDB."""
    if request.param == "spicedb":
        with SpiceDBServer() as server:
            backend = SpiceDBBackend(server.url, PRESHARED_KEY, timeout=1.0)
            yield backend
            await backend.aclose()
        return
    with ExitStack() as stack:
        if request.param == "local-sqlite":
            url = f"sqlite+aiosqlite:///{tmp_path}/authz.db"
        else:
            url = stack.enter_context(postgres_database())
        database = create_database(DatabaseSettings(url=SecretStr(url)))
        await upgrade_to_head(database.engine)
        yield LocalBackend(database)
        await database.dispose()
