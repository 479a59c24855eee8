"""The database engine: creation from settings, start-up retries, the readiness check, and the
translation of SQLAlchemy's errors into the store's typed errors (``pcf_api.errors``)."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy
import structlog
from sqlalchemy import Connection, Engine, Pool, event, text
from sqlalchemy import exc as sqlalchemy_exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from pcf_api.compat.sqlalchemy import greenlet_spawn
from pcf_api.config import DatabaseSettings
from pcf_api.errors import (
    StoreConflict,
    StoreError,
    StoreOverloaded,
    StoreTimeout,
    StoreUnavailable,
)
from pcf_api.resilience import retry_forever
from pcf_api.secretfiles import RotatingSecret, SecretFiles

# structlog's own logger: the store does not depend on pcf_api.observability, which configures it.
log: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(__name__)

T = TypeVar("T")

SQLITE_POOL_SIZE = 2


def database_url(settings: DatabaseSettings) -> URL:
    if settings.url is None:
        raise ValueError("database.url is not set")
    return make_url(settings.url.get_secret_value())


def is_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite"


PasswordSource = Callable[[], str | None]
"""The database password to connect with now (None: the URL's own, if any)."""


def database_password(secrets: SecretFiles) -> PasswordSource:
    """The current password: ``database.password`` when set, else the one in ``database.url``.

    Both may come from files that rotate; each new connection asks again, so a new password is
    used from its next connection on while open ones keep working. Only the password of a
    changed ``database.url`` applies while running: a change of host, user or database is
    logged and waits for a restart.
    """
    password = secrets.get("database.password")
    if password is not None:
        return lambda: password.value or None
    url = secrets.get("database.url")
    if url is None:
        return lambda: None
    started_with = _without_password(url.value)

    def other_parts_changed(secret: RotatingSecret) -> None:
        if _without_password(secret.value) != started_with:
            log.warning(
                "database.url changed in more than its password; only the password applies "
                "until a restart",
                setting=secret.key,
            )

    url.subscribe(other_parts_changed)
    return lambda: _password_of(url.value)


def _password_of(url: str) -> str | None:
    try:
        return make_url(url).password
    except sqlalchemy_exc.ArgumentError:  # the watcher keeps parseable URLs only: a backstop
        return None


def _without_password(url: str) -> tuple[object, ...]:
    try:
        parsed = make_url(url)
    except sqlalchemy_exc.ArgumentError:
        return ()
    query = tuple(sorted(parsed.query.items()))
    return parsed.drivername, parsed.username, parsed.host, parsed.port, parsed.database, query


def create_engine(
    settings: DatabaseSettings, *, password: PasswordSource | None = None
) -> AsyncEngine:
    """An async engine with the configured pool; SQLite gets WAL and a busy timeout.

    ``password`` is asked for at each new connection (see ``database_password``); without it,
    ``database.password`` or the URL's password as loaded."""
    url = database_url(settings)
    if is_sqlite(url):
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        # Two connections: SQLite has one writer at a time anyway, and every further connection
        # is a driver thread contending with the event loop for the GIL (docs/benchmarks.md).
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
    engine = create_async_engine(
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
    if password is None and settings.password is not None:
        password = partial(_fixed, settings.password.get_secret_value() or None)
    if password is not None:
        event.listen(engine.sync_engine, "do_connect", partial(_current_password, password))
    return engine


def _fixed(value: str | None) -> str | None:
    return value


def _current_password(
    password: PasswordSource, _dialect: Any, _record: Any, _args: Any, params: dict[str, Any]
) -> None:
    """SQLAlchemy's ``do_connect`` hook: each new connection logs in with the current password."""
    current = password()
    if current is not None:
        params["password"] = current


def _sqlite_pragmas(dbapi_connection: Any, _: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


Work = Callable[[Connection], T]
"""A unit of database work: a synchronous function of a SQLAlchemy connection that returns
plain values (it reads every row it needs before returning)."""


class Database:
    """Where the store and the local authorizer run their SQL: each operation is one ``Work``
    function, run in one go. Its failures are the store's typed errors (``store_error``), never
    SQLAlchemy's or the driver's; an exception ``work`` raises itself passes unchanged.

    Why not ``AsyncConnection.execute`` throughout: aiosqlite hops to its connection's thread
    and back for every driver call (cursor, execute, fetch, close, and the rollback on release:
    five for one read), a large share of a notes query's CPU (docs/benchmarks.md, change 5).
    On SQLite an operation therefore runs whole on a synchronous pysqlite engine in a thread
    pool, one hop per operation. asyncpg is native asyncio: on PostgreSQL the same function runs
    in the async engine's event-loop bridge, whole: one greenlet for checkout, statements and
    return, where ``AsyncConnection`` would take three and a task of its own to close
    (docs/benchmarks.md, change 9; the bridge is in ``pcf_api.compat.sqlalchemy``).

    ``engine``, the async engine, stays for start-up and migrations.
    """

    def __init__(self, engine: AsyncEngine, settings: DatabaseSettings) -> None:
        self.engine = engine
        self._threaded = _ThreadedSQLite(engine.url, settings) if is_sqlite(engine.url) else None
        self._admission = Admission(
            settings.pool_size + settings.max_overflow,
            settings.pool_timeout_seconds,
            f"{engine.dialect.name} connections",
        )
        # Reads are single statements: on PostgreSQL, autocommit spares them the BEGIN and
        # ROLLBACK round trips.
        self._reader = (
            engine.execution_options(isolation_level="AUTOCOMMIT")
            if engine.dialect.name == "postgresql"
            else engine
        )

    @property
    def dialect_name(self) -> str:
        return str(self.engine.dialect.name)

    @property
    def statement_engines(self) -> tuple[Engine, ...]:
        """Every engine statements run on, for event listeners (metrics, tracing, tests)."""
        if self._threaded is None:
            return (self.engine.sync_engine,)
        return (self.engine.sync_engine, self._threaded.engine)

    @property
    def pool(self) -> Pool:
        """The pool that serves requests."""
        return self._threaded.engine.pool if self._threaded is not None else self.engine.pool

    def pool_is_busy(self) -> bool:
        """Every connection the pool keeps is in use by a request right now."""
        pool: Any = self.pool
        return bool(pool.checkedout() >= pool.size())

    async def read(self, work: Work[T]) -> T:
        """``work`` on a connection without a transaction of its own (autocommit on
        PostgreSQL; SQLite opens none for a SELECT)."""
        try:
            if self._threaded is not None:
                return await self._threaded.run(work, transaction=False)
            async with self._admission:
                return await greenlet_spawn(_run, self._reader.sync_engine.connect, work)
        except Exception as exc:
            error = store_error(exc)
            if error is None or error is exc:
                raise
            raise error from exc

    async def write(self, work: Work[T]) -> T:
        """``work`` in a transaction, committed when it returns, rolled back when it raises."""
        try:
            if self._threaded is not None:
                return await self._threaded.run(work, transaction=True)
            async with self._admission:
                return await greenlet_spawn(_run, self.engine.sync_engine.begin, work)
        except Exception as exc:
            error = store_error(exc)
            if error is None or error is exc:
                raise
            raise error from exc

    async def ping(self) -> None:
        """One round trip through the pool that serves requests; raises when it fails."""
        await self.read(select_one)

    async def dispose(self) -> None:
        if self._threaded is not None:
            await asyncio.to_thread(self._threaded.close)
        await self.engine.dispose()


def _run(connect: Callable[[], AbstractContextManager[Connection]], work: Work[T]) -> T:
    with connect() as connection:
        return work(connection)


def select_one(connection: Connection) -> None:
    """The smallest round trip: a ping's work."""
    connection.execute(text("SELECT 1"))


class Admission:
    """Admission to a fixed number of connections, first come first served, counted on the
    event loop: a request that finds every one busy waits at most ``timeout`` seconds, then
    fails like SQLAlchemy's own pool (StoreOverloaded, answered as SERVICE_UNAVAILABLE).

    Why not the pool's own wait: SQLAlchemy's pool for asyncio hands a returned connection to
    whichever request asks next, not to the one that has waited longest, so under load a
    request can lose its turn again and again (stalls of a second, docs/benchmarks.md).
    ``asyncio.Semaphore`` serves its waiters in order (Python 3.11 and later).
    """

    def __init__(self, size: int, timeout: float, what: str) -> None:
        self.size = size
        self.timeout = timeout
        self._what = what
        self._slots = asyncio.Semaphore(size)

    async def acquire(self) -> None:
        if not self._slots.locked():
            await self._slots.acquire()
            return
        try:
            async with asyncio.timeout(self.timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise StoreOverloaded(
                f"all {self.size} {self._what} stayed busy for {self.timeout:g} s",
                reason="TimeoutError",
            ) from None

    def release(self) -> None:
        self._slots.release()

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *_: object) -> None:
        self.release()


class _ThreadedSQLite:
    """A pysqlite engine and one thread per pooled connection.

    Admission (``Admission``) is counted on the event loop. A slot comes free when the thread is
    done, not when the caller stops waiting: a cancelled request's statement still holds its
    connection until it ends.
    """

    def __init__(self, url: URL, settings: DatabaseSettings) -> None:
        self.size = SQLITE_POOL_SIZE
        self.engine = sqlalchemy.create_engine(
            url.set(drivername="sqlite+pysqlite"),
            pool_size=self.size,
            max_overflow=0,
            pool_timeout=settings.pool_timeout_seconds,
            connect_args={"timeout": settings.connect_timeout_seconds, "check_same_thread": False},
        )
        event.listen(self.engine, "connect", _sqlite_pragmas)
        self._threads = ThreadPoolExecutor(max_workers=self.size, thread_name_prefix="sqlite")
        self._admission = Admission(self.size, settings.pool_timeout_seconds, "SQLite connections")

    async def run(self, work: Work[T], *, transaction: bool) -> T:
        loop = asyncio.get_running_loop()
        await self._admission.acquire()
        try:
            # The caller's context goes along: log lines and spans of the statements belong to
            # the request that made them.
            running = self._threads.submit(
                contextvars.copy_context().run, self._call, work, transaction
            )
        except BaseException:
            self._admission.release()
            raise
        running.add_done_callback(partial(self._free_slot, loop))
        return await asyncio.wrap_future(running)

    def _free_slot(self, loop: asyncio.AbstractEventLoop, _: Future[Any]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting
            loop.call_soon_threadsafe(self._admission.release)

    def _call(self, work: Work[T], transaction: bool) -> T:
        return _run(self.engine.begin if transaction else self.engine.connect, work)

    def close(self) -> None:
        self._threads.shutdown(wait=True)
        self.engine.dispose()


def create_database(
    settings: DatabaseSettings, *, password: PasswordSource | None = None
) -> Database:
    """The engine (see ``create_engine``) and the way operations run on it."""
    return Database(create_engine(settings, password=password), settings)


def store_error(exc: BaseException) -> StoreError | None:
    """The typed error ``exc`` stands for; None when it is no database failure (an error the
    work raised itself). The one place that reads SQLAlchemy's and the drivers' errors."""
    if isinstance(exc, StoreError):
        return exc
    kind: type[StoreError]
    if is_pool_exhausted(exc):
        kind = StoreOverloaded
    elif is_statement_timeout(exc):
        kind = StoreTimeout
    elif is_unavailable(exc):
        kind = StoreUnavailable
    elif isinstance(exc, sqlalchemy_exc.IntegrityError):
        kind = StoreConflict
    elif isinstance(exc, sqlalchemy_exc.SQLAlchemyError):
        kind = StoreError
    else:
        return None
    return kind(_describe(exc), reason=type(exc).__name__)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def is_unavailable(exc: BaseException) -> bool:
    """Whether an error means "the database cannot be reached" rather than "this query is wrong".

    Only such errors make writes wait and reads fall back to the cache. A request that found
    every pooled connection busy (SQLAlchemy's pool time-out) is not one: the database answers,
    this instance is overloaded (see ``is_pool_exhausted``). Takes the store's typed errors
    (StoreUnavailable) as well as SQLAlchemy's.
    """
    if isinstance(exc, StoreError):
        return isinstance(exc, StoreUnavailable)
    return _cannot_reach(exc)


def _cannot_reach(exc: BaseException) -> bool:
    if isinstance(exc, OSError | TimeoutError):
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


def is_pool_exhausted(exc: BaseException) -> bool:
    """No pooled connection came free within ``database.pool_timeout_seconds``: overload."""
    return isinstance(exc, StoreOverloaded | sqlalchemy_exc.TimeoutError)


def is_statement_timeout(exc: BaseException) -> bool:
    """The server cancelled a statement that ran past statement_timeout (SQLSTATE 57014)."""
    if isinstance(exc, StoreError):
        return isinstance(exc, StoreTimeout)
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


async def wait_for_database(engine: AsyncEngine, *, initial: float, cap: float) -> None:
    """Retry until the database answers, forever: a pod that waits is better than one that
    crash-loops while the database restarts. Each failed attempt is logged with the next delay
    (``pcf_api.resilience.retry_forever``)."""
    await retry_forever(
        partial(ping, engine),
        initial=initial,
        cap=cap,
        log=log,
        retrying="database not reachable; retrying",
        recovered="database reachable",
    )
