"""Deadlines nest — HTTP request > GraphQL execution > database statement — and each one that
fires surfaces as TIMEOUT, never as a hang or an internal error."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from pcf_api.composition import build_service
from support.databases import postgres_database

from .conftest import running, settings_for

pytestmark = pytest.mark.anyio


@contextmanager
def locked_notes_table(async_url: str) -> Iterator[None]:
    """Hold an exclusive lock on the notes table from another session, so queries block."""
    dsn = async_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    connection = psycopg.connect(dsn)
    connection.execute("LOCK TABLE notes IN ACCESS EXCLUSIVE MODE")
    try:
        yield
    finally:
        connection.rollback()
        connection.close()


@pytest.fixture
def pg_url() -> Iterator[str]:
    with postgres_database() as url:
        yield url


async def test_a_statement_past_the_database_deadline_is_timeout(pg_url: str) -> None:
    settings = settings_for(pg_url, PCF_DATABASE__STATEMENT_TIMEOUT_SECONDS="1")
    async with running(build_service(settings)) as client:
        with locked_notes_table(pg_url):
            response = await client.post("/graphql", json={"query": "{ notes { totalCount } }"})
        error = response.json()["errors"][0]
        assert error["extensions"]["code"] == "TIMEOUT"
        # A slow statement is not an outage: the next query works at once.
        after = await client.post("/graphql", json={"query": "{ notes { totalCount } }"})
        assert after.json() == {"data": {"notes": {"totalCount": 0}}}


async def test_execution_past_the_graphql_deadline_is_timeout_504(pg_url: str) -> None:
    settings = settings_for(
        pg_url,
        PCF_DATABASE__STATEMENT_TIMEOUT_SECONDS="10",
        PCF_GRAPHQL__EXECUTION_TIMEOUT_SECONDS="1",
    )
    async with running(build_service(settings)) as client:
        with locked_notes_table(pg_url):
            response = await client.post("/graphql", json={"query": "{ notes { totalCount } }"})
        assert response.status_code == 504
        assert response.json()["errors"][0]["extensions"]["code"] == "TIMEOUT"


async def test_a_request_past_the_http_deadline_is_timeout_504(tmp_path: Path) -> None:
    settings = settings_for(
        f"sqlite+aiosqlite:///{tmp_path}/n.db",
        PCF_SERVER__REQUEST_TIMEOUT_SECONDS="0.5",
        PCF_TESTING__DELAY_SECONDS="2",
        PCF_TESTING__DELAY_PATHS="/version",
    )
    async with running(build_service(settings)) as client:
        response = await client.get("/version")
        assert response.status_code == 504
        assert response.json()["error"]["code"] == "TIMEOUT"


def test_deadlines_nest_by_default() -> None:
    settings = settings_for("sqlite+aiosqlite:///unused.db")
    assert (
        settings.server.request_timeout_seconds
        > settings.graphql.execution_timeout_seconds
        > settings.database.statement_timeout_seconds
    )
    assert (
        settings.server.request_timeout_seconds,
        settings.graphql.execution_timeout_seconds,
    ) == (30, 25)
    assert settings.database.statement_timeout_seconds == 20
