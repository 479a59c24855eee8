"""Note events for GraphQL subscriptions: one interface, three transports.

Every broker hands events to this process's subscribers through one bounded queue per
subscriber. A subscriber whose queue is full is dropped instead of slowing the publisher or
growing memory: it still reads what was queued, then its iterator ends, so it never sees a gap.

``MemoryBroker`` stays inside one process. ``PostgresBroker`` (LISTEN/NOTIFY) and
``RedisBroker`` (pub/sub) share events between replicas: ``publish`` only sends to the server,
and one listening connection per process delivers what the server relays to the local
subscribers, the publisher's own included. Every replica therefore sees the same events in the
same order: the order the server received them in.

The listener reconnects with backoff when its connection drops or stops answering, and
subscriptions stay open meanwhile. Events published while it is away are missed: neither
NOTIFY nor pub/sub keeps history.

Logs name an event by kind and note id only: a note's title and content may be private.
"""

from __future__ import annotations

import asyncio
import random
import re
import secrets
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, ClassVar, Generic, Literal, NoReturn, Protocol, TypeVar

import asyncpg  # type: ignore[import-untyped]
import orjson
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from pcf_api.observability.logging import get_logger
from pcf_api.store.models import NoteEvent

log = get_logger(__name__)

DEFAULT_CHANNEL = "pcf_api_note_events"
DEFAULT_QUEUE_SIZE = 256
MAX_EVENT_BYTES = 1_048_576
"""The largest event, as JSON, that ``publish`` accepts: the GraphQL layer's message limit."""

# Short enough for a PostgreSQL identifier and safe in logs and connection names.
_CHANNEL_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,63}")

# A NOTIFY payload must be shorter than 8000 bytes.
_NOTIFY_MAX_BYTES = 7999
# A chunk's data, leaving room for its header: "chunk:" + 16 hex digits + ":i:n:" (n <= 133).
_CHUNK_DATA_BYTES = 7900
_CHUNK_PREFIX = "chunk:"
_NOTIFY = "SELECT pg_notify($1, $2)"

# What a message that is not one of our events raises on the way to a NoteEvent.
_UNREADABLE = (ValueError, KeyError, TypeError, AttributeError)


class EventBroker(Protocol):
    async def start(self) -> None:
        """Connect and start listening; calling it again does nothing."""

    async def close(self) -> None:
        """End every open subscription and release every connection; final."""

    async def publish(self, event: NoteEvent) -> None:
        """Send ``event`` to every subscriber; ``ValueError`` when over ``MAX_EVENT_BYTES``."""

    def subscribe(self) -> Subscription:
        """An async context manager; entering starts the delivery of later events."""

    @property
    def subscriber_count(self) -> int:
        """Open subscriptions in this process."""


class Subscription:
    """One subscriber: entering starts the delivery, iterating reads it, exiting stops it.

    Only events published after entering arrive. Iteration ends when the broker closes, or when
    the broker drops this subscriber for falling a full queue behind; ``dropped`` tells which,
    so the GraphQL layer can report the loss rather than a normal completion.
    """

    def __init__(self, broker: _FanOutBroker, capacity: int) -> None:
        self._broker = broker
        self._capacity = capacity
        # Unbounded so the end marker always fits; _offer keeps at most `capacity` events in it.
        self._queue: asyncio.Queue[NoteEvent | None] = asyncio.Queue()
        self.dropped = False

    async def __aenter__(self) -> Subscription:
        self._broker._attach(self)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._broker._detach(self)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> NoteEvent:
        event = await self._queue.get()
        if event is None:
            self._queue.put_nowait(None)  # so that every later call ends too
            raise StopAsyncIteration
        return event

    def _offer(self, event: NoteEvent) -> bool:
        """Queue ``event``; False when the queue is full."""
        if self._queue.qsize() >= self._capacity:
            return False
        self._queue.put_nowait(event)
        return True

    def _end(self) -> None:
        self._queue.put_nowait(None)


class _FanOutBroker:
    """The subscriber side every backend shares."""

    backend: ClassVar[str]

    def __init__(self, queue_size: int) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self._queue_size = queue_size
        self._subscriptions: set[Subscription] = set()
        self._closed = False

    @property
    def subscriber_count(self) -> int:
        return len(self._subscriptions)

    def subscribe(self) -> Subscription:
        return Subscription(self, self._queue_size)

    def _attach(self, subscription: Subscription) -> None:
        if self._closed:
            subscription._end()
        else:
            self._subscriptions.add(subscription)

    def _detach(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    def _deliver(self, event: NoteEvent) -> None:
        """Queue ``event`` for every subscriber without waiting for any of them."""
        for subscription in list(self._subscriptions):
            if not subscription._offer(event):
                self._subscriptions.discard(subscription)
                subscription.dropped = True
                subscription._end()
                log.warning(
                    "dropped an events subscriber that fell behind",
                    backend=self.backend,
                    queue_size=self._queue_size,
                    kind=event.kind.value,
                    note_id=event.note_id,
                )

    def _end_subscriptions(self) -> None:
        for subscription in self._subscriptions:
            subscription._end()
        self._subscriptions.clear()


class MemoryBroker(_FanOutBroker):
    """Events inside one process: enough when a single replica serves every client."""

    backend = "memory"

    def __init__(self, *, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        super().__init__(queue_size)
        self._started = False

    async def start(self) -> None:
        if self._closed:
            raise RuntimeError("the events broker is closed")
        self._started = True

    async def close(self) -> None:
        self._closed = True
        self._end_subscriptions()

    async def publish(self, event: NoteEvent) -> None:
        # Required here too, so that code tested against this broker runs on the others.
        if not self._started or self._closed:
            raise RuntimeError("the events broker is not running")
        _encode(event)  # the same size limit as the other backends
        self._deliver(event)


ListenerT = TypeVar("ListenerT")
PublisherT = TypeVar("PublisherT")


class _ListeningBroker(_FanOutBroker, ABC, Generic[ListenerT, PublisherT]):
    """A broker whose events travel through a server: publishers send, one listener receives.

    ``timeout`` bounds every wait for the server: connecting, publishing, answering a probe. It
    is also how long the listener stays quiet before it probes its connection, so a connection
    that died silently is replaced within two timeouts.
    """

    def __init__(
        self,
        *,
        channel: str,
        queue_size: int,
        reconnect_delay: float,
        max_reconnect_delay: float,
        timeout: float,
    ) -> None:
        super().__init__(queue_size)
        if not _CHANNEL_NAME.fullmatch(channel):
            raise ValueError(f"channel must match {_CHANNEL_NAME.pattern}: {channel!r}")
        self.channel = channel
        self._reconnect_delay = reconnect_delay
        self._max_reconnect_delay = max_reconnect_delay
        self._timeout = timeout
        self._lifecycle = asyncio.Lock()
        self._publisher: PublisherT | None = None
        self._listener: ListenerT | None = None
        self._supervisor: asyncio.Task[NoReturn] | None = None

    async def start(self) -> None:
        """Fails when the server cannot be reached: a replica without events is broken."""
        async with self._lifecycle:
            if self._closed:
                raise RuntimeError("the events broker is closed")
            if self._publisher is not None:
                return
            publisher = await self._open_publisher()
            try:
                self._listener = await self._listen()
            except BaseException:
                await self._close_publisher(publisher)
                raise
            self._publisher = publisher
            self._supervisor = asyncio.create_task(
                self._supervise(self._listener), name=f"{self.backend} events listener"
            )
            log.info("events listener started", backend=self.backend, channel=self.channel)

    async def close(self) -> None:
        async with self._lifecycle:
            self._closed = True
            self._end_subscriptions()
            if self._supervisor is not None:
                self._supervisor.cancel()
                await asyncio.wait([self._supervisor])
                self._supervisor = None
            if self._listener is not None:
                await self._release(self._listener)
                self._listener = None
            if self._publisher is not None:
                await self._close_publisher(self._publisher)
                self._publisher = None

    async def publish(self, event: NoteEvent) -> None:
        data = _encode(event)
        if self._publisher is None:
            raise RuntimeError("the events broker is not running")
        await self._send(self._publisher, data)
        log.debug(
            "note event published",
            backend=self.backend,
            kind=event.kind.value,
            note_id=event.note_id,
        )

    async def _supervise(self, listener: ListenerT) -> NoReturn:
        """Keep a listener connected for as long as the broker runs."""
        while True:
            try:
                await self._watch(listener)
            except Exception as error:  # noqa: BLE001 - whatever broke it, the listener must return
                log.warning(
                    "events listener lost its connection; reconnecting",
                    backend=self.backend,
                    channel=self.channel,
                    error=_describe(error),
                )
            await self._release(listener)
            self._listener = None
            listener = self._listener = await self._reconnect()
            log.info(
                "events listener reconnected; events published meanwhile were missed",
                backend=self.backend,
                channel=self.channel,
            )

    async def _reconnect(self) -> ListenerT:
        attempt = 0
        while True:
            try:
                return await self._listen()
            except Exception as error:  # noqa: BLE001 - retried, and each failure is logged
                # Jitter, so that replicas which lost the server together do not return in step.
                delay = min(self._max_reconnect_delay, self._reconnect_delay * 2**attempt)
                delay *= random.uniform(0.5, 1.0)  # noqa: S311 - not cryptographic
                attempt += 1
                log.warning(
                    "events listener cannot reconnect; retrying",
                    backend=self.backend,
                    channel=self.channel,
                    attempt=attempt,
                    retry_in_seconds=round(delay, 3),
                    error=_describe(error),
                )
                await asyncio.sleep(delay)

    def _receive(self, message: str | bytes) -> None:
        try:
            event = NoteEvent.from_json(orjson.loads(message))
        except _UNREADABLE:
            self._ignore(len(message))
            return
        self._deliver(event)

    def _ignore(self, size: int) -> None:
        # Another program on the channel, or a replica of another version: skip, never crash.
        log.warning(
            "ignored an unreadable message on the events channel",
            backend=self.backend,
            channel=self.channel,
            size=size,
        )

    @abstractmethod
    async def _open_publisher(self) -> PublisherT: ...

    @abstractmethod
    async def _close_publisher(self, publisher: PublisherT) -> None: ...

    @abstractmethod
    async def _send(self, publisher: PublisherT, data: bytes) -> None: ...

    @abstractmethod
    async def _listen(self) -> ListenerT:
        """A connection subscribed to the channel; once this returns, events reach it."""

    @abstractmethod
    async def _watch(self, listener: ListenerT) -> NoReturn:
        """Deliver what ``listener`` receives; raise once its connection is gone or silent."""

    @abstractmethod
    async def _release(self, listener: ListenerT) -> None:
        """Close ``listener``, which may be broken already; never raises."""


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


class PostgresBroker(_ListeningBroker[_PgListener, Any]):
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


@dataclass
class _RedisListener:
    client: Redis
    pubsub: PubSub


class RedisBroker(_ListeningBroker[_RedisListener, Redis]):
    """Redis pub/sub on one channel; a message can hold any event, so nothing is chunked."""

    backend = "redis"

    def __init__(
        self,
        url: str,
        *,
        channel: str = DEFAULT_CHANNEL,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        reconnect_delay: float = 0.5,
        max_reconnect_delay: float = 30.0,
        timeout: float = 10.0,
    ) -> None:
        super().__init__(
            channel=channel,
            queue_size=queue_size,
            reconnect_delay=reconnect_delay,
            max_reconnect_delay=max_reconnect_delay,
            timeout=timeout,
        )
        self._url = url

    async def _open_publisher(self) -> Redis:
        # One immediate retry replaces a pooled connection the server has closed; more would hold
        # up the mutation that publishes for as long as Redis is away.
        return Redis.from_url(
            self._url,
            retry=Retry(NoBackoff(), retries=1),
            socket_connect_timeout=self._timeout,
            socket_timeout=self._timeout,
        )

    async def _close_publisher(self, publisher: Redis) -> None:
        await publisher.aclose()

    async def _send(self, publisher: Redis, data: bytes) -> None:
        await publisher.publish(self.channel, data)

    async def _listen(self) -> _RedisListener:
        # No retries inside redis-py (not even its reconnect-then-raise): reconnecting is the
        # supervisor's job, so that it is logged and re-subscribes the same way every time.
        client = Redis.from_url(
            self._url,
            retry=Retry(NoBackoff(), retries=0, supported_errors=()),
            socket_connect_timeout=self._timeout,
            socket_timeout=self._timeout,
        )
        listener = _RedisListener(client, client.pubsub())
        try:
            async with asyncio.timeout(self._timeout):
                await listener.pubsub.subscribe(self.channel)
                # In effect once confirmed: an event published after start() returns arrives.
                await listener.pubsub.get_message(timeout=None)
        except BaseException:
            await self._release(listener)
            raise
        return listener

    async def _watch(self, listener: _RedisListener) -> NoReturn:
        awaiting_pong = False
        while True:
            message = await listener.pubsub.get_message(timeout=self._timeout)
            if message is None:
                # Quiet for a whole interval: make sure the connection still answers.
                if awaiting_pong:
                    raise TimeoutError("the server did not answer PING")
                await listener.pubsub.ping()
                awaiting_pong = True
            elif message["type"] == "pong":
                awaiting_pong = False
            elif message["type"] == "message":
                self._receive(message["data"])

    async def _release(self, listener: _RedisListener) -> None:
        await listener.pubsub.aclose()  # type: ignore[no-untyped-call]
        await listener.client.aclose()


def create_broker(
    kind: Literal["memory", "postgres", "redis"],
    url: str | None,
    *,
    password: Callable[[], str | None] | None = None,
) -> EventBroker:
    """The broker for ``kind``: ``url`` is the database URL for postgres (``password``, the
    current database password), Redis's for redis."""
    if kind == "memory":
        return MemoryBroker()
    if url is None:
        raise ValueError(f"the {kind} events broker needs a URL")
    if kind == "postgres":
        return PostgresBroker(url, password=password)
    if kind == "redis":
        return RedisBroker(url)
    raise ValueError(f"unknown events broker {kind!r}")


def _encode(event: NoteEvent) -> bytes:
    data = orjson.dumps(event.to_json())
    if len(data) > MAX_EVENT_BYTES:
        raise ValueError(f"note event is {len(data)} bytes as JSON; the limit is {MAX_EVENT_BYTES}")
    return data


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


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
