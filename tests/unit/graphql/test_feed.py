"""The events GraphQL subscriptions read (spec: graphql/feed.py), over the in-process broker and
the local authorization backend on a real SQLite database.

Each subscription receives, in order, the events its field takes about notes its caller may
read; the question is asked once per event for all subscribers together; a subscription whose
client does not read is dropped without holding up the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import SecretStr

from pcf_api.auth.authorizer import Authorizer
from pcf_api.auth.local import LocalBackend
from pcf_api.config import DatabaseSettings
from pcf_api.graphql.feed import ReaderSubscription, ReadFeed
from pcf_api.store.database import Database, create_database
from pcf_api.store.events import MAX_EVENT_BYTES, MemoryBroker
from pcf_api.store.migrate import upgrade_to_head
from pcf_api.store.models import EventKind, Note, NoteEvent, new_note_id

pytestmark = pytest.mark.anyio


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    database = create_database(
        DatabaseSettings(url=SecretStr(f"sqlite+aiosqlite:///{tmp_path}/f.db"))
    )
    await upgrade_to_head(database.engine)
    yield database
    await database.dispose()


@pytest.fixture
async def authorizer(database: Database) -> Authorizer:
    return Authorizer(LocalBackend(database))


@pytest.fixture
async def broker() -> AsyncIterator[MemoryBroker]:
    broker = MemoryBroker()
    await broker.start()
    yield broker
    await broker.close()


def feed_of(broker: MemoryBroker, authorizer: Authorizer, queue_size: int = 256) -> ReadFeed:
    return ReadFeed(
        broker, authorizer, concurrency=2, queue_size=queue_size, queue_bytes=MAX_EVENT_BYTES
    )


async def created(authorizer: Authorizer, owner: str) -> NoteEvent:
    now = datetime.now(UTC)
    note = Note(new_note_id(), "t", "c", owner, now, now)
    await authorizer.create(note.id, owner)
    return NoteEvent(EventKind.CREATED, note.id, note)


def takes_created(event: NoteEvent) -> bool:
    return event.kind is EventKind.CREATED


async def take(subscription: ReaderSubscription, count: int) -> list[str]:
    return [(await asyncio.wait_for(anext(subscription), 5)).note_id for _ in range(count)]


async def test_each_subscription_receives_in_order_what_its_caller_may_read(
    broker: MemoryBroker, authorizer: Authorizer
) -> None:
    feed = feed_of(broker, authorizer)
    async with (
        feed.subscribe_as("ann", takes_created) as ann,
        feed.subscribe_as("bob", takes_created) as bob,
    ):
        events = [await created(authorizer, owner) for owner in ["ann", "bob", "ann", "bob"]]
        for item in events:
            await broker.publish(item)
        assert await take(ann, 2) == [events[0].note_id, events[2].note_id]
        assert await take(bob, 2) == [events[1].note_id, events[3].note_id]
    await feed.close()


async def test_one_lookup_per_event_and_user_however_many_subscribe(
    broker: MemoryBroker, authorizer: Authorizer
) -> None:
    feed = feed_of(broker, authorizer)
    subscriptions = [feed.subscribe_as(f"u{i % 2}", takes_created) for i in range(200)]
    for subscription in subscriptions:
        await subscription.__aenter__()
    item = await created(authorizer, "u0")
    await broker.publish(item)
    for subscription in subscriptions[::2]:
        assert await take(subscription, 1) == [item.note_id]
    assert authorizer.cache_misses == 2
    await feed.close()


async def test_a_subscription_whose_client_does_not_read_is_dropped_alone(
    broker: MemoryBroker, authorizer: Authorizer
) -> None:
    feed = feed_of(broker, authorizer, queue_size=2)
    async with (
        feed.subscribe_as("ann", takes_created) as slow,
        feed.subscribe_as("ann", takes_created) as steady,
    ):
        for _ in range(4):
            item = await created(authorizer, "ann")
            await broker.publish(item)
            assert await take(steady, 1) == [item.note_id]
        assert slow.dropped
        assert not steady.dropped
    await feed.close()


async def test_when_the_broker_closes_every_subscription_ends(
    broker: MemoryBroker, authorizer: Authorizer
) -> None:
    feed = feed_of(broker, authorizer)
    async with feed.subscribe_as("ann", takes_created) as subscription:
        await broker.close()
        assert [item async for item in subscription] == []
        assert not subscription.dropped
