"""The store's typed errors (spec: store/database.py ``store_error``, errors.py ``StoreError``).

``Database`` raises only typed errors for database failures, so the layers above map them to
codes without knowing SQLAlchemy: no free pooled connection is overload, a cancelled statement
a time-out, a refused or dropped connection an outage, a broken constraint a conflict, any other
database error a plain StoreError. An exception the work raises itself passes unchanged.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import Connection, text
from sqlalchemy import exc as sqlalchemy_exc

from pcf_api.config import DatabaseSettings
from pcf_api.errors import (
    ErrorCode,
    StoreConflict,
    StoreError,
    StoreOverloaded,
    StoreTimeout,
    StoreUnavailable,
    reason_of,
)
from pcf_api.store.database import (
    SQLITE_POOL_SIZE,
    Database,
    create_database,
    is_pool_exhausted,
    is_statement_timeout,
    is_unavailable,
    store_error,
    wait_for_database,
)
from support.logs import capture_logs

pytestmark = pytest.mark.anyio


class PgError(Exception):
    """Stands for an asyncpg error: it carries a SQLSTATE."""

    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"SQLSTATE {sqlstate}")
        self.sqlstate = sqlstate


def dbapi(
    kind: type[sqlalchemy_exc.DBAPIError], orig: Exception, *, connection_invalidated: bool = False
) -> Exception:
    return kind("SELECT 1", None, orig, connection_invalidated=connection_invalidated)


@pytest.mark.parametrize(
    ("error", "typed", "code"),
    [
        (
            sqlalchemy_exc.TimeoutError("QueuePool limit reached"),
            StoreOverloaded,
            "SERVICE_UNAVAILABLE",
        ),
        (dbapi(sqlalchemy_exc.DBAPIError, PgError("57014")), StoreTimeout, "TIMEOUT"),
        # A cancelled statement is a time-out even on a connection SQLAlchemy then invalidates.
        (
            dbapi(sqlalchemy_exc.OperationalError, PgError("57014"), connection_invalidated=True),
            StoreTimeout,
            "TIMEOUT",
        ),
        (
            dbapi(sqlalchemy_exc.OperationalError, PgError("08006")),
            StoreUnavailable,
            "DATABASE_ERROR",
        ),
        (
            dbapi(sqlalchemy_exc.InterfaceError, PgError("08003")),
            StoreUnavailable,
            "DATABASE_ERROR",
        ),
        (
            dbapi(sqlalchemy_exc.DBAPIError, PgError("XX000"), connection_invalidated=True),
            StoreUnavailable,
            "DATABASE_ERROR",
        ),
        (dbapi(sqlalchemy_exc.DBAPIError, PgError("57P03")), StoreUnavailable, "DATABASE_ERROR"),
        (
            dbapi(sqlalchemy_exc.DBAPIError, ConnectionResetError()),
            StoreUnavailable,
            "DATABASE_ERROR",
        ),
        (ConnectionRefusedError("refused"), StoreUnavailable, "DATABASE_ERROR"),
        (TimeoutError(), StoreUnavailable, "DATABASE_ERROR"),
        (dbapi(sqlalchemy_exc.IntegrityError, PgError("23505")), StoreConflict, "DATABASE_ERROR"),
        (dbapi(sqlalchemy_exc.ProgrammingError, PgError("42P01")), StoreError, "DATABASE_ERROR"),
        (sqlalchemy_exc.NoResultFound("no row"), StoreError, "DATABASE_ERROR"),
    ],
)
def test_each_database_failure_becomes_its_typed_error_with_its_code(
    error: Exception, typed: type[StoreError], code: str
) -> None:
    translated = store_error(error)
    assert type(translated) is typed
    assert translated.code is ErrorCode(code)
    assert translated.reason == type(error).__name__ == reason_of(translated)
    assert type(error).__name__ in str(translated)
    # The typed error answers the classifiers as the original did.
    assert is_unavailable(translated) is is_unavailable(error) is (typed is StoreUnavailable)
    assert is_pool_exhausted(translated) is is_pool_exhausted(error) is (typed is StoreOverloaded)
    assert (
        is_statement_timeout(translated) is is_statement_timeout(error) is (typed is StoreTimeout)
    )


def test_errors_that_are_no_database_failure_are_left_alone() -> None:
    assert store_error(ValueError("bad input")) is None
    assert store_error(RuntimeError()) is None
    typed = StoreUnavailable("gone")
    assert store_error(typed) is typed
    assert typed.reason == "StoreUnavailable"


@pytest.fixture
async def sqlite(tmp_path: Path) -> AsyncIterator[Database]:
    url = f"sqlite+aiosqlite:///{tmp_path}/errors.db"
    database = create_database(DatabaseSettings(url=SecretStr(url), pool_timeout_seconds=0.2))
    await database.write(_create_table)
    yield database
    await database.dispose()


def _create_table(connection: Connection) -> None:
    connection.execute(text("CREATE TABLE items (name TEXT PRIMARY KEY)"))


def _insert(connection: Connection) -> None:
    connection.execute(text("INSERT INTO items (name) VALUES ('a')"))


async def test_a_broken_constraint_is_a_conflict_caused_by_the_driver_error(
    sqlite: Database,
) -> None:
    await sqlite.write(_insert)
    with pytest.raises(StoreConflict) as conflict:
        await sqlite.write(_insert)
    assert conflict.value.reason == "IntegrityError"
    assert isinstance(conflict.value.__cause__, sqlalchemy_exc.IntegrityError)
    assert not is_unavailable(conflict.value)


async def test_another_database_error_is_a_plain_store_error(sqlite: Database) -> None:
    def two_statements(connection: Connection) -> None:
        connection.exec_driver_sql("SELECT 1; SELECT 2")

    with pytest.raises(StoreError) as failed:
        await sqlite.read(two_statements)
    assert type(failed.value) is StoreError
    assert failed.value.code is ErrorCode.DATABASE_ERROR


async def test_an_error_of_the_work_itself_passes_unchanged(sqlite: Database) -> None:
    def wrong(_: Connection) -> None:
        raise ValueError("not a note")

    with pytest.raises(ValueError, match="not a note"):
        await sqlite.read(wrong)
    with pytest.raises(ValueError, match="not a note"):
        await sqlite.write(wrong)


async def test_every_connection_busy_past_the_pool_timeout_is_overload(sqlite: Database) -> None:
    release = threading.Event()

    def hold(_: Connection) -> None:
        release.wait(10)

    holders = [asyncio.create_task(sqlite.read(hold)) for _ in range(SQLITE_POOL_SIZE)]
    await asyncio.sleep(0.05)
    try:
        with pytest.raises(StoreOverloaded) as overloaded:
            await sqlite.read(_insert)
    finally:
        release.set()
        await asyncio.gather(*holders)
    assert overloaded.value.code is ErrorCode.SERVICE_UNAVAILABLE
    assert not is_unavailable(overloaded.value)


async def test_start_up_waits_for_the_database_and_logs_each_attempt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answers = [ConnectionRefusedError("refused"), OSError("unreachable"), None]

    async def ping(_: object) -> None:
        answer = answers.pop(0)
        if answer is not None:
            raise answer

    monkeypatch.setattr("pcf_api.store.database.ping", ping)
    with capture_logs() as logs:
        await wait_for_database(object(), initial=0.01, cap=0.015)  # type: ignore[arg-type]
    retries = logs.records("database not reachable; retrying")
    assert [(line["attempt"], line["reason"]) for line in retries] == [
        (1, "ConnectionRefusedError"),
        (2, "OSError"),
    ]
    assert 0.008 <= retries[0]["retry_in_seconds"] <= 0.012
    assert 0.012 <= retries[1]["retry_in_seconds"] <= 0.015  # 0.02 ± 20 %, capped
    [reachable] = logs.records("database reachable")
    assert reachable["attempt"] == 3
