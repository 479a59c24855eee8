"""The database engine: creation from settings, start-up retries, and the readiness check."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy import exc as sqlalchemy_exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from pcf_api.config import DatabaseSettings
from pcf_api.observability.logging import get_logger

log = get_logger(__name__)


SQLITE_POOL_SIZE = 2


def database_url(settings: DatabaseSettings) -> URL:
    if settings.url is None:
        raise ValueError("database.url is not set")
    return make_url(settings.url.get_secret_value())


def is_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite"


def create_engine(settings: DatabaseSettings) -> AsyncEngine:
    """An async engine with the configured pool; SQLite gets WAL and a busy timeout."""
    url = database_url(settings)
    if is_sqlite(url):
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        # Two connections: SQLite has one writer at a time anyway, and every further connection
        # is a driver thread contending with the event loop for the GIL (see docs/benchmarks.md).
        engine = create_async_engine(
            url,
            pool_size=SQLITE_POOL_SIZE,
            max_overflow=0,
            pool_timeout=settings.pool_timeout_seconds,
            connect_args={"timeout": settings.connect_timeout_seconds},
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    connect_args: dict[str, Any] = {
        "timeout": settings.connect_timeout_seconds,
        # The server cancels first (statement_timeout, a clean TIMEOUT); the client-side
        # timeout is the backstop for a server that stops answering altogether.
        "command_timeout": settings.statement_timeout_seconds + 5,
        "server_settings": {
            "application_name": "pcf-api",
            "statement_timeout": str(int(settings.statement_timeout_seconds * 1000)),
        },
    }
    return create_async_engine(
        url,
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_timeout=settings.pool_timeout_seconds,
        # No pre-ping: it costs a round trip per checkout. A connection that died with the
        # server fails its next statement as a disconnect, SQLAlchemy then drops every pooled
        # connection from before, and the store treats the error as an outage (cache, write wait).
        pool_recycle=1800,
        connect_args=connect_args,
    )


def _sqlite_pragmas(dbapi_connection: Any, _: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def is_unavailable(exc: BaseException) -> bool:
    """Whether an error means "the database cannot be reached" rather than "this query is wrong".

    Only such errors make writes wait and reads fall back to the cache.
    """
    if isinstance(exc, OSError | TimeoutError | sqlalchemy_exc.TimeoutError):
        return True
    if isinstance(exc, sqlalchemy_exc.DBAPIError):
        if is_statement_timeout(exc):
            return False
        if exc.connection_invalidated:
            return True
        if isinstance(exc, sqlalchemy_exc.OperationalError | sqlalchemy_exc.InterfaceError):
            return True
        return isinstance(exc.orig, OSError | TimeoutError) or _cannot_connect_now(exc.orig)
    return False


def is_statement_timeout(exc: BaseException) -> bool:
    """The server cancelled a statement that ran past statement_timeout (SQLSTATE 57014)."""
    original = getattr(exc, "orig", None)
    return _sqlstate(original) == "57014"


def _sqlstate(error: BaseException | None) -> str | None:
    sqlstate = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
    return sqlstate if isinstance(sqlstate, str) else None


def _cannot_connect_now(error: BaseException | None) -> bool:
    """asyncpg's errors while a server starts or stops (SQLSTATE class 57P: operator
    intervention, e.g. 57P01 admin shutdown, 57P03 cannot connect now)."""
    sqlstate = _sqlstate(error)
    return sqlstate is not None and sqlstate.startswith("57P")


async def ping(engine: AsyncEngine) -> None:
    """One round-trip; raises when the database does not answer."""
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


def backoff_delays(
    initial: float, cap: float, *, jitter: Callable[[float], float] | None = None
) -> Iterator[float]:
    """1 s, 2 s, 4 s … up to the cap, each with ±20 % jitter so replicas do not retry in step."""
    jitter = jitter or (lambda delay: delay * random.uniform(0.8, 1.2))  # noqa: S311 - not crypto
    delay = initial
    while True:
        yield min(jitter(delay), cap)
        delay = min(delay * 2, cap)


async def wait_for_database(engine: AsyncEngine, *, initial: float, cap: float) -> None:
    """Retry until the database answers, forever: a pod that waits is better than one that
    crash-loops while the database restarts. Each failed attempt is logged with the next delay."""
    for attempt, delay in enumerate(backoff_delays(initial, cap), start=1):
        try:
            await ping(engine)
        except Exception as exc:  # noqa: BLE001 - any failure means: not yet
            log.warning(
                "database not reachable; retrying",
                attempt=attempt,
                retry_in_seconds=round(delay, 3),
                reason=type(exc).__name__,
            )
            await asyncio.sleep(delay)
        else:
            if attempt > 1:
                log.info("database reachable", attempt=attempt)
            return
