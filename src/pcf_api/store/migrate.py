"""Schema migrations: upgrade to head under a lock, and tell whether the schema is current.

Several replicas may start at once (or a Helm hook Job races a rolling update): on PostgreSQL a
session advisory lock serialises them, on SQLite an exclusive lock file does; the second runner
then finds nothing left to do.
"""

from __future__ import annotations

import asyncio
import fcntl
from pathlib import Path

import structlog
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

from pcf_api.config import DatabaseSettings
from pcf_api.secretfiles import SecretFiles
from pcf_api.store.database import create_engine, database_password, wait_for_database

# structlog's own logger: the store does not depend on pcf_api.observability, which configures it.
log: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")
# pg_advisory_lock takes a bigint; any fixed value unique to this application will do.
ADVISORY_LOCK_KEY = 0x7063665F617069  # "pcf_api"


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as connection:
        return await connection.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_revision()
        )


async def is_current(engine: AsyncEngine) -> bool:
    return await current_revision(engine) == head_revision()


async def upgrade_to_head(engine: AsyncEngine) -> str | None:
    """Apply every pending migration; safe to run from several processes at once."""
    if engine.dialect.name == "postgresql":
        return await _upgrade_postgres(engine)
    return await _upgrade_with_lock_file(engine)


async def _upgrade_postgres(engine: AsyncEngine) -> str | None:
    async with engine.connect() as connection:
        await connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
        await connection.commit()
        try:
            before = await connection.run_sync(_current)
            await connection.run_sync(_upgrade)
            await connection.commit()
            after = await connection.run_sync(_current)
        finally:
            await connection.execute(
                text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK_KEY}
            )
            await connection.commit()
    _log_result(before, after)
    return after


async def _upgrade_with_lock_file(engine: AsyncEngine) -> str | None:
    database = engine.url.database
    lock_path = Path(f"{database}.migrate.lock") if database and database != ":memory:" else None
    lock_file = lock_path.open("w") if lock_path else None
    try:
        if lock_file is not None:
            await asyncio.to_thread(fcntl.flock, lock_file, fcntl.LOCK_EX)
        async with engine.connect() as connection:
            before = await connection.run_sync(_current)
            await connection.run_sync(_upgrade)
            await connection.commit()
            after = await connection.run_sync(_current)
    finally:
        if lock_file is not None:
            lock_file.close()
    _log_result(before, after)
    return after


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _upgrade(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "head")


def _log_result(before: str | None, after: str | None) -> None:
    if before == after:
        log.info("database schema already current", revision=after)
    else:
        log.info("database schema migrated", from_revision=before, to_revision=after)


async def run_migrations(settings: DatabaseSettings, secrets: SecretFiles | None = None) -> int:
    """`pcf-api migrate`: waits for the database like the server does, then upgrades.

    With ``secrets``, their files are watched meanwhile: a Job that waits for the database
    while its password is rotated connects with the new one.
    Exit code 0 when the schema is at head afterwards, 1 when the migration failed.
    """
    password = database_password(secrets) if secrets is not None else None
    engine = create_engine(settings, password=password)
    if secrets is not None:
        secrets.start()
    try:
        await wait_for_database(
            engine, initial=settings.retry_initial_seconds, cap=settings.retry_max_seconds
        )
        revision = await upgrade_to_head(engine)
    except Exception:
        log.critical("migration failed", exc_info=True)
        return 1
    finally:
        await engine.dispose()
        if secrets is not None:
            await secrets.stop()
    return 0 if revision == head_revision() else 1
