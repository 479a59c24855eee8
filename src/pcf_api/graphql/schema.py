"""The notes schema: queries, mutations, subscriptions; every resolver validates its input first."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager
from enum import Enum
from operator import attrgetter
from typing import Any

import strawberry
from graphql import GraphQLError, GraphQLObjectType, GraphQLSchema
from strawberry.types import ExecutionContext, Info
from strawberry.types.nodes import FragmentSpread, InlineFragment, SelectedField, Selection

from pcf_api import __version__
from pcf_api.auth.policy import NOTE, Action, Resource, Role
from pcf_api.compat.strawberry import graphql_core_schema, plain_attribute
from pcf_api.errors import AppError, ErrorCode
from pcf_api.graphql import validation
from pcf_api.graphql.authz import (
    Listing,
    filters_in_store,
    is_authorized,
    may_read,
    readable_page,
    readable_search,
    readable_window,
    require,
    subject_of,
)
from pcf_api.graphql.context import GraphQLContext
from pcf_api.graphql.feed import Wants
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
from pcf_api.ratelimit import Budget
from pcf_api.store.events import EventsUnavailable
from pcf_api.store.models import EventKind, Note, NoteEvent, new_note_id
from pcf_api.store.notes import Key, NotePage

log = get_logger(__name__)

Ctx = Info[GraphQLContext, None]


def _cursor(note: Note) -> str:
    """Every edge's cursor, in both pagination styles: the note's place in the list."""
    return validation.encode_cursor(Key.of(note))


def _edges(notes: list[Note]) -> list[NoteEdge]:
    return [NoteEdge(node=note, cursor=_cursor(note)) for note in notes]  # type: ignore[arg-type]


def _connection(page: NotePage, offset: int) -> NotesConnection:
    """An offset page (``limit``/``offset``)."""
    edges = _edges(page.notes)
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


def _keyset_connection(listing: Listing, *, backward: bool) -> NotesConnection:
    """A keyset page (``first``/``after``, ``last``/``before``)."""
    edges = _edges(listing.notes)
    start = edges[0].cursor if edges else None
    end = edges[-1].cursor if edges else None
    if listing.resume is not None:  # a SpiceDB scan cut short: continue where it stopped
        resume = validation.encode_cursor(listing.resume)
        start, end = (resume, end) if backward else (start, resume)
    return NotesConnection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=listing.has_next,
            has_previous_page=listing.has_previous,
            start_cursor=start,
            end_cursor=end,
        ),
        # Computed only when the query selects it (``_keyset_page``); unread otherwise.
        total_count=listing.total if listing.total is not None else 0,
    )


_OFFSET_STYLE = ("limit", "offset")


def _given(info: Ctx) -> tuple[set[str], list[SelectedField]]:
    """The arguments the document gives the field, and its selections (all occurrences)."""
    fields = [field for field in info.selected_fields if isinstance(field, SelectedField)]
    return {name for field in fields for name in field.arguments}, fields


def _selects(selections: list[Selection], name: str) -> bool:
    for selection in selections:
        if isinstance(selection, SelectedField) and selection.name == name:
            return True
        if isinstance(selection, FragmentSpread | InlineFragment) and _selects(
            selection.selections, name
        ):
            return True
    return False


async def _keyset_page(
    info: Ctx,
    *,
    first: int | None,
    after: str | None,
    last: int | None,
    before: str | None,
    author: str | None = None,
) -> NotesConnection:
    """Validate a keyset request and read it; the total only when the query selects it."""
    given, fields = _given(info)
    mixed = [name for name in _OFFSET_STYLE if name in given]
    if mixed:
        raise validation.invalid(
            mixed[0],
            "pagination_style",
            "Use one pagination style per field: limit/offset or first/after/last/before.",
        )
    if first is not None and last is not None:
        raise validation.invalid("last", "exclusive", "Give first or last, not both.")
    if first is not None:
        validation.count(first, "first")
    if last is not None:
        validation.count(last, "last")
    after_key = validation.cursor(after, "after") if after is not None else None
    before_key = validation.cursor(before, "before") if before is not None else None
    backward = last is not None
    count = last if last is not None else first if first is not None else validation.LIMIT_DEFAULT
    listing = await readable_window(
        info.context,
        count=count,
        after=after_key,
        before=before_key,
        backward=backward,
        author=author,
        total=any(_selects(field.selections, "totalCount") for field in fields),
    )
    return _keyset_connection(listing, backward=backward)


def _keyset(first: int | None, after: str | None, last: int | None, before: str | None) -> bool:
    return first is not None or after is not None or last is not None or before is not None


async def _publish(context: GraphQLContext, event: NoteEvent) -> None:
    """Announce a committed change. A broker failure must not undo an acknowledged write."""
    try:
        await context.services.broker.publish(event)
    except EventsUnavailable as error:  # a known outage: its subscribers are told (see _events)
        log.warning(
            "note event not published: events unavailable",
            kind=event.kind,
            note_id=event.note_id,
            reason=str(error),
        )
    except Exception:
        log.exception("could not publish note event", kind=event.kind, note_id=event.note_id)


@strawberry.enum
class ShareRole(Enum):
    READER = "READER"
    WRITER = "WRITER"


async def _create(context: GraphQLContext, *, title: str, content: str, author: str) -> Note:
    """The note and its owner. Local backend: the owner row commits with the note. SpiceDB:
    the owner relationship is written first, so the note is never visible without an owner
    (a failed insert leaves a relationship to a note that does not exist, which grants nothing)."""
    store = context.store
    if filters_in_store(context):
        return await store.create(title=title, content=content, author=author, owner=author)
    note_id = new_note_id()
    await context.services.authorizer.create(note_id, author)
    return await store.create(title=title, content=content, author=author, note_id=note_id)


@strawberry.type
class Query:
    @strawberry.field
    async def note(self, info: Ctx, id: strawberry.ID) -> NoteType | None:
        note_id = validation.note_id(str(id))
        if not await may_read(info.context, note_id):
            return None  # like a missing note: ids cannot be probed
        note: Note | None = await info.context.note_loader.load(note_id)
        return note  # type: ignore[return-value]

    @strawberry.field
    async def notes(
        self,
        info: Ctx,
        *,
        limit: int = 10,
        offset: int = 0,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> NotesConnection:
        if _keyset(first, after, last, before):
            return await _keyset_page(info, first=first, after=after, last=last, before=before)
        validation.limit(limit)
        validation.offset(offset)
        page = await readable_page(info.context, limit=limit, offset=offset)
        return _connection(page, offset)

    @strawberry.field
    async def notes_by_author(
        self,
        info: Ctx,
        author: str,
        *,
        limit: int = 10,
        offset: int = 0,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> NotesConnection:
        validation.author(author)
        if _keyset(first, after, last, before):
            return await _keyset_page(
                info, first=first, after=after, last=last, before=before, author=author
            )
        validation.limit(limit)
        validation.offset(offset)
        page = await readable_page(info.context, limit=limit, offset=offset, author=author)
        return _connection(page, offset)

    @strawberry.field
    async def search_notes(self, info: Ctx, query: str, limit: int = 10) -> list[NoteType]:
        validation.search_query(query)
        validation.limit(limit)
        notes = await readable_search(info.context, query, limit=limit)
        return notes  # type: ignore[return-value]

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
        context = info.context
        subject = subject_of(context)
        if author != subject:
            raise AppError(
                ErrorCode.FORBIDDEN,
                "author must be the caller's own user id.",
                extensions={"field": "author", "constraint": "caller"},
            )
        if not await is_authorized(context, Resource(NOTE), Action.CREATE):
            raise AppError(ErrorCode.FORBIDDEN, "You may not create notes.")
        note = await _create(context, title=title, content=content, author=author)
        await _publish(context, NoteEvent(EventKind.CREATED, note.id, note))
        return note  # type: ignore[return-value]

    @strawberry.mutation
    async def update_note(self, info: Ctx, id: strawberry.ID, input: UpdateNoteInput) -> NoteType:
        note_id = validation.note_id(str(id))
        if input.title is None and input.content is None:
            raise validation.invalid("input", "required", "Give a title, a content or both.")
        title = validation.title(input.title) if input.title is not None else None
        content = validation.content(input.content) if input.content is not None else None
        await require(info.context, note_id, Action.UPDATE)
        note = await info.context.store.update(note_id, title=title, content=content)
        if note is None:
            raise AppError(ErrorCode.NOT_FOUND, f"Note {note_id} does not exist.")
        await _publish(info.context, NoteEvent(EventKind.UPDATED, note.id, note))
        return note  # type: ignore[return-value]

    @strawberry.mutation
    async def delete_note(self, info: Ctx, id: strawberry.ID) -> bool:
        note_id = validation.note_id(str(id))
        context = info.context
        await require(context, note_id, Action.DELETE)
        deletion = await context.store.delete(note_id)
        if not deletion.found:
            raise AppError(ErrorCode.NOT_FOUND, f"Note {note_id} does not exist.")
        authorizer = context.services.authorizer
        readers: tuple[str, ...] | None = deletion.readers
        if not filters_in_store(context):
            await authorizer.delete(note_id)
            readers = None  # SpiceDB held them; see docs/api.md
        else:
            authorizer.invalidate(Resource.note(note_id))
        await _publish(context, NoteEvent(EventKind.DELETED, note_id, readers=readers))
        return True

    @strawberry.mutation
    async def share_note(self, info: Ctx, id: strawberry.ID, user: str, role: ShareRole) -> bool:
        note_id = validation.note_id(str(id))
        user = validation.author(user, field="user")
        context = info.context
        await require(context, note_id, Action.SHARE)
        await context.services.authorizer.share(note_id, user, Role(role.value))
        return True

    @strawberry.mutation
    async def unshare_note(self, info: Ctx, id: strawberry.ID, user: str) -> bool:
        note_id = validation.note_id(str(id))
        user = validation.author(user, field="user")
        context = info.context
        await require(context, note_id, Action.SHARE)
        await context.services.authorizer.unshare(note_id, user)
        return True


@asynccontextmanager
async def _subscription_slot(context: GraphQLContext) -> AsyncIterator[None]:
    """Count the subscription against the instance and per-client limits while it lives."""
    settings = context.services.settings.graphql
    counter = context.services.subscriptions
    client = context.client_id
    if counter.total >= settings.max_subscriptions:
        raise AppError(
            ErrorCode.SERVICE_UNAVAILABLE,
            "This instance has no room for more subscriptions; subscribe again later.",
        )
    if counter.per_client.get(client, 0) >= settings.max_subscriptions_per_client:
        raise AppError(
            ErrorCode.RATE_LIMITED,
            f"At most {settings.max_subscriptions_per_client} subscriptions may be open at once "
            "per client; end one first.",
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


async def _events(context: GraphQLContext, wants: Wants) -> AsyncGenerator[NoteEvent, None]:
    """The events ``wants`` takes that the caller may read (``graphql.feed``), until the client
    leaves, nothing happens for the idle timeout, or the caller's token expires (then the
    subscription ends with UNAUTHORIZED: a socket must not outlive the credentials it was opened
    with). A client too slow to read them is dropped with SUBSCRIBER_TOO_SLOW."""
    subject = subject_of(context)
    idle = context.services.settings.graphql.subscription_idle_timeout_seconds
    expires_at = context.identity.expires_at if context.identity is not None else None
    await context.services.rate_limiter.spend(context.client_id, {Budget.SUBSCRIPTION: 1})
    feed = context.services.feed
    async with _subscription_slot(context), feed.subscribe_as(subject, wants) as events:
        iterator = aiter(events)
        while True:
            # Decided before waiting: the loop's timer can fire a little early (uvloop counts
            # whole milliseconds), so asking the clock after the wait could take expiry for
            # idleness and end the subscription without its UNAUTHORIZED error.
            token_left = None if expires_at is None else expires_at - time.time()
            token_ends_first = token_left is not None and token_left <= idle
            wait = token_left if token_left is not None and token_ends_first else idle
            try:
                async with asyncio.timeout(max(wait, 0)):
                    event = await anext(iterator)
            except StopAsyncIteration:
                if events.dropped:
                    raise subscriber_too_slow(feed.queue_size, feed.queue_bytes) from None
                if events.interruption is not None:
                    raise events_unavailable() from None
                return
            except TimeoutError:
                if token_ends_first:
                    raise AppError(
                        ErrorCode.UNAUTHORIZED, "The token has expired; subscribe with a new one."
                    ) from None
                return
            yield event


def subscriber_too_slow(queue_size: int, queue_bytes: int) -> AppError:
    """Ends a subscription whose client let its queue overflow: the events it missed are gone,
    so it should subscribe again and refetch what it shows."""
    return AppError(
        ErrorCode.SUBSCRIBER_TOO_SLOW,
        f"This subscription fell more than {queue_size} events or {queue_bytes} bytes behind "
        "and was ended; subscribe again.",
    )


def events_unavailable() -> AppError:
    """Ends a subscription whose events stopped arriving (the events server was lost): the
    client should subscribe again, and refetch what it shows, since events were missed."""
    return AppError(
        ErrorCode.SERVICE_UNAVAILABLE,
        "Note events are unavailable on this instance; subscribe again.",
        extensions={"reason": "EVENTS_UNAVAILABLE"},
    )


def _created(event: NoteEvent) -> bool:
    return event.kind is EventKind.CREATED


def _deleted(event: NoteEvent) -> bool:
    return event.kind is EventKind.DELETED


def _updated(wanted: str | None) -> Wants:
    def wants(event: NoteEvent) -> bool:
        return event.kind is EventKind.UPDATED and (wanted is None or event.note_id == wanted)

    return wants


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def note_created(self, info: Ctx) -> AsyncGenerator[NoteType, None]:
        async for event in _events(info.context, _created):
            yield event.note  # type: ignore[misc]

    @strawberry.subscription
    async def note_updated(
        self, info: Ctx, id: strawberry.ID | None = None
    ) -> AsyncGenerator[NoteType, None]:
        wanted = validation.note_id(str(id)) if id is not None else None
        async for event in _events(info.context, _updated(wanted)):
            yield event.note  # type: ignore[misc]

    @strawberry.subscription
    async def note_deleted(self, info: Ctx) -> AsyncGenerator[str, None]:
        async for event in _events(info.context, _deleted):
            yield event.note_id


class _Schema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        """Strawberry logs every error with its traceback (over the WebSocket): an AppError is
        an answer whose code says what happened (an expired token, events unavailable to every
        subscriber at once), not a fault, so only the others are logged."""
        faults = [error for error in errors if not isinstance(error.original_error, AppError)]
        super().process_errors(faults, execution_context)


def build_schema(**kwargs: Any) -> strawberry.Schema:
    schema = _Schema(query=Query, mutation=Mutation, subscription=Subscription, **kwargs)
    read_plain_fields_directly(graphql_core_schema(schema))
    return schema


def read_plain_fields_directly(schema: GraphQLSchema) -> None:
    """Fields without a resolver of their own (``Note.title``, ``NoteEdge.node``, …) read the
    attribute in one call.

    Strawberry resolves such a field through its wrapper, ``StrawberryField.get_result`` and
    then ``getattr``, for every note of a page. Only fields Strawberry itself resolves by plain
    attribute (see ``compat.strawberry.plain_attribute``) are changed."""
    for graphql_type in schema.type_map.values():
        if not isinstance(graphql_type, GraphQLObjectType):
            continue
        for field in graphql_type.fields.values():
            name = plain_attribute(field)
            if name is not None:
                field.resolve = _attribute(name)


def _attribute(name: str) -> Callable[[Any, Any], Any]:
    read = attrgetter(name)

    def resolve(source: Any, _info: Any) -> Any:
        return read(source)

    return resolve
