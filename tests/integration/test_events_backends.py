"""The PostgreSQL and Redis event brokers against real servers (spec: store/events/).

Two brokers on one server stand for two replicas: an event published on either reaches the
subscribers of both, in publish order and complete, however large (up to 1 MiB; PostgreSQL
chunks what does not fit in one NOTIFY). The listener survives its connection being killed,
cut or going silent: the subscriptions open then end, told why (their events would be missed),
new ones are refused until it is back, and then receive every later event. A Redis that hangs
or is stopped mid-run never costs a publish more than the timeout.

The servers must be running (CI starts them): an unreachable server fails these tests.
PCF_TEST_POSTGRES_URL and PCF_TEST_REDIS_URL override where they are.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from itertools import count
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg  # type: ignore[import-untyped]
import pytest
import redis.asyncio
import redis.exceptions

from pcf_api.resilience import BreakerState
from pcf_api.store.events import (
    MAX_EVENT_BYTES,
    EventsUnavailable,
    PostgresBroker,
    RedisBroker,
    Subscription,
)
from pcf_api.store.models import EventKind, Note, NoteEvent, new_note_id
from support.logs import LogCapture, capture_logs
from support.redis import private_redis, silent_listener

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

POSTGRES_URL = os.environ.get(
    "PCF_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("PCF_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SERVER_URLS = {"postgres": POSTGRES_URL, "redis": REDIS_URL}

PRIVATE = "private-words-of-a-note"
# 10 000 characters of 2 to 4 bytes: nine bytes a round, so that chunk boundaries (every 7 900
# bytes) fall inside characters.
MIXED = ("é€🙂" * 3334)[:10_000]

Broker = PostgresBroker | RedisBroker


@pytest.fixture
def logs() -> Iterator[LogCapture]:
    """The service's real JSON logging pipeline, written to a buffer."""
    with capture_logs(module_levels={"pcf_api.store.events": "DEBUG"}) as capture:
        yield capture


class Proxy:
    """A TCP relay to a real server that a test can cut (``sever``) or silence (``freeze``).

    While frozen it accepts connections and reads from both sides but passes nothing on, like a
    network path that died without closing anything.
    """

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._target = (parts.hostname or "127.0.0.1", parts.port or 0)
        self._url = parts
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._handlers: set[asyncio.Task[Any]] = set()

    @property
    def url(self) -> str:
        """The server's URL, pointing at the proxy instead."""
        userinfo, _, _ = self._url.netloc.rpartition("@")
        netloc = f"127.0.0.1:{self._port}"
        return urlunsplit(self._url._replace(netloc=f"{userinfo}@{netloc}" if userinfo else netloc))

    @property
    def open_connections(self) -> int:
        return len(self._pairs)

    async def __aenter__(self) -> Proxy:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self._port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._server.close()
        self._flowing.set()
        self.sever()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=5)

    def freeze(self) -> None:
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    def sever(self) -> None:
        for pair in self._pairs:
            for writer in pair:
                writer.transport.abort()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            self._handlers.discard(task)
            return
        pair = (writer, upstream_writer)
        self._pairs.add(pair)
        try:
            await asyncio.gather(
                self._pump(reader, upstream_writer), self._pump(upstream_reader, writer)
            )
        finally:
            self._pairs.discard(pair)
            self._handlers.discard(task)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.transport.abort()


def note_event(kind: EventKind = EventKind.CREATED, content: str = PRIVATE) -> NoteEvent:
    now = datetime.now(UTC)
    note = Note(new_note_id(), "A title", content, "alice", now, now)
    return NoteEvent(kind, note.id, None if kind is EventKind.DELETED else note)


PROBE_PREFIX = "probe:"
_probes = count()


async def take(subscription: Subscription, n: int, timeout: float = 10) -> list[NoteEvent]:
    """The next ``n`` events, leaving out the probes of ``wait_until_delivering``."""

    async def collect() -> list[NoteEvent]:
        events: list[NoteEvent] = []
        async for item in subscription:
            if not item.note_id.startswith(PROBE_PREFIX):
                events.append(item)
            if len(events) == n:
                break
        return events

    return await asyncio.wait_for(collect(), timeout)


async def wait_until_delivering(publisher: Broker, subscription: Subscription) -> None:
    """Publish probes until one arrives: the listener is back (and missed the earlier ones)."""
    async with asyncio.timeout(20):
        while True:
            await publisher.publish(NoteEvent(EventKind.DELETED, f"{PROBE_PREFIX}{next(_probes)}"))
            try:
                item = await asyncio.wait_for(anext(subscription), 0.3)
            except TimeoutError:
                continue
            assert item.note_id.startswith(PROBE_PREFIX)
            return


async def eventually(condition: Callable[[], object], timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)


BrokerFactory = Callable[..., Awaitable[Broker]]


@pytest.fixture(params=["postgres", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def channel() -> str:
    """Unique per test, so that parallel runs on the same servers do not hear each other."""
    return f"pcf_api_test_{secrets.token_hex(8)}"


@pytest.fixture
async def brokers(backend: str, channel: str) -> AsyncIterator[BrokerFactory]:
    """``await brokers(url=None, start=True, **options)``: closed at the end of the test."""
    made: list[Broker] = []

    async def make(url: str | None = None, *, start: bool = True, **options: Any) -> Broker:
        options = {"timeout": 1.0, "reconnect_delay": 0.05, "max_reconnect_delay": 0.5, **options}
        kind = PostgresBroker if backend == "postgres" else RedisBroker
        broker = kind(url or SERVER_URLS[backend], channel=channel, **options)
        made.append(broker)
        if start:
            await broker.start()
        return broker

    yield make
    for broker in made:
        await broker.close()


async def send_raw(backend: str, channel: str, payloads: list[str]) -> None:
    """Put ``payloads`` on the channel as another program would."""
    if backend == "postgres":
        connection = await asyncpg.connect(POSTGRES_URL.replace("+asyncpg", ""))
        try:
            for payload in payloads:
                await connection.execute("SELECT pg_notify($1, $2)", channel, payload)
        finally:
            await connection.close()
    else:
        client = redis.asyncio.Redis.from_url(REDIS_URL)
        try:
            for payload in payloads:
                await client.publish(channel, payload)
        finally:
            await client.aclose()


async def listener_backends(channel: str) -> list[int]:
    """The server process ids of PostgreSQL listeners for ``channel``."""
    connection = await asyncpg.connect(POSTGRES_URL.replace("+asyncpg", ""))
    try:
        rows = await connection.fetch(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1",
            f"pcf_api events {channel}",
        )
    finally:
        await connection.close()
    return [row["pid"] for row in rows]


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class TestReplicas:
    async def test_every_replica_receives_every_event_in_publish_order_complete(
        self, backend: str, brokers: BrokerFactory
    ) -> None:
        # The database URL arrives in SQLAlchemy's form; the plain libpq form works too.
        a = await brokers()
        b = await brokers(SERVER_URLS[backend].replace("+asyncpg", ""))
        events = [
            note_event(EventKind.CREATED),
            note_event(EventKind.UPDATED, content="x" * 10_000),
            note_event(EventKind.DELETED),
            note_event(EventKind.UPDATED, content=MIXED),
            note_event(EventKind.CREATED, content="\u0000\n\"'\\ " * 2000),
            note_event(EventKind.UPDATED),
        ]
        async with a.subscribe() as on_a, b.subscribe() as on_b:
            for item in events[:3]:
                await a.publish(item)
            for item in events[3:]:
                await b.publish(item)
            assert await take(on_a, len(events)) == events
            assert await take(on_b, len(events)) == events

    async def test_an_event_of_almost_1_mib_arrives_whole(self, brokers: BrokerFactory) -> None:
        a, b = await brokers(), await brokers()
        big = note_event(content=MIXED * ((MAX_EVENT_BYTES - 2000) // len(MIXED.encode())))
        after = note_event()
        async with b.subscribe() as subscription:
            await a.publish(big)
            await a.publish(after)
            assert await take(subscription, 2) == [big, after]

    async def test_an_event_over_1_mib_is_refused_and_nothing_is_sent(
        self, brokers: BrokerFactory
    ) -> None:
        a, b = await brokers(), await brokers()
        async with b.subscribe() as subscription:
            with pytest.raises(ValueError, match=str(MAX_EVENT_BYTES)):
                await a.publish(note_event(content="x" * MAX_EVENT_BYTES))
            small = note_event()
            await a.publish(small)
            assert await take(subscription, 1) == [small]

    async def test_concurrent_publishers_are_seen_in_the_same_order_everywhere(
        self, brokers: BrokerFactory
    ) -> None:
        a, b = await brokers(), await brokers()
        events = [note_event(content="y" * (i * 997)) for i in range(20)]
        async with a.subscribe() as on_a, b.subscribe() as on_b:
            await asyncio.gather(*(a.publish(item) for item in events[::2]))
            await asyncio.gather(*(b.publish(item) for item in events[1::2]))
            seen_by_a, seen_by_b = await take(on_a, 20), await take(on_b, 20)
        assert seen_by_a == seen_by_b
        assert sorted(item.note_id for item in seen_by_a) == sorted(e.note_id for e in events)

    async def test_the_logs_never_hold_a_note_s_content(
        self, logs: LogCapture, brokers: BrokerFactory
    ) -> None:
        broker = await brokers()
        item = note_event()
        async with broker.subscribe() as subscription:
            await broker.publish(item)
            await take(subscription, 1)
        [line] = logs.find("note event published")
        assert (line["kind"], line["note_id"]) == ("created", item.note_id)
        assert PRIVATE not in logs.text()


class TestLifecycle:
    async def test_start_fails_when_the_server_cannot_be_reached(
        self, backend: str, brokers: BrokerFactory
    ) -> None:
        scheme = "postgresql" if backend == "postgres" else "redis"
        broker = await brokers(f"{scheme}://postgres@127.0.0.1:{unused_port()}/test", start=False)
        with pytest.raises((OSError, redis.exceptions.ConnectionError)):
            await broker.start()
        with pytest.raises(RuntimeError, match="not running"):
            await broker.publish(note_event())

    async def test_start_is_idempotent_and_opens_one_listening_connection(
        self, backend: str, brokers: BrokerFactory
    ) -> None:
        async with Proxy(SERVER_URLS[backend]) as proxy:
            broker = await brokers(proxy.url, start=False)
            await asyncio.gather(broker.start(), broker.start())
            await broker.start()
            # The listener, plus the publishing pool's first connection for PostgreSQL (Redis
            # connects its publisher on first use).
            assert proxy.open_connections == {"postgres": 2, "redis": 1}[backend]
            await broker.close()

    async def test_close_ends_subscriptions_and_releases_every_connection(
        self, backend: str, brokers: BrokerFactory
    ) -> None:
        async with Proxy(SERVER_URLS[backend]) as proxy:
            broker = await brokers(proxy.url)
            item = note_event()
            received: list[NoteEvent] = []

            async def read_all() -> None:
                async with broker.subscribe() as subscription:
                    async for event in subscription:
                        received.append(event)

            reader = asyncio.create_task(read_all())
            await eventually(lambda: broker.subscriber_count == 1)
            await broker.publish(item)
            await eventually(lambda: received == [item])
            await broker.close()
            await asyncio.wait_for(reader, 5)
            assert broker.subscriber_count == 0
            await eventually(lambda: proxy.open_connections == 0)

    @pytest.mark.parametrize("backend", ["postgres"], indirect=True)
    async def test_a_listener_that_cannot_listen_is_not_left_connected(
        self, channel: str, brokers: BrokerFactory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        class RefusingConnection(asyncpg.Connection):  # type: ignore[misc]
            async def add_listener(self, *args: Any) -> None:
                raise asyncpg.InsufficientPrivilegeError("permission denied")

        opened: list[asyncpg.Connection] = []
        connect = asyncpg.connect

        async def refusing_connect(*args: Any, **kwargs: Any) -> asyncpg.Connection:
            opened.append(await connect(*args, connection_class=RefusingConnection, **kwargs))
            return opened[-1]

        monkeypatch.setattr(asyncpg, "connect", refusing_connect)
        broker = await brokers(start=False)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await broker.start()
        [connection] = opened
        assert connection.is_closed()
        async with asyncio.timeout(5):
            while await listener_backends(channel):
                await asyncio.sleep(0.05)

    async def test_unreadable_messages_on_the_channel_are_skipped(
        self, backend: str, channel: str, logs: LogCapture, brokers: BrokerFactory
    ) -> None:
        broker = await brokers()
        strays = [
            "not json",
            "[1, 2]",
            '{"kind": "archived", "note_id": "x"}',
            f'{{"kind": "created", "note_id": "{PRIVATE}", "note": {{}}}}',
            "chunk:0123456789abcdef:1:2:out of sequence",
            "chunk:malformed",
        ]
        async with broker.subscribe() as subscription:
            await send_raw(backend, channel, strays)
            item = note_event()
            await broker.publish(item)
            assert await take(subscription, 1) == [item]
        ignored = logs.find("ignored an unreadable message on the events channel")
        assert len(ignored) == len(strays)
        assert {line["backend"] for line in ignored} == {backend}
        assert PRIVATE not in logs.text()


async def ended_by_the_loss(subscription: Subscription) -> str:
    """Waits for ``subscription`` to end because its events stopped arriving; the reason."""
    async with asyncio.timeout(10):
        async for _ in subscription:
            pass
    assert subscription.interruption is not None
    assert not subscription.dropped
    return subscription.interruption


async def until_listening(broker: Broker) -> None:
    """Until the broker's health check passes again: its listener is back."""
    async with asyncio.timeout(20):
        while True:
            try:
                await broker.check()
            except ConnectionError:
                await asyncio.sleep(0.05)
            else:
                return


async def delivers_again(publisher: Broker, listener: Broker) -> None:
    """Once the listener is back, a new subscription receives every later event."""
    await until_listening(listener)
    async with listener.subscribe() as subscription:
        await wait_until_delivering(publisher, subscription)
        later = [note_event(kind) for kind in EventKind]
        for item in later:
            await publisher.publish(item)
        assert await take(subscription, 3) == later


class TestReconnection:
    """Losing the server ends every subscription, told why (its events would be missed), and
    refuses new ones until the listener is back; then subscriptions receive events again."""

    @pytest.mark.parametrize("backend", ["postgres"], indirect=True)
    async def test_the_listener_returns_after_its_backend_is_terminated(
        self, channel: str, logs: LogCapture, brokers: BrokerFactory
    ) -> None:
        broker = await brokers()
        async with broker.subscribe() as subscription:
            first = note_event()
            await broker.publish(first)
            assert await take(subscription, 1) == [first]

            [pid] = await listener_backends(channel)
            connection = await asyncpg.connect(POSTGRES_URL.replace("+asyncpg", ""))
            try:
                assert await connection.fetchval("SELECT pg_terminate_backend($1)", pid)
            finally:
                await connection.close()
            await ended_by_the_loss(subscription)

        await delivers_again(broker, broker)
        [new_pid] = await listener_backends(channel)
        assert new_pid != pid
        [lost] = logs.find("events listener lost its connection; reconnecting")
        assert (lost["level"], lost["backend"]) == ("WARN", "postgres")
        assert lost["dependency"] == "events_postgres"
        assert logs.find("events listener reconnected; subscriptions are accepted again")

    async def test_the_listener_returns_after_its_connection_is_cut(
        self, backend: str, logs: LogCapture, brokers: BrokerFactory
    ) -> None:
        async with Proxy(SERVER_URLS[backend]) as proxy:
            publisher = await brokers()
            listener = await brokers(proxy.url)
            async with listener.subscribe() as subscription:
                proxy.sever()
                await ended_by_the_loss(subscription)
            await delivers_again(publisher, listener)
        assert logs.find("events listener lost its connection; reconnecting")
        assert logs.find("events listener reconnected; subscriptions are accepted again")

    async def test_the_listener_notices_a_silent_connection_and_retries_until_back(
        self, backend: str, logs: LogCapture, brokers: BrokerFactory
    ) -> None:
        async with Proxy(SERVER_URLS[backend]) as proxy:
            publisher = await brokers()
            listener = await brokers(proxy.url, timeout=0.5)
            async with listener.subscribe() as subscription:
                first = note_event()
                await publisher.publish(first)
                assert await take(subscription, 1) == [first]

                proxy.freeze()
                reason = await ended_by_the_loss(subscription)
                await eventually(
                    lambda: len(logs.find("events listener cannot reconnect; retrying")) >= 2
                )
                [lost] = logs.find("events listener lost its connection; reconnecting")
                expected = {
                    "postgres": "TimeoutError",  # the probe's SELECT 1
                    "redis": "TimeoutError: the server did not answer PING",
                }[backend]
                assert lost["error"] == reason == expected
                with pytest.raises(ConnectionError):
                    await listener.check()
                proxy.thaw()

            await delivers_again(publisher, listener)
        retries = logs.find("events listener cannot reconnect; retrying")
        assert [line["attempt"] for line in retries[:2]] == [1, 2]
        assert all(0 < line["retry_in_seconds"] <= 0.5 for line in retries)
        assert logs.find("events listener reconnected; subscriptions are accepted again")

    async def test_the_listener_is_quietly_probed_while_nothing_happens(
        self, logs: LogCapture, brokers: BrokerFactory
    ) -> None:
        broker = await brokers(timeout=0.25)
        async with broker.subscribe() as subscription:
            await asyncio.sleep(1)  # several probe intervals without an event
            item = note_event()
            await broker.publish(item)
            assert await take(subscription, 1) == [item]
        assert not logs.find("events listener lost its connection; reconnecting")


@pytest.mark.parametrize("backend", ["redis"], indirect=True)
class TestRedisOutages:
    """A Redis that hangs or is stopped mid-run: never a silent loss, never a long wait."""

    async def test_start_against_a_redis_that_never_answers_fails_within_the_timeout(
        self, brokers: BrokerFactory
    ) -> None:
        with silent_listener() as url:
            broker = await brokers(url, start=False, timeout=0.3)
            began = asyncio.get_running_loop().time()
            with pytest.raises(TimeoutError):
                await broker.start()
            assert asyncio.get_running_loop().time() - began < 1.0
            with pytest.raises(ConnectionError, match="TimeoutError"):
                await broker.check()

    async def test_a_redis_stopped_mid_run_ends_subscriptions_and_refuses_new_ones(
        self, brokers: BrokerFactory, tmp_path: Path
    ) -> None:
        with private_redis(tmp_path) as server:
            broker = await brokers(server.url, timeout=0.3)
            await broker.check()
            async with broker.subscribe() as subscription:
                server.stop()
                assert (await ended_by_the_loss(subscription)).startswith("ConnectionError")
            with pytest.raises(ConnectionError):
                await broker.check()
            async with broker.subscribe() as refused:
                assert [item async for item in refused] == []
                assert refused.interruption is not None

            loop = asyncio.get_running_loop()
            waits = []
            for _ in range(RedisBroker.BREAKER_FAILURES + 3):
                began = loop.time()
                with pytest.raises(EventsUnavailable):
                    await broker.publish(note_event())
                waits.append(loop.time() - began)
            assert max(waits) < 0.3 + 0.2
            assert broker.breaker.state is BreakerState.OPEN

            server.start()
            broker.breaker.reset_timeout = 0.1
            await asyncio.sleep(0.15)
            await delivers_again(broker, broker)
