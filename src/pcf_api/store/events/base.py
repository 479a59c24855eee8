"""What every events backend shares: the broker interface, subscriptions and their bounded
queues, and the listener that a server-backed broker keeps connected.

Every broker hands events to this process's subscribers through one queue per subscriber,
bounded in events and in bytes (each event counted as its JSON). A subscriber whose queue is
full is dropped instead of slowing the publisher or growing memory: it still reads what was
queued, then its iterator ends, so it never sees a gap.

Logs name an event by kind and note id only: a note's title and content may be private.
"""

from __future__ import annotations

import asyncio
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar, Generic, NoReturn, Protocol, TypeVar

import orjson
import structlog

from pcf_api.resilience import BreakerState, CircuitBreaker, retry_forever
from pcf_api.store.models import NoteEvent

# One logger for every backend, named after the package as before it was split; structlog's
# own, so the store does not depend on pcf_api.observability, which configures it.
log: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger("pcf_api.store.events")

DEFAULT_CHANNEL = "pcf_api_note_events"
DEFAULT_QUEUE_SIZE = 256
DEFAULT_QUEUE_BYTES = 8 * 1_048_576
"""What one subscriber's queue may hold, as event JSON; at least ``MAX_EVENT_BYTES``."""
MAX_EVENT_BYTES = 1_048_576
"""The largest event, as JSON, that ``publish`` accepts: the GraphQL layer's message limit."""

# Short enough for a PostgreSQL identifier and safe in logs and connection names.
_CHANNEL_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,63}")

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
    the broker drops this subscriber for falling a full queue behind, or when its events stopped
    arriving (the server was lost); ``dropped`` and ``interruption`` tell which, so the GraphQL
    layer can report the loss rather than a normal completion.
    """

    def __init__(self, broker: FanOutBroker, capacity: int, max_bytes: int) -> None:
        self._broker = broker
        self._capacity = capacity
        self._max_bytes = max_bytes
        self._bytes = 0
        # Unbounded so the end marker always fits; _offer keeps it within both bounds.
        self._queue: asyncio.Queue[tuple[NoteEvent, int] | None] = asyncio.Queue()
        self.dropped = False
        self.interruption: str | None = None
        """Why events stopped arriving, when the broker ended this subscription for that."""

    async def __aenter__(self) -> Subscription:
        self._broker._attach(self)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._broker._detach(self)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> NoteEvent:
        item = await self._queue.get()
        if item is None:
            self._queue.put_nowait(None)  # so that every later call ends too
            raise StopAsyncIteration
        event, size = item
        self._bytes -= size
        return event

    def _offer(self, event: NoteEvent, size: int) -> bool:
        """Queue ``event`` of ``size`` bytes; False when that would overfill the queue."""
        if self._queue.qsize() >= self._capacity or self._bytes + size > self._max_bytes:
            return False
        self._queue.put_nowait((event, size))
        self._bytes += size
        return True

    def _end(self) -> None:
        self._queue.put_nowait(None)


class FanOutBroker:
    """The subscriber side every backend shares."""

    backend: ClassVar[str]

    def __init__(self, queue_size: int, queue_bytes: int = DEFAULT_QUEUE_BYTES) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        if queue_bytes < MAX_EVENT_BYTES:
            raise ValueError(f"queue_bytes must be at least {MAX_EVENT_BYTES} (the largest event)")
        self._queue_size = queue_size
        self._queue_bytes = queue_bytes
        self._subscriptions: set[Subscription] = set()
        self._closed = False
        self._interruption: str | None = None
        """Set while events cannot arrive: new subscriptions end at once, told why."""

    @property
    def subscriber_count(self) -> int:
        return len(self._subscriptions)

    def subscribe(self) -> Subscription:
        return Subscription(self, self._queue_size, self._queue_bytes)

    def _attach(self, subscription: Subscription) -> None:
        if self._closed or self._interruption is not None:
            subscription.interruption = self._interruption
            subscription._end()
        else:
            self._subscriptions.add(subscription)

    def _detach(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    def _deliver(self, event: NoteEvent) -> None:
        """Queue ``event`` for every subscriber without waiting for any of them."""
        self._deliver_to(event, list(self._subscriptions))

    def _deliver_to(
        self, event: NoteEvent, subscriptions: Sequence[Subscription], size: int | None = None
    ) -> None:
        """Queue ``event`` (``size`` bytes, measured when not given) for those of
        ``subscriptions`` still attached; drop any that is full."""
        if size is None:
            size = event_bytes(event)
        for subscription in subscriptions:
            if subscription in self._subscriptions and not subscription._offer(event, size):
                self._drop(subscription, event)

    def _interrupt(self, subscriptions: Sequence[Subscription], interruption: str) -> None:
        """End those of ``subscriptions`` still attached, telling them why."""
        for subscription in subscriptions:
            if subscription in self._subscriptions:
                self._subscriptions.discard(subscription)
                subscription.interruption = interruption
                subscription._end()

    def _drop(self, subscription: Subscription, event: NoteEvent) -> None:
        self._subscriptions.discard(subscription)
        subscription.dropped = True
        subscription._end()
        log.warning(
            "dropped an events subscriber that fell behind",
            backend=self.backend,
            queue_size=self._queue_size,
            queue_bytes=self._queue_bytes,
            kind=event.kind.value,
            note_id=event.note_id,
        )

    def _end_subscriptions(self, interruption: str | None = None) -> None:
        for subscription in self._subscriptions:
            subscription.interruption = interruption
            subscription._end()
        self._subscriptions.clear()


ListenerT = TypeVar("ListenerT")
PublisherT = TypeVar("PublisherT")


class EventsUnavailable(Exception):
    """The events server cannot be reached: an event was not sent, or events stopped arriving."""


class ListeningBroker(FanOutBroker, ABC, Generic[ListenerT, PublisherT]):
    """A broker whose events travel through a server: publishers send, one listener receives.

    ``timeout`` bounds every wait for the server: connecting, publishing, answering a probe. It
    is also how long the listener stays quiet before it probes its connection, so a connection
    that died silently is replaced within two timeouts.

    Losing the server is never silent: every open subscription ends with ``interruption`` set
    (the events published meanwhile would be missed), new ones end at once until the listener
    is back, ``check`` fails (readiness ``degraded``), and after ``BREAKER_FAILURES`` failed
    publishes in a row ``publish`` refuses at once for ``BREAKER_RESET_SECONDS`` instead of
    each mutation waiting for the timeout.
    """

    BREAKER_FAILURES: ClassVar[int] = 3
    BREAKER_RESET_SECONDS: ClassVar[float] = 5.0

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
        self._interruption = "the events listener has not started"
        self.breaker = CircuitBreaker(
            f"events_{self.backend}",
            failure_threshold=self.BREAKER_FAILURES,
            reset_timeout=self.BREAKER_RESET_SECONDS,
        )

    @property
    def health_name(self) -> str:
        """The readiness entry and start-up log name of this broker's server."""
        return f"events_{self.backend}"

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
            except BaseException as error:
                self._interruption = describe_error(error)
                await self._close_publisher(publisher)
                raise
            self._publisher = publisher
            self._interruption = None
            self._supervisor = asyncio.create_task(
                self._supervise(self._listener), name=f"{self.backend} events listener"
            )
            log.info("events listener started", backend=self.backend, channel=self.channel)

    async def close(self) -> None:
        async with self._lifecycle:
            self._closed = True
            self._interruption = None  # closing is a normal end, not a loss
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

    async def check(self) -> None:
        """Health: the listener is connected (it probes its connection itself) and the breaker
        does not refuse publishing."""
        if self._interruption is not None:
            raise ConnectionError(f"no events listener: {self._interruption}")
        if self.breaker.state is BreakerState.OPEN:
            raise ConnectionError("publishing events keeps failing")

    async def publish(self, event: NoteEvent) -> None:
        """Raises EventsUnavailable when the server cannot take the event."""
        data = encode_event(event)
        publisher = self._publisher
        if publisher is None:
            raise RuntimeError("the events broker is not running")
        try:
            await self.breaker.call(lambda: self._send(publisher, data))
        except Exception as error:
            raise EventsUnavailable(describe_error(error)) from error
        log.debug(
            "note event published",
            backend=self.backend,
            kind=event.kind.value,
            note_id=event.note_id,
        )

    async def _supervise(self, listener: ListenerT) -> NoReturn:
        """Keep a listener connected for as long as the broker runs; while it is not, tell
        every subscriber (their events would be missed) and refuse new ones."""
        while True:
            try:
                await self._watch(listener)
            except Exception as error:  # noqa: BLE001 - whatever broke it, the listener must return
                reason = describe_error(error)
                self._interruption = reason
                self._end_subscriptions(reason)
                log.warning(
                    "events listener lost its connection; reconnecting",
                    backend=self.backend,
                    channel=self.channel,
                    dependency=self.health_name,
                    error=reason,
                )
            await self._release(listener)
            self._listener = None
            listener = self._listener = await self._reconnect()
            self._interruption = None
            log.info(
                "events listener reconnected; subscriptions are accepted again",
                backend=self.backend,
                channel=self.channel,
            )

    async def _reconnect(self) -> ListenerT:
        # Jittered back-off, so that replicas which lost the server together do not return in
        # step; each failure is logged.
        return await retry_forever(
            self._listen,
            initial=self._reconnect_delay,
            cap=self._max_reconnect_delay,
            log=log,
            retrying="events listener cannot reconnect; retrying",
            fields={"backend": self.backend, "channel": self.channel},
            describe=lambda error: {"error": describe_error(error)},
        )

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


def encode_event(event: NoteEvent) -> bytes:
    data = orjson.dumps(event.to_json())
    if len(data) > MAX_EVENT_BYTES:
        raise ValueError(f"note event is {len(data)} bytes as JSON; the limit is {MAX_EVENT_BYTES}")
    return data


def event_bytes(event: NoteEvent) -> int:
    """What ``event`` counts against a queue's byte bound: the size of its JSON."""
    return len(orjson.dumps(event.to_json()))


def describe_error(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
