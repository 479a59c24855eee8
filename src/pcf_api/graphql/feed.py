"""Note events for this process's GraphQL subscriptions, each screened by what its caller may read.

One subscription to the events broker feeds every GraphQL subscription of the process. For each
event, the subscriptions that want it (their field and arguments) are gathered and "who among
these users may read this note" is asked once for all of them: one bulk call through the
authorizer (``graphql.authz.may_receive``), cached per user and note and shared with a lookup
already under way. At most ``concurrency`` such calls run at once, and on the local backend each
holds one connection of the request pool for one SELECT, so fan-out never takes more than that
share of the pool from requests. Events then reach the allowed subscriptions in the order the
broker delivered them, through the bounded queues every broker keeps (``FanOutBroker``).

A subscription is ended, never silently starved: ``dropped`` when its own queue overflowed (its
client reads too slowly), ``interruption`` when its events stopped for everyone (the broker lost
its server, this process fell behind the broker, or no authorization decision could be made).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from pcf_api.auth.authorizer import Authorizer
from pcf_api.errors import AppError
from pcf_api.graphql.authz import may_receive
from pcf_api.observability.logging import get_logger
from pcf_api.store.events import EventBroker, FanOutBroker, Subscription, event_bytes
from pcf_api.store.models import NoteEvent

log = get_logger(__name__)

Wants = Callable[[NoteEvent], bool]
"""Whether a subscription's field takes an event (its kind, the note id it asked for)."""

PIPELINE_EVENTS = 64
"""Events being screened at once; past that the feed stops reading the broker, whose queue for
it then fills, and every subscription ends as behind (``FELL_BEHIND``)."""
FAN_OUT_STEP = 20
"""Subscriptions woken per turn of the event loop when an event is handed out."""
FELL_BEHIND = "this instance fell behind the note events"
UNDECIDED = "authorization is temporarily unavailable"


class ReaderSubscription(Subscription):
    """A GraphQL subscription: its caller and what its field takes."""

    def __init__(self, feed: ReadFeed, subject: str, wants: Wants) -> None:
        super().__init__(feed, feed.queue_size, feed.queue_bytes)
        self.subject = subject
        self.wants = wants
        self._feed = feed

    async def __aenter__(self) -> ReaderSubscription:
        await self._feed.start()
        await super().__aenter__()
        return self


@dataclass(slots=True)
class _Screening:
    event: NoteEvent
    candidates: list[ReaderSubscription]
    allowed: asyncio.Task[set[str]]


class ReadFeed(FanOutBroker):
    """The broker's events, screened per caller; ``subscribe_as`` is what resolvers use."""

    backend = "subscriptions"

    def __init__(
        self,
        broker: EventBroker,
        authorizer: Authorizer,
        *,
        concurrency: int,
        queue_size: int,
        queue_bytes: int,
    ) -> None:
        super().__init__(queue_size, queue_bytes)
        self._source = broker
        self._authorizer = authorizer
        self._budget = asyncio.Semaphore(concurrency)
        self._pump: asyncio.Task[None] | None = None

    @property
    def queue_size(self) -> int:
        return self._queue_size

    @property
    def queue_bytes(self) -> int:
        return self._queue_bytes

    def subscribe_as(self, subject: str, wants: Wants) -> ReaderSubscription:
        return ReaderSubscription(self, subject, wants)

    async def start(self) -> None:
        """Subscribe to the broker, unless already subscribed; later events then arrive."""
        if self._pump is None or self._pump.done():
            source = self._source.subscribe()
            await source.__aenter__()
            self._pump = asyncio.create_task(self._run(source), name="subscription feed")

    async def close(self) -> None:
        """Stop reading the broker and end every subscription."""
        if self._pump is not None:
            self._pump.cancel()
            await asyncio.wait([self._pump])
        self._end_subscriptions()

    async def _run(self, source: Subscription) -> None:
        screenings: asyncio.Queue[_Screening | None] = asyncio.Queue(PIPELINE_EVENTS)
        delivery = asyncio.create_task(self._deliver_in_order(screenings))
        try:
            async for event in source:
                candidates = [
                    subscription
                    for subscription in self._subscriptions
                    if isinstance(subscription, ReaderSubscription) and subscription.wants(event)
                ]
                if candidates:
                    allowed = asyncio.create_task(self._allowed(event, candidates))
                    await screenings.put(_Screening(event, candidates, allowed))
            await screenings.put(None)
            await delivery
        finally:
            delivery.cancel()
            while not screenings.empty():
                if (left := screenings.get_nowait()) is not None:
                    left.allowed.cancel()
            await source.__aexit__(None, None, None)
            interruption = FELL_BEHIND if source.dropped else source.interruption
            self._end_subscriptions(interruption)

    async def _allowed(self, event: NoteEvent, candidates: list[ReaderSubscription]) -> set[str]:
        subjects = {subscription.subject for subscription in candidates}
        return await may_receive(self._authorizer, event, subjects, budget=self._budget)

    async def _deliver_in_order(self, screenings: asyncio.Queue[_Screening | None]) -> None:
        while (screening := await screenings.get()) is not None:
            try:
                allowed = await screening.allowed
            except Exception as error:  # ends these subscriptions, never the feed
                if not isinstance(error, AppError):  # AuthorizationUnavailable is expected
                    log.exception(
                        "could not authorize a note event",
                        kind=screening.event.kind.value,
                        note_id=screening.event.note_id,
                    )
                self._interrupt(screening.candidates, UNDECIDED)
                continue
            chosen = [each for each in screening.candidates if each.subject in allowed]
            size = event_bytes(screening.event)
            for start in range(0, len(chosen), FAN_OUT_STEP):
                self._deliver_to(screening.event, chosen[start : start + FAN_OUT_STEP], size)
                # The woken subscriptions send before the next step is woken: requests queue
                # behind at most one step's work, not behind a thousand subscribers'.
                await asyncio.sleep(0)
