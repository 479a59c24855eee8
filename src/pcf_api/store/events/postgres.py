"""PostgreSQL LISTEN/NOTIFY: events shared between the replicas of one database.

``publish`` only sends to the server, and one listening connection per process delivers what
the server relays to the local subscribers, the publisher's own included, so every replica sees
the same events in the same order. The listener reconnects with back-off when its connection
drops or stops answering; since NOTIFY keeps no history, the subscriptions open then are ended,
told why (see ``ListeningBroker``), rather than left to miss events silently.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NoReturn

import asyncpg  # type: ignore[import-untyped]

from pcf_api.store.events.base import DEFAULT_CHANNEL, DEFAULT_QUEUE_SIZE, ListeningBroker

# A NOTIFY payload must be shorter than 8000 bytes.
_NOTIFY_MAX_BYTES = 7999
# A chunk's data, leaving room for its header: "chunk:" + 16 hex digits + ":i:n:" (n <= 133).
_CHUNK_DATA_BYTES = 7900
_CHUNK_PREFIX = "chunk:"
_NOTIFY = "SELECT pg_notify($1, $2)"


class _Chunks:
    """Reassembles the events that ``PostgresBroker`` had to send in several NOTIFYs.

    The chunks of an event are NOTIFYs of one transaction, which PostgreSQL delivers together
    and in order, so one connection has at most one event in progress.
    """

    def __init__(self) -> None:
        self._message_id = ""
        self._parts: list[str] = []

    def add(self, payload: str) -> str | None:
        """The whole message once ``payload`` completes one; ``ValueError`` when malformed."""
        if not payload.startswith(_CHUNK_PREFIX):
            return payload
        message_id, index, count, part = payload.removeprefix(_CHUNK_PREFIX).split(":", 3)
        if index == "0":
            self._message_id, self._parts = message_id, []
        elif message_id != self._message_id or int(index) != len(self._parts):
            self._message_id, self._parts = "", []
            raise ValueError("note event chunk out of sequence")
        self._parts.append(part)
        if len(self._parts) < int(count):
            return None
        message, self._message_id, self._parts = "".join(self._parts), "", []
        return message


@dataclass
class _PgListener:
    connection: Any  # asyncpg.Connection
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    chunks: _Chunks = field(default_factory=_Chunks)


class PostgresBroker(ListeningBroker[_PgListener, Any]):
    """LISTEN/NOTIFY on one channel of the application's database.

    An event whose JSON does not fit in one NOTIFY (8000 bytes; a note's content alone may be
    10 000 characters) is sent as numbered chunks — ``chunk:<id>:<index>:<count>:<data>``, cut
    at UTF-8 character boundaries — all in one transaction, so listeners receive all of them
    together, in order and only if every one was sent, and join them back into the event.
    Nothing is stored anywhere, so a receiver never has to fetch an event it was told about.

    ``url`` may be SQLAlchemy's form (``postgresql+asyncpg://``). The listener needs a session
    of its own, so it must not go through a transaction-pooling proxy such as PgBouncer.
    ``password``, when given, is asked for at each new connection (the listener's reconnects and
    the publishing pool's), so a rotated database password applies to them.
    """

    backend = "postgres"

    def __init__(
        self,
        url: str,
        *,
        channel: str = DEFAULT_CHANNEL,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        publish_connections: int = 4,
        reconnect_delay: float = 0.5,
        max_reconnect_delay: float = 30.0,
        timeout: float = 10.0,
        password: Callable[[], str | None] | None = None,
    ) -> None:
        super().__init__(
            channel=channel,
            queue_size=queue_size,
            reconnect_delay=reconnect_delay,
            max_reconnect_delay=max_reconnect_delay,
            timeout=timeout,
        )
        self._dsn = _asyncpg_dsn(url)
        self._publish_connections = publish_connections
        self._password = password

    def _credentials(self) -> dict[str, Any]:
        """asyncpg calls a callable password at each new connection; without one, the DSN's."""
        return {} if self._password is None else {"password": self._password}

    async def _open_publisher(self) -> Any:
        return await asyncpg.create_pool(
            self._dsn,
            **self._credentials(),
            min_size=1,
            max_size=self._publish_connections,
            timeout=self._timeout,
            command_timeout=self._timeout,
        )

    async def _close_publisher(self, publisher: Any) -> None:
        await publisher.close()

    async def _send(self, publisher: Any, data: bytes) -> None:
        payloads = [(self.channel, payload) for payload in _notify_payloads(data)]
        async with publisher.acquire() as connection:
            # executemany is atomic (asyncpg 0.22+): the chunks commit as one transaction.
            await connection.executemany(_NOTIFY, payloads)

    async def _listen(self) -> _PgListener:
        async with asyncio.timeout(self._timeout):
            # Named after the channel, so an operator can tell which listener is whose.
            connection = await asyncpg.connect(
                self._dsn,
                **self._credentials(),
                server_settings={"application_name": f"pcf_api events {self.channel}"},
            )
            listener = _PgListener(connection)
            connection.add_termination_listener(lambda _: listener.lost.set())
            try:
                await connection.add_listener(self.channel, partial(self._on_notify, listener))
            except BaseException:
                connection.terminate()
                raise
        return listener

    async def _watch(self, listener: _PgListener) -> NoReturn:
        while True:
            try:
                await asyncio.wait_for(listener.lost.wait(), self._timeout)
            except TimeoutError:
                # A connection can die without a word (a failover, a NAT forgetting it):
                # only a question it has to answer shows that it is still there.
                await listener.connection.execute("SELECT 1", timeout=self._timeout)
            else:
                raise ConnectionError("the server closed the listening connection")

    async def _release(self, listener: _PgListener) -> None:
        # Abrupt is fine: the connection only listens, and has no transaction to end.
        listener.connection.terminate()

    def _on_notify(
        self, listener: _PgListener, _connection: Any, _pid: int, _channel: str, payload: str
    ) -> None:
        try:
            message = listener.chunks.add(payload)
        except ValueError:
            self._ignore(len(payload))
            return
        if message is not None:
            self._receive(message)


def _notify_payloads(data: bytes) -> list[str]:
    """``data`` as NOTIFY payloads: itself when it fits in one, else numbered chunks."""
    if len(data) <= _NOTIFY_MAX_BYTES:
        return [data.decode()]
    parts = []
    start = 0
    while start < len(data):
        end = min(start + _CHUNK_DATA_BYTES, len(data))
        while end < len(data) and data[end] & 0xC0 == 0x80:  # inside a character: cut before it
            end -= 1
        parts.append(data[start:end].decode())
        start = end
    message_id = secrets.token_hex(8)
    return [f"{_CHUNK_PREFIX}{message_id}:{i}:{len(parts)}:{p}" for i, p in enumerate(parts)]


def _asyncpg_dsn(url: str) -> str:
    """asyncpg takes libpq URLs; SQLAlchemy's also name the driver (``postgresql+asyncpg``)."""
    scheme, separator, rest = url.partition("://")
    return f"{scheme.split('+', 1)[0]}{separator}{rest}"
