"""``is_authorized``: the check every resolver makes before it touches a note, with its audit line.

A note the caller may not read answers exactly like a note that does not exist (``note`` is
null, mutations say NOT_FOUND), so ids cannot be probed. A caller who may read a note but not
change it gets FORBIDDEN: it can see the note anyway, so nothing leaks.

Lists show only what the caller may read. With the local backend the store filters in the
same SELECT (one round trip, exact totals). With SpiceDB, notes are scanned newest first in
chunks and each chunk is checked in bulk; the total needs the whole scan, so a list costs one
bulk check per ``SCAN_CHUNK`` notes in the collection (cached decisions are free).

Keyset pages (``first``/``after``, ``last``/``before``) are read the same way: with the local
backend one SELECT filtered by the reader; with SpiceDB chunks in keyset order from the cursor,
each checked in bulk, until the page is full and one more readable note shows whether there is
a next page, at most ``WINDOW_SCAN_CHUNKS`` chunks (then the page may be short and its end
cursor is where the scan stopped). The total is only computed when asked for.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass
from typing import Any

from strawberry.dataloader import DataLoader

from pcf_api.auth.authorizer import Authorizer, Decision
from pcf_api.auth.policy import NOTE, Action, Relation, Resource, relations_granting
from pcf_api.errors import AppError, ErrorCode
from pcf_api.graphql.context import GraphQLContext
from pcf_api.observability.logging import audit_log
from pcf_api.observability.tracing import optional_span
from pcf_api.store.models import EventKind, Note, NoteEvent
from pcf_api.store.notes import Key, NotePage

SCAN_CHUNK = 500
SEARCH_SCAN_LIMIT = 1000
WINDOW_SCAN_CHUNKS = 20  # SpiceDB: at most this many chunks are checked for one keyset page


def subject_of(context: GraphQLContext) -> str:
    """The caller's user id; UNAUTHORIZED when the request carries no identity (only schema
    questions may be asked without one)."""
    if context.identity is None:
        raise AppError(ErrorCode.UNAUTHORIZED, "Authentication is required.")
    return context.identity.subject


async def is_authorized(context: GraphQLContext, resource: Resource, action: Action) -> bool:
    """Whether the caller may do ``action`` on ``resource``; logs the decision."""
    subject = subject_of(context)
    with _span(context, "authorize", action=action.value, resource_type=resource.type) as span:
        decision = await context.services.authorizer.check(subject, resource, action)
        if span is not None:
            span.set_attribute("authz.decision", "allow" if decision.allowed else "deny")
            span.set_attribute("authz.from_cache", decision.from_cache)
    _log(decision)
    return decision.allowed


def _span(context: GraphQLContext, name: str, **attributes: Any) -> AbstractContextManager[Any]:
    """A span for an authorization check, when tracing is on (subjects are not recorded)."""
    return optional_span(context.services.tracing, name, "authz", attributes)


async def may_read(context: GraphQLContext, note_id: str) -> bool:
    """Whether the caller may read the note; the checks of one request are batched, so a query
    naming many notes by id costs one backend call (like the notes themselves, one SELECT)."""
    loader = context.read_loader
    if loader is None:
        subject = subject_of(context)

        async def decide(note_ids: list[str]) -> list[bool]:
            resources = [Resource.note(note_id) for note_id in note_ids]
            with _span(context, "authorize", action="read", resources=len(resources)):
                decisions = await context.services.authorizer.filter(
                    subject, resources, Action.READ
                )
            for decision in decisions:
                _log(decision)
            allowed = {decision.resource.id for decision in decisions if decision.allowed}
            return [note_id in allowed for note_id in note_ids]

        loader = context.read_loader = DataLoader(load_fn=decide)
    return await loader.load(note_id)


def forbidden_message(action: Action, note_id: str) -> str:
    """What was refused and who may do it, from the policy's table."""
    who = " and ".join(_HOLDERS[relation] for relation in relations_granting(action))
    return f"You may not {action.value} note {note_id}: only {who} may."


_HOLDERS = {
    Relation.OWNER: "its owner",
    Relation.WRITER: "its writers",
    Relation.READER: "its readers",
}


async def may_receive(
    authorizer: Authorizer,
    event: NoteEvent,
    subjects: set[str],
    *,
    budget: AbstractAsyncContextManager[Any] | None = None,
) -> set[str]:
    """Who among ``subjects`` may receive ``event``: one decision per user for the note, made
    in one bulk call for all of them (``Authorizer.audience``, ``budget`` held around it). A
    deletion carries who could read the note; when it does not (SpiceDB has forgotten the note
    already), every subscriber is told its id."""
    if event.kind is EventKind.DELETED:
        return subjects if event.readers is None else subjects & set(event.readers)
    if event.note is None:
        return set()
    decisions = await authorizer.audience(
        Resource.note(event.note_id), subjects, Action.READ, budget=budget
    )
    for decision in decisions:
        _log(decision)
    return {decision.subject for decision in decisions if decision.allowed}


async def require(context: GraphQLContext, note_id: str, action: Action) -> None:
    """Allowed, or FORBIDDEN when the caller can at least read the note, else NOT_FOUND."""
    resource = Resource.note(note_id)
    if await is_authorized(context, resource, action):
        return
    if action is not Action.READ and await is_authorized(context, resource, Action.READ):
        raise AppError(ErrorCode.FORBIDDEN, forbidden_message(action, note_id))
    raise AppError(ErrorCode.NOT_FOUND, f"Note {note_id} does not exist.")


async def readable_page(
    context: GraphQLContext, *, limit: int, offset: int, author: str | None = None
) -> NotePage:
    """The page of notes the caller may read, and how many they may read in all."""
    subject = subject_of(context)
    store = context.store
    if filters_in_store(context):
        page = await store.page(limit=limit, offset=offset, author=author, reader=subject)
        _log_list(context, subject, shown=len(page.notes))
        return page

    async def chunk(position: int) -> NotePage:
        return await store.page(limit=SCAN_CHUNK, offset=position, author=author)

    return await _scan(context, subject, chunk, limit=limit, offset=offset)


async def readable_search(context: GraphQLContext, text: str, *, limit: int) -> list[Note]:
    """Search results the caller may read. With SpiceDB, the newest ``SEARCH_SCAN_LIMIT``
    matches are checked, so an older readable match may be missed."""
    subject = subject_of(context)
    store = context.store
    if filters_in_store(context):
        notes = await store.search(text, limit=limit, reader=subject)
        _log_list(context, subject, shown=len(notes))
        return notes
    candidates = await store.search(text, limit=SEARCH_SCAN_LIMIT)
    return (await _readable(context, subject, candidates))[:limit]


@dataclass(frozen=True, slots=True)
class Listing:
    """A keyset page of notes the caller may read (newest first) and its page info."""

    notes: list[Note]
    has_next: bool
    has_previous: bool
    total: int | None
    resume: Key | None = None
    """SpiceDB only: the scan stopped at its bound before the page was full; the next page
    continues from this key (the end of a forward page, the start of a backward one)."""


async def readable_window(
    context: GraphQLContext,
    *,
    count: int,
    after: Key | None,
    before: Key | None,
    backward: bool,
    author: str | None = None,
    total: bool = False,
) -> Listing:
    """Up to ``count`` readable notes past ``after`` and before ``before``: the newest of them,
    or going ``backward`` the oldest; whether readable notes lie on either side, exactly."""
    subject = subject_of(context)
    store = context.store
    if filters_in_store(context):
        window = await store.window(
            count=count,
            after=after,
            before=before,
            backward=backward,
            author=author,
            reader=subject,
            total=total,
        )
        _log_list(context, subject, shown=len(window.notes))
        beyond_start, beyond_end = window.above, window.below
        if backward:
            return Listing(window.notes, beyond_end, window.more or beyond_start, window.total)
        return Listing(window.notes, window.more or beyond_end, beyond_start, window.total)

    shown, more, resume = await _scan_window(
        context, subject, count=count, after=after, before=before, backward=backward, author=author
    )
    newer = after is not None and await _any_readable(
        context, subject, after, newer=True, author=author
    )
    older = before is not None and await _any_readable(
        context, subject, before, newer=False, author=author
    )
    counted = None
    if total:

        async def chunk(position: int) -> NotePage:
            return await store.page(limit=SCAN_CHUNK, offset=position, author=author)

        counted = (await _scan(context, subject, chunk, limit=0, offset=0)).total
    if backward:
        return Listing(shown, older, more or newer, counted, resume)
    return Listing(shown, more or older, newer, counted, resume)


async def _scan_window(
    context: GraphQLContext,
    subject: str,
    *,
    count: int,
    after: Key | None,
    before: Key | None,
    backward: bool,
    author: str | None,
) -> tuple[list[Note], bool, Key | None]:
    """SpiceDB: the readable notes of a keyset page, whether another readable one follows in
    the direction of travel, and where the scan stopped if its bound cut it short."""
    found: list[Note] = []  # in the order of travel
    for _ in range(WINDOW_SCAN_CHUNKS):
        chunk = await context.store.window(
            count=SCAN_CHUNK, after=after, before=before, backward=backward, author=author
        )
        travelled = chunk.notes[::-1] if backward else chunk.notes
        for note in await _readable(context, subject, travelled):
            if len(found) == count:
                return _in_list_order(found, backward), True, None
            found.append(note)
        if not chunk.more:
            return _in_list_order(found, backward), False, None
        if backward:
            before = Key.of(travelled[-1])
        else:
            after = Key.of(travelled[-1])
    resume = None if len(found) == count else (before if backward else after)
    return _in_list_order(found, backward), True, resume


def _in_list_order(notes: list[Note], backward: bool) -> list[Note]:
    return notes[::-1] if backward else notes


async def _any_readable(
    context: GraphQLContext, subject: str, bound: Key, *, newer: bool, author: str | None
) -> bool:
    """SpiceDB: whether a readable note lies at ``bound`` or past it (newer, or older), looking
    at most ``WINDOW_SCAN_CHUNKS`` chunks far (past that it answers yes: a next page that turns
    out empty costs a client one request, a missed one loses notes)."""
    at_bound, _ = await context.store.get_many([bound.id])
    note = at_bound.get(bound.id)
    if (
        note is not None
        and (author is None or note.author == author)
        and await _readable(context, subject, [note])
    ):
        return True
    position = bound
    for _ in range(WINDOW_SCAN_CHUNKS):
        chunk = await context.store.window(
            count=SCAN_CHUNK,
            after=None if newer else position,
            before=position if newer else None,
            backward=newer,
            author=author,
        )
        if await _readable(context, subject, chunk.notes):
            return True
        if not chunk.more:
            return False
        position = Key.of(chunk.notes[0] if newer else chunk.notes[-1])
    return True


def filters_in_store(context: GraphQLContext) -> bool:
    """The local backend's relationships live in the notes database: the store can join them."""
    return context.services.authorizer.backend.name == "local"


async def _scan(
    context: GraphQLContext,
    subject: str,
    chunk: Callable[[int], Awaitable[NotePage]],
    *,
    limit: int,
    offset: int,
) -> NotePage:
    shown: list[Note] = []
    readable = 0
    position = 0
    while True:
        page = await chunk(position)
        for note in await _readable(context, subject, page.notes):
            if offset <= readable < offset + limit:
                shown.append(note)
            readable += 1
        position += len(page.notes)
        if not page.notes or position >= page.total:
            return NotePage(shown, readable)


async def _readable(context: GraphQLContext, subject: str, notes: list[Note]) -> list[Note]:
    if not notes:
        return []
    decisions = await context.services.authorizer.filter(
        subject, [Resource.note(note.id) for note in notes], Action.READ
    )
    allowed = {decision.resource.id for decision in decisions if decision.allowed}
    for decision in decisions:
        _log(decision)
    return [note for note in notes if note.id in allowed]


def _log(decision: Decision) -> None:
    audit_log.write(logging.INFO, decision.log_fields())


def _log_list(context: GraphQLContext, subject: str, *, shown: int) -> None:
    """One line for a list filtered in the store: the decision is the filter itself."""
    audit_log.write(
        logging.INFO,
        {
            "subject": subject,
            "resource": NOTE,
            "action": Action.READ.value,
            "decision": "filter",
            "backend": context.services.authorizer.backend.name,
            "from_cache": False,
            "shown": shown,
        },
    )
