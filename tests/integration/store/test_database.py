"""How operations run (spec: store/database.py ``Database``): whole, on one connection, in a
transaction for writes; on SQLite in the connection threads, with the caller's context, a bounded
wait for a free thread, and a thread that stays taken until its statement ends."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextvars import ContextVar
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import Connection, text

from pcf_api.config import DatabaseSettings
from pcf_api.errors import StoreOverloaded
from pcf_api.store.database import SQLITE_POOL_SIZE, Database, create_database

pytestmark = pytest.mark.anyio

request_name: ContextVar[str] = ContextVar("request_name", default="none")


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    database = create_database(DatabaseSettings(url=SecretStr(database_url)))
    yield database
    await database.dispose()


@pytest.fixture
async def sqlite(tmp_path: Path) -> AsyncIterator[Database]:
    url = f"sqlite+aiosqlite:///{tmp_path}/threads.db"
    database = create_database(DatabaseSettings(url=SecretStr(url), pool_timeout_seconds=0.3))
    yield database
    await database.dispose()


async def _hold_every_thread(
    database: Database,
) -> tuple[threading.Event, list[asyncio.Task[None]]]:
    """Every connection thread busy until the returned event is set."""
    release = threading.Event()

    def hold(_: Connection) -> None:
        release.wait(10)

    holders = [asyncio.create_task(database.read(hold)) for _ in range(SQLITE_POOL_SIZE)]
    await asyncio.sleep(0.1)
    return release, holders


def _create_table(connection: Connection) -> None:
    connection.execute(text("CREATE TABLE items (name TEXT)"))


def _count(connection: Connection) -> int:
    return int(connection.execute(text("SELECT count(*) FROM items")).scalar_one())


async def test_a_write_commits_when_its_work_returns_and_not_when_it_raises(
    database: Database,
) -> None:
    await database.write(_create_table)

    def insert_then_fail(connection: Connection) -> None:
        connection.execute(text("INSERT INTO items VALUES ('lost')"))
        raise RuntimeError("after the insert")

    with pytest.raises(RuntimeError, match="after the insert"):
        await database.write(insert_then_fail)
    await database.write(
        lambda connection: connection.execute(text("INSERT INTO items VALUES ('kept')"))
    )

    assert await database.read(_count) == 1
    await database.ping()


async def test_work_on_sqlite_runs_in_a_connection_thread_with_the_callers_context(
    sqlite: Database,
) -> None:
    request_name.set("request-7")

    def where(_: Connection) -> tuple[str, str]:
        return threading.current_thread().name, request_name.get()

    thread, name = await sqlite.read(where)

    assert thread.startswith("sqlite")
    assert thread != threading.current_thread().name
    assert name == "request-7"


async def test_with_every_connection_thread_busy_a_request_waits_then_times_out(
    sqlite: Database,
) -> None:
    release, holders = await _hold_every_thread(sqlite)
    assert sqlite.pool_is_busy()

    began = asyncio.get_running_loop().time()
    with pytest.raises(StoreOverloaded):
        await sqlite.read(_count)
    waited = asyncio.get_running_loop().time() - began
    assert 0.25 < waited < 2

    release.set()
    await asyncio.gather(*holders)
    await sqlite.write(_create_table)
    assert await sqlite.read(_count) == 0


async def test_a_cancelled_caller_frees_its_thread_only_when_the_statement_ends(
    sqlite: Database,
) -> None:
    release, holders = await _hold_every_thread(sqlite)
    holders[0].cancel()
    with pytest.raises(asyncio.CancelledError):
        await holders[0]

    with pytest.raises(StoreOverloaded):  # the cancelled caller's work still holds its thread
        await sqlite.read(_count)

    release.set()
    await holders[1]
    await sqlite.write(_create_table)
    assert await sqlite.read(_count) == 0


async def test_connections_go_to_callers_in_the_order_they_asked(database_url: str) -> None:
    """Twelve callers on two connections, each asking again as soon as it is served: every one
    gets its turns. (SQLAlchemy's pool for asyncio hands a returned connection to whoever asks
    next, here the caller that returned it: the others starve until their time-out.)"""
    settings = DatabaseSettings(url=SecretStr(database_url), pool_size=2, pool_timeout_seconds=10)
    database = create_database(settings)
    postgres = database.dialect_name == "postgresql"

    def brief(connection: Connection) -> None:
        if postgres:
            connection.execute(text("SELECT pg_sleep(0.005)"))
        else:
            time.sleep(0.005)  # in the SQLite connection thread

    loop = asyncio.get_running_loop()
    served: Counter[int] = Counter()
    longest_wait = 0.0

    async def caller(number: int) -> None:
        nonlocal longest_wait
        deadline = loop.time() + 1.5
        while loop.time() < deadline:
            began = loop.time()
            await database.read(brief)
            longest_wait = max(longest_wait, loop.time() - began)
            served[number] += 1

    try:
        await asyncio.gather(*(caller(number) for number in range(12)))
    finally:
        await database.dispose()
    assert len(served) == 12, served
    assert min(served.values()) >= max(served.values()) / 2, served
    assert longest_wait < 1.0
