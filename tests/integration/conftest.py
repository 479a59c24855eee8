"""Fixtures for tests that run real `pcf-api` processes."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from support.databases import postgres_database
from support.servers import ServerFactory, ServerProcess, start_server


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[ServerFactory]:
    """Start servers with `server_factory(env, *args)`; any still running are killed at the end."""
    started: list[ServerProcess] = []

    def factory(env: Mapping[str, str], *args: str) -> ServerProcess:
        server = start_server(tmp_path, env, *args)
        started.append(server)
        return server

    yield factory
    for server in started:
        if server.process.poll() is None:
            # A graceful stop lets the server write its coverage data; kill only if it hangs.
            server.process.terminate()
            try:
                server.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each test that takes it runs against SQLite and against a real PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/notes.db"
    else:
        with postgres_database() as url:
            yield url
