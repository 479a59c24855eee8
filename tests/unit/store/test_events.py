"""The events broker's subscriber side, on the in-process backend (spec: store/events/).

Every subscriber receives every event published after it subscribed, in publish order. A
subscriber is bounded: when its queue is full the broker drops it, logging why with the event's
kind and note id only, and its iterator ends after what was queued; the publisher never waits.
``close`` ends every open iterator. Events over 1 MiB of JSON are refused.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from pcf_api.store.events import (
    DEFAULT_CHANNEL,
    MAX_EVENT_BYTES,
    MemoryBroker,
    PostgresBroker,
    RedisBroker,
    Subscription,
    create_broker,
)
from pcf_api.store.models import EventKind, Note, NoteEvent, new_note_id
from support.logs import LogCapture, capture_logs

pytestmark = pytest.mark.anyio

PRIVATE = "the-private-content-of-a-note"


@pytest.fixture
def logs() -> Iterator[LogCapture]:
    """The service's real JSON logging pipeline, written to a buffer."""
    with capture_logs() as capture:
        yield capture


def event(kind: EventKind = EventKind.CREATED, content: str = PRIVATE) -> NoteEvent:
    now = datetime.now(UTC)
    note = Note(new_note_id(), "A title", content, "alice", now, now)
    return NoteEvent(kind, note.id, None if kind is EventKind.DELETED else note)


async def started(**options: Any) -> MemoryBroker:
    broker = MemoryBroker(**options)
    await broker.start()
    return broker


async def take(subscription: Subscription, count: int) -> list[NoteEvent]:
    return [await asyncio.wait_for(anext(subscription), 2) for _ in range(count)]


async def rest(subscription: Subscription) -> list[NoteEvent]:
    """Everything left, for a subscription that has ended or is about to."""

    async def collect() -> list[NoteEvent]:
        return [item async for item in subscription]

    return await asyncio.wait_for(collect(), 2)


class TestDelivery:
    async def test_every_subscriber_receives_every_event_in_publish_order(self) -> None:
        broker = await started()
        events = [event(kind) for kind in (*EventKind, *EventKind)]
        async with broker.subscribe() as a, broker.subscribe() as b, broker.subscribe() as c:
            for item in events:
                await broker.publish(item)
            assert await take(a, 6) == events
            assert await take(b, 6) == events
            assert await take(c, 6) == events

    async def test_a_subscriber_receives_only_events_published_after_it_subscribed(self) -> None:
        broker = await started()
        before, after = event(), event()
        await broker.publish(before)
        async with broker.subscribe() as subscription:
            await broker.publish(after)
            await broker.close()
            assert await rest(subscription) == [after]

    async def test_the_subscription_starts_when_its_context_is_entered(self) -> None:
        broker = await started()
        subscription = broker.subscribe()
        early, late = event(), event()
        await broker.publish(early)
        async with subscription:
            await broker.publish(late)
            await broker.close()
            assert await rest(subscription) == [late]

    async def test_leaving_the_context_releases_the_subscriber(self) -> None:
        broker = await started()
        assert broker.subscriber_count == 0
        async with broker.subscribe():
            assert broker.subscriber_count == 1
            async with broker.subscribe():
                assert broker.subscriber_count == 2
            assert broker.subscriber_count == 1
        assert broker.subscriber_count == 0

    async def test_leaving_the_context_by_an_exception_releases_the_subscriber(self) -> None:
        broker = await started()
        with pytest.raises(LookupError):
            async with broker.subscribe():
                raise LookupError
        assert broker.subscriber_count == 0


class TestClose:
    async def test_close_ends_every_open_iterator(self) -> None:
        broker = await started()
        first = event()

        async def read_all() -> list[NoteEvent]:
            async with broker.subscribe() as subscription:
                return [item async for item in subscription]

        readers = [asyncio.create_task(read_all()) for _ in range(3)]
        while broker.subscriber_count < 3:
            await asyncio.sleep(0)
        await broker.publish(first)
        await broker.close()
        assert await asyncio.wait_for(asyncio.gather(*readers), 2) == [[first]] * 3
        assert broker.subscriber_count == 0

    async def test_an_ended_iterator_stays_ended(self) -> None:
        broker = await started()
        async with broker.subscribe() as subscription:
            await broker.close()
            assert await rest(subscription) == []
            assert await rest(subscription) == []
            assert not subscription.dropped

    async def test_a_subscription_opened_after_close_ends_at_once(self) -> None:
        broker = await started()
        await broker.close()
        async with broker.subscribe() as subscription:
            assert broker.subscriber_count == 0
            assert await rest(subscription) == []

    async def test_a_closed_broker_refuses_to_publish_or_start_again(self) -> None:
        broker = await started()
        await broker.close()
        await broker.close()  # closing twice is harmless
        with pytest.raises(RuntimeError, match="not running"):
            await broker.publish(event())
        with pytest.raises(RuntimeError, match="closed"):
            await broker.start()


class TestLifecycle:
    async def test_publishing_before_start_is_refused(self) -> None:
        with pytest.raises(RuntimeError, match="not running"):
            await MemoryBroker().publish(event())

    async def test_start_is_idempotent(self) -> None:
        broker = await started()
        await broker.start()
        async with broker.subscribe() as subscription:
            item = event()
            await broker.publish(item)
            assert await take(subscription, 1) == [item]

    async def test_queue_size_must_be_positive(self) -> None:
        with pytest.raises(ValueError, match="queue_size"):
            MemoryBroker(queue_size=0)


class TestSlowSubscribers:
    async def test_a_full_queue_drops_the_slow_subscriber_without_blocking_the_publisher(
        self, logs: LogCapture
    ) -> None:
        broker = await started(queue_size=3)
        events = [event() for _ in range(10)]
        async with broker.subscribe() as slow, broker.subscribe() as fast:
            for item in events:
                await asyncio.wait_for(broker.publish(item), 1)
                assert await take(fast, 1) == [item]
            assert broker.subscriber_count == 1
            assert slow.dropped
            assert not fast.dropped
            # What was queued still arrives, then the iterator ends: a prefix, never a gap.
            assert await rest(slow) == events[:3]
        [line] = logs.find("dropped an events subscriber that fell behind")
        assert line["level"] == "WARN"
        assert line["backend"] == "memory"
        assert line["queue_size"] == 3
        assert line["kind"] == "created"
        assert line["note_id"] == events[3].note_id
        assert PRIVATE not in logs.text()
        assert "A title" not in logs.text()

    async def test_the_other_subscribers_keep_their_events(self) -> None:
        broker = await started(queue_size=2)
        events = [event() for _ in range(3)]
        async with broker.subscribe() as slow, broker.subscribe() as steady:
            for item in events[:2]:
                await broker.publish(item)
            assert await take(steady, 2) == events[:2]
            await broker.publish(events[2])
            assert slow.dropped
            assert await take(steady, 1) == [events[2]]

    async def test_a_queue_is_bounded_in_bytes_as_well_as_in_events(self) -> None:
        broker = await started(queue_size=100, queue_bytes=MAX_EVENT_BYTES)
        big = [event(content="x" * (MAX_EVENT_BYTES // 3)) for _ in range(3)]
        async with broker.subscribe() as slow, broker.subscribe() as fast:
            for item in big:
                await broker.publish(item)
                assert await take(fast, 1) == [item]
            assert slow.dropped
            assert not fast.dropped
            assert await rest(slow) == big[:2]

    async def test_reading_frees_the_bytes_of_what_was_read(self) -> None:
        broker = await started(queue_size=100, queue_bytes=MAX_EVENT_BYTES)
        async with broker.subscribe() as subscription:
            for _ in range(10):
                item = event(content="x" * (MAX_EVENT_BYTES // 3))
                await broker.publish(item)
                assert await take(subscription, 1) == [item]
            assert not subscription.dropped

    async def test_a_queue_must_hold_at_least_the_largest_event(self) -> None:
        with pytest.raises(ValueError, match="queue_bytes"):
            MemoryBroker(queue_bytes=MAX_EVENT_BYTES - 1)


class TestSizeLimit:
    async def test_an_event_over_1_mib_is_refused_and_not_delivered(self) -> None:
        broker = await started()
        async with broker.subscribe() as subscription:
            with pytest.raises(ValueError, match=str(MAX_EVENT_BYTES)):
                await broker.publish(event(content="x" * MAX_EVENT_BYTES))
            small = event()
            await broker.publish(small)
            assert await take(subscription, 1) == [small]

    async def test_an_event_just_under_1_mib_is_delivered(self) -> None:
        broker = await started()
        big = event(content="é" * ((MAX_EVENT_BYTES - 1000) // 2))
        async with broker.subscribe() as subscription:
            await broker.publish(big)
            assert await take(subscription, 1) == [big]

    async def test_the_limit_counts_bytes_not_characters(self) -> None:
        broker = await started()
        with pytest.raises(ValueError, match="bytes"):
            await broker.publish(event(content="é" * (MAX_EVENT_BYTES // 2)))


class TestFactory:
    def test_memory(self) -> None:
        assert isinstance(create_broker("memory", None), MemoryBroker)

    def test_postgres_takes_the_database_url(self) -> None:
        broker = create_broker("postgres", "postgresql+asyncpg://pcf@127.0.0.1/pcf")
        assert isinstance(broker, PostgresBroker)
        assert broker.channel == DEFAULT_CHANNEL

    def test_redis(self) -> None:
        broker = create_broker("redis", "redis://127.0.0.1:6379/0")
        assert isinstance(broker, RedisBroker)
        assert broker.channel == DEFAULT_CHANNEL

    @pytest.mark.parametrize("kind", ["postgres", "redis"])
    def test_a_server_backend_needs_a_url(self, kind: Any) -> None:
        with pytest.raises(ValueError, match=f"the {kind} events broker needs a URL"):
            create_broker(kind, None)

    def test_an_unknown_backend_is_refused(self) -> None:
        with pytest.raises(ValueError, match="unknown events broker 'kafka'"):
            create_broker("kafka", "kafka://localhost")  # type: ignore[arg-type]


class TestServerBackendsOffline:
    """What needs no server; the rest is in tests/integration/test_events_backends.py."""

    @pytest.mark.parametrize("channel", ["", "with space", "x" * 64, "quote'd"])
    def test_a_channel_name_must_be_safe(self, channel: str) -> None:
        with pytest.raises(ValueError, match="channel"):
            PostgresBroker("postgresql://127.0.0.1/db", channel=channel)
        with pytest.raises(ValueError, match="channel"):
            RedisBroker("redis://127.0.0.1", channel=channel)

    async def test_publishing_before_start_is_refused(self) -> None:
        for broker in (PostgresBroker("postgresql://x/db"), RedisBroker("redis://x")):
            with pytest.raises(RuntimeError, match="not running"):
                await broker.publish(event())

    async def test_closing_a_broker_that_never_started(self) -> None:
        for broker in (PostgresBroker("postgresql://x/db"), RedisBroker("redis://x")):
            async with broker.subscribe() as subscription:
                await broker.close()
                assert await rest(subscription) == []
            with pytest.raises(RuntimeError, match="closed"):
                await broker.start()
