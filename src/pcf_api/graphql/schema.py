"""The notes schema: queries, mutations, subscriptions; every resolver validates its input first."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import strawberry
from strawberry.types import Info

from pcf_api import __version__
from pcf_api.errors import AppError, ErrorCode
from pcf_api.graphql import validation
from pcf_api.graphql.context import GraphQLContext
from pcf_api.graphql.types import (
    CreateNoteInput,
    HealthStatus,
    NoteEdge,
    NotesConnection,
    NoteType,
    PageInfo,
    ServiceHealth,
    UpdateNoteInput,
)
from pcf_api.observability.logging import get_logger
from pcf_api.store.models import EventKind, Note, NoteEvent
from pcf_api.store.notes import NotePage

log = get_logger(__name__)

Ctx = Info[GraphQLContext, None]


def _cursor(position: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{position}".encode()).decode()


def _connection(page: NotePage, offset: int) -> NotesConnection:
    edges = [
        NoteEdge(node=note, cursor=_cursor(offset + index))  # type: ignore[arg-type]
        for index, note in enumerate(page.notes)
    ]
    return NotesConnection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=offset + len(page.notes) < page.total,
            has_previous_page=offset > 0,
            start_cursor=edges[0].cursor if edges else None,
            end_cursor=edges[-1].cursor if edges else None,
        ),
        total_count=page.total,
    )


async def _publish(context: GraphQLContext, event: NoteEvent) -> None:
    """Announce a committed change. A broker failure must not undo an acknowledged write."""
    try:
        await context.services.broker.publish(event)
    except Exception:
        log.exception("could not publish note event", kind=event.kind, note_id=event.note_id)


@strawberry.type
class Query:
    @strawberry.field
    async def note(self, info: Ctx, id: strawberry.ID) -> NoteType | None:
        note_id = validation.note_id(str(id))
        note: Note | None = await info.context.note_loader.load(note_id)
        return note  # type: ignore[return-value]

    @strawberry.field
    async def notes(self, info: Ctx, limit: int = 10, offset: int = 0) -> NotesConnection:
        validation.limit(limit)
        validation.offset(offset)
        page = await info.context.store.page(limit=limit, offset=offset)
        return _connection(page, offset)

    @strawberry.field
    async def notes_by_author(
        self, info: Ctx, author: str, limit: int = 10, offset: int = 0
    ) -> NotesConnection:
        validation.author(author)
        validation.limit(limit)
        validation.offset(offset)
        page = await info.context.store.page(limit=limit, offset=offset, author=author)
        return _connection(page, offset)

    @strawberry.field
    async def search_notes(self, info: Ctx, query: str, limit: int = 10) -> list[NoteType]:
        validation.search_query(query)
        validation.limit(limit)
        return await info.context.store.search(query, limit=limit)  # type: ignore[return-value]

    @strawberry.field
    def health(self, info: Ctx) -> HealthStatus:
        report = info.context.services.health.report()
        return HealthStatus(
            status=report["status"],
            version=__version__,
            uptime_seconds=report["uptime_seconds"],
            services=[
                ServiceHealth(name=name, status=entry["status"], critical=entry["critical"])
                for name, entry in report["services"].items()
            ],
        )


@strawberry.type
class Mutation:
    @strawberry.mutation
    async def create_note(self, info: Ctx, input: CreateNoteInput) -> NoteType:
        title = validation.title(input.title)
        content = validation.content(input.content)
        author = validation.author(input.author)
        note = await info.context.store.create(title=title, content=content, author=author)
        await _publish(info.context, NoteEvent(EventKind.CREATED, note.id, note))
        return note  # type: ignore[return-value]

    @strawberry.mutation
    async def update_note(self, info: Ctx, id: strawberry.ID, input: UpdateNoteInput) -> NoteType:
        note_id = validation.note_id(str(id))
        if input.title is None and input.content is None:
            raise validation.invalid("input", "required", "give a title, a content or both")
        title = validation.title(input.title) if input.title is not None else None
        content = validation.content(input.content) if input.content is not None else None
        note = await info.context.store.update(note_id, title=title, content=content)
        if note is None:
            raise AppError(ErrorCode.NOT_FOUND, f"note {note_id} does not exist")
        await _publish(info.context, NoteEvent(EventKind.UPDATED, note.id, note))
        return note  # type: ignore[return-value]

    @strawberry.mutation
    async def delete_note(self, info: Ctx, id: strawberry.ID) -> bool:
        note_id = validation.note_id(str(id))
        if not await info.context.store.delete(note_id):
            raise AppError(ErrorCode.NOT_FOUND, f"note {note_id} does not exist")
        await _publish(info.context, NoteEvent(EventKind.DELETED, note_id))
        return True


@asynccontextmanager
async def _subscription_slot(context: GraphQLContext) -> AsyncIterator[None]:
    """Count the subscription against the instance and per-client limits while it lives."""
    settings = context.services.settings.graphql
    counter = context.services.subscriptions
    client = context.client_id
    if counter.total >= settings.max_subscriptions:
        raise AppError(
            ErrorCode.SERVICE_UNAVAILABLE, "this instance has no room for more subscriptions"
        )
    if counter.per_client.get(client, 0) >= settings.max_subscriptions_per_client:
        raise AppError(
            ErrorCode.RATE_LIMITED,
            f"at most {settings.max_subscriptions_per_client} subscriptions per client",
        )
    counter.total += 1
    counter.per_client[client] = counter.per_client.get(client, 0) + 1
    try:
        yield
    finally:
        counter.total -= 1
        remaining = counter.per_client[client] - 1
        if remaining:
            counter.per_client[client] = remaining
        else:
            del counter.per_client[client]


async def _events(context: GraphQLContext) -> AsyncGenerator[NoteEvent, None]:
    """The broker's events until the client leaves or nothing happens for the idle timeout."""
    idle = context.services.settings.graphql.subscription_idle_timeout_seconds
    async with _subscription_slot(context), context.services.broker.subscribe() as events:
        iterator = aiter(events)
        while True:
            try:
                async with asyncio.timeout(idle):
                    event = await anext(iterator)
            except (TimeoutError, StopAsyncIteration):
                return
            yield event


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def note_created(self, info: Ctx) -> AsyncGenerator[NoteType, None]:
        async for event in _events(info.context):
            if event.kind is EventKind.CREATED and event.note is not None:
                yield event.note  # type: ignore[misc]

    @strawberry.subscription
    async def note_updated(
        self, info: Ctx, id: strawberry.ID | None = None
    ) -> AsyncGenerator[NoteType, None]:
        wanted = validation.note_id(str(id)) if id is not None else None
        async for event in _events(info.context):
            matches = wanted is None or event.note_id == wanted
            if event.kind is EventKind.UPDATED and event.note is not None and matches:
                yield event.note  # type: ignore[misc]

    @strawberry.subscription
    async def note_deleted(self, info: Ctx) -> AsyncGenerator[str, None]:
        async for event in _events(info.context):
            if event.kind is EventKind.DELETED:
                yield event.note_id


def build_schema(**kwargs: Any) -> strawberry.Schema:
    return strawberry.Schema(query=Query, mutation=Mutation, subscription=Subscription, **kwargs)
