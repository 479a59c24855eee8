"""The embedded backend's storage (spec: auth/local.py and migration 0002), on SQLite and on
PostgreSQL: the migration gives existing notes their owners, a list is filtered in one SELECT,
and an unreachable database is an outage."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from alembic import command
from pydantic import SecretStr
from sqlalchemy import event, insert, inspect, select
from sqlalchemy.exc import ProgrammingError

from pcf_api.auth.local import LocalBackend
from pcf_api.auth.policy import Action, BackendUnavailable, Relation, Resource, Role
from pcf_api.config import DatabaseSettings
from pcf_api.errors import StoreError
from pcf_api.store.database import Database, create_database, create_engine
from pcf_api.store.migrate import alembic_config, current_revision, upgrade_to_head
from pcf_api.store.tables import note_relationships, notes
from support.databases import postgres_database
from support.servers import free_port

pytestmark = pytest.mark.anyio


async def test_the_migration_makes_every_existing_author_the_owner_of_their_notes(
    database_url: str,
) -> None:
    database = create_database(DatabaseSettings(url=SecretStr(database_url)))
    engine = database.engine
    try:
        async with engine.begin() as connection:
            await connection.run_sync(lambda sync: command.upgrade(alembic_config(sync), "0001"))
            now = datetime.now(UTC)
            await connection.execute(
                insert(notes),
                [
                    {
                        "id": f"notes:{n}",
                        "title": "t",
                        "content": "c",
                        "author": author,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for n, author in enumerate(["ann", "ann", "bob"])
                ],
            )

        await upgrade_to_head(engine)

        async with engine.connect() as connection:
            rows = (await connection.execute(select(note_relationships))).all()
        assert sorted(tuple(row) for row in rows) == [
            ("notes:0", "ann", "owner"),
            ("notes:1", "ann", "owner"),
            ("notes:2", "bob", "owner"),
        ]
        backend = LocalBackend(database)
        assert await backend.check("ann", Resource.note("notes:1"), Action.DELETE)
        assert not await backend.check("bob", Resource.note("notes:1"), Action.READ)
    finally:
        await database.dispose()


async def test_the_migration_indexes_subjects_and_can_be_undone(database_url: str) -> None:
    engine = create_engine(DatabaseSettings(url=SecretStr(database_url)))
    try:
        await upgrade_to_head(engine)
        async with engine.connect() as connection:
            indexes = await connection.run_sync(
                lambda sync: inspect(sync).get_indexes("note_relationships")
            )
            primary = await connection.run_sync(
                lambda sync: inspect(sync).get_pk_constraint("note_relationships")
            )
        assert {"name": "ix_note_relationships_subject", "columns": ["subject", "note_id"]} in [
            {"name": index["name"], "columns": index["column_names"]} for index in indexes
        ]
        assert primary["constrained_columns"] == ["note_id", "subject"]

        async with engine.begin() as connection:
            await connection.run_sync(lambda sync: command.downgrade(alembic_config(sync), "0001"))
            tables = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
        assert "note_relationships" not in tables
        assert await current_revision(engine) == "0001"
    finally:
        await engine.dispose()


@pytest.fixture
async def database(database_url: str) -> Any:
    database = create_database(DatabaseSettings(url=SecretStr(database_url)))
    await upgrade_to_head(database.engine)
    yield database
    await database.dispose()


async def test_a_list_is_filtered_with_one_select(database: Database) -> None:
    backend = LocalBackend(database)
    for number in range(5):
        await backend.create(f"notes:{number}", "ann" if number % 2 else "bob")
    await backend.share("notes:0", "ann", Role.READER)
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    for engine in database.statement_engines:
        event.listen(engine, "before_cursor_execute", record)
    try:
        readable = await backend.filter(
            "ann", Action.READ, [Resource.note(f"notes:{n}") for n in range(5)]
        )
    finally:
        for engine in database.statement_engines:
            event.remove(engine, "before_cursor_execute", record)

    assert readable == {Resource.note(n) for n in ("notes:0", "notes:1", "notes:3")}
    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 1


async def test_share_and_unshare_leave_the_owner_row_alone(database: Database) -> None:
    backend = LocalBackend(database)
    await backend.create("notes:1", "ann")

    await backend.share("notes:1", "ann", Role.READER)
    await backend.unshare("notes:1", "ann")
    await backend.share("notes:1", "bob", Role.WRITER)
    await backend.share("notes:1", "bob", Role.READER)

    assert await backend.relation_of("notes:1", "ann") is Relation.OWNER
    assert await backend.relation_of("notes:1", "bob") is Relation.READER
    await backend.unshare("notes:1", "bob")
    assert await backend.relation_of("notes:1", "bob") is None


async def test_nothing_grants_create_on_an_existing_note(database: Database) -> None:
    backend = LocalBackend(database)
    await backend.create("notes:1", "ann")

    assert not await backend.check("ann", Resource.note("notes:1"), Action.CREATE)
    assert await backend.filter("ann", Action.CREATE, [Resource.note("notes:1")]) == set()
    with pytest.raises(ValueError, match="not a note"):
        await backend.check("ann", Resource("note"), Action.READ)
    await backend.ping()
    await backend.aclose()


async def test_an_unreachable_database_is_an_outage_and_other_errors_are_not() -> None:
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/none"
    database = create_database(DatabaseSettings(url=SecretStr(url), connect_timeout_seconds=1))
    backend = LocalBackend(database)
    try:
        with pytest.raises(BackendUnavailable):
            await backend.ping()
        with pytest.raises(BackendUnavailable):
            await backend.check("ann", Resource.note("notes:1"), Action.READ)
        with pytest.raises(BackendUnavailable):
            await backend.share("notes:1", "bob", Role.READER)
    finally:
        await database.dispose()


async def test_a_database_error_that_is_no_outage_propagates() -> None:
    with postgres_database() as url:
        database = create_database(DatabaseSettings(url=SecretStr(url)))
        backend = LocalBackend(database)  # not migrated: the table does not exist
        try:
            # The store's typed error for "this query is wrong", not an outage (which would be
            # BackendUnavailable, answered from the cache).
            with pytest.raises(StoreError, match="note_relationships") as read:
                await backend.check("ann", Resource.note("notes:1"), Action.READ)
            with pytest.raises(StoreError, match="note_relationships") as write:
                await backend.delete("notes:1")
            for caught in (read, write):
                assert type(caught.value) is StoreError
                assert isinstance(caught.value.__cause__, ProgrammingError)
        finally:
            await database.dispose()


def test_only_sqlite_and_postgresql_are_supported() -> None:
    class OtherDatabase:
        dialect_name = "mysql"

    with pytest.raises(ValueError, match="mysql"):
        LocalBackend(OtherDatabase())  # type: ignore[arg-type]
