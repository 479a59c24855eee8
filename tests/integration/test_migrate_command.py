"""`pcf-api migrate`: idempotent, and safe when several replicas run it at once."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from pcf_api.store.migrate import head_revision
from support.databases import postgres_database
from support.servers import PCF_API, clean_environ


def _migrate(url: str) -> subprocess.CompletedProcess[str]:
    env = clean_environ({"PCF_ENVIRONMENT": "production", "PCF_DATABASE__URL": url})
    return subprocess.run(
        [str(PCF_API), "migrate"], env=env, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_concurrent_migrations_all_succeed_and_apply_once(database: str, tmp_path: Path) -> None:
    def run_four(url: str) -> list[subprocess.CompletedProcess[str]]:
        with ThreadPoolExecutor(max_workers=4) as pool:
            return list(pool.map(_migrate, [url] * 4))

    if database == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path}/m.db"
        results = run_four(url)
        again = _migrate(url)
    else:
        with postgres_database() as url:
            results = run_four(url)
            again = _migrate(url)
            dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)
            with psycopg.connect(dsn) as connection:
                versions = connection.execute("SELECT version_num FROM alembic_version").fetchall()
            assert versions == [(head_revision(),)]

    assert [result.returncode for result in results] == [0, 0, 0, 0], [r.stdout for r in results]
    applied = sum("database schema migrated" in result.stdout for result in results)
    current = sum("database schema already current" in result.stdout for result in results)
    assert (applied, current) == (1, 3)
    assert again.returncode == 0
    assert "database schema already current" in again.stdout


def test_migrate_with_an_unusable_configuration_exits_2(tmp_path: Path) -> None:
    env = clean_environ({"PCF_ENVIRONMENT": "production"})
    result = subprocess.run(
        [str(PCF_API), "migrate"], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert "database.url" in result.stdout


def test_schema_command_prints_the_sdl() -> None:
    result = subprocess.run([str(PCF_API), "schema"], capture_output=True, text=True, check=True)
    assert "type Query {" in result.stdout
    assert "createNote(input: CreateNoteInput!): Note!" in result.stdout
